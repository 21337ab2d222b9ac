"""The `gencond` command: parses options, calls data_prep / engine / benchmarks, shows tables."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from rich.markup import escape

from data_prep.console import console
from data_prep.errors import GencondError

SOURCES_HELP = """\
dataset ids and the --source each expects (files as their publishers ship them):
  mnist, fashion-mnist  folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
                        (or torchvision's <root>/MNIST/raw, <root>/FashionMNIST/raw)
  cifar10, cifar100     folder holding cifar-10-batches-py / cifar-100-python (or that folder)
  svhn                  folder with train_32x32.mat and test_32x32.mat
  imagefolder           folder with train/<class>/<images> and val/<class>/ or test/<class>/;
                        classes in sorted order; JPEG/PNG; resized to --image-size
  tiny-imagenet         the tiny-imagenet-200 tree (wnids.txt, words.txt, train/<wnid>/images,
                        val/images + val/val_annotations.txt), or its .zip
  imagenet64            folder with train_data_batch_{1..10}.npz and val_data.npz
                        (Downsampled ImageNet 64x64; data (N, 12288) uint8, labels 1..1000)

output: DIR/train.beton, DIR/test.beton, DIR/train_class_index.npy and DIR/meta.json (written
last: a folder without meta.json is incomplete and every loader refuses it)."""


PREEMPTED_EXIT = 3  # stopped on SIGTERM / SIGUSR2 after checkpointing; run again to resume


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_prep(sub) -> None:
    from data_prep.options import DATASETS, default_workers

    p = sub.add_parser(
        "prep",
        help="convert a raw dataset to FFCV betons + meta.json",
        description="Convert a raw dataset to FFCV betons and meta.json.",
        epilog=SOURCES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help=f"dataset id: {', '.join(DATASETS)}")
    p.add_argument("--source", required=True, type=Path, help="the raw files (see below)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        help="processes for decoding and writing (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        help="imagefolder / tiny-imagenet: resize images to this side "
        "(default: the first image's height)",
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="imagefolder / tiny-imagenet: keep only these class folders or wnids (labels "
        "follow their sorted order), e.g. a 10-class subset (default: every class)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace a dataset already prepared in --out"
    )
    p.set_defaults(handler=_run_prep)


def _run_prep(args) -> int:
    from data_prep.errors import ConfigError
    from data_prep.options import PrepOptions
    from data_prep.prepare import prepare
    from engine.tables import show_pairs

    classes = None
    if args.classes is not None:
        classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
        if not classes:
            raise ConfigError("--classes: no class names given")
        if args.dataset not in ("imagefolder", "tiny-imagenet"):
            raise ConfigError(f"--classes applies to imagefolder and tiny-imagenet, "
                              f"not {args.dataset}")  # fmt: skip
    options = PrepOptions(workers=args.workers, image_size=args.image_size, force=args.force,
                          classes=classes)  # fmt: skip
    meta = prepare(args.dataset, args.source, args.out, options)
    show_pairs(
        f"Prepared {meta.dataset} in {args.out}",
        [
            ("classes", meta.num_classes),
            ("image", f"{meta.image_size}x{meta.image_size}x{meta.channels}"),
            ("train images", meta.train_count),
            ("test images", meta.test_count),
            (
                "images per class (train)",
                f"{min(meta.train_class_counts)}..{max(meta.train_class_counts)}",
            ),  # fmt: skip
            ("mean", " ".join(f"{m:.4f}" for m in meta.mean)),
            ("std", " ".join(f"{s:.4f}" for s in meta.std)),
            ("sources", len(meta.sources)),
        ],
    )
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="check a prepared folder with a pass of every loader; optional image grid",
        description="Run one epoch of the random loader, some class-grouped steps and the "
        "sequential test loader over a prepared folder, check them against meta.json, and "
        "optionally write a PNG grid of real images (rows: classes).",
    )
    p.add_argument("data", type=Path, help="a folder written by `gencond prep`")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=256,
        help="images per batch of the random and test loaders (default: %(default)s)",
    )
    p.add_argument("--grid", type=Path, default=None, help="write a PNG grid of real images here")
    p.set_defaults(handler=_run_inspect)


def _run_inspect(args) -> int:
    from data_prep.inspect import class_grid, loader_pass
    from engine.tables import show_rows

    rows = loader_pass(args.data, args.device, args.batch_size)
    if args.grid:
        class_grid(args.data, args.grid)
    show_rows(f"Loader pass over {args.data}", rows)
    if args.grid:
        console.print(f"grid of real images: {args.grid}")
    return 0


def _generated_shape(b) -> None:
    """--classes and --image-size of the generated data a benchmark runs on."""
    b.add_argument("--classes", type=_positive, default=1000,
                   help="classes of the generated data (default: %(default)s)")  # fmt: skip
    b.add_argument("--image-size", type=_positive, default=64,
                   help="side of the generated square images (default: %(default)s)")  # fmt: skip


def _add_bench(sub) -> None:
    from data_prep.options import default_workers as default_threads

    p = sub.add_parser(
        "bench", help="benchmarks (results under benchmarks/results/)", description="Benchmarks."
    )
    names = "throughput|scaling|accuracy|calibrate|loader|prep|classes|peak|profile|speed"
    bench = p.add_subparsers(dest="bench", required=True, metavar=f"<{names}>")
    from launch.bench_baselines import add_baseline_benches

    add_baseline_benches(bench, _positive, job_entry())  # throughput, scaling, accuracy
    b = bench.add_parser(
        "loader",
        help="images/s of the FFCV loaders vs a plain torch DataLoader",
        description="Images/s of the FFCV random and class-grouped loaders on generated "
        "ImageNet-64-shaped data, against a plain torch DataLoader over the same uint8 array, "
        "each ending in a normalised float batch on --device. Writes JSON with machine info.",
    )
    b.add_argument(
        "--images",
        type=_positive,
        default=200_000,
        help="generated training images (default: %(default)s)",
    )
    _generated_shape(b)
    b.add_argument(
        "--batch-size",
        type=_positive,
        default=256,
        help="images per batch of each loader (default: %(default)s)",
    )
    b.add_argument(
        "--classes-per-step",
        type=_positive,
        default=100,
        help="class-grouped loader: classes per step (default: %(default)s)",
    )
    b.add_argument(
        "--n-per-class",
        type=_positive,
        default=32,
        help="class-grouped loader: real images per class per step (default: %(default)s)",
    )
    b.add_argument("--steps", type=_positive, default=100, help="class-grouped steps timed")
    b.add_argument(
        "--threads",
        type=_positive,
        default=default_threads(),
        help="FFCV threads = DataLoader workers (default: %(default)s)",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument(
        "--workdir",
        default="/tmp/gencond-bench-loader",
        help="where the generated beton is kept between runs (default: %(default)s)",
    )
    b.add_argument(
        "--out", type=Path, default=None, help="result JSON (default: benchmarks/results/)"
    )
    b.set_defaults(handler=_run_bench_loader)

    b = bench.add_parser(
        "prep",
        help="time and peak memory of `gencond prep imagenet64` on generated npz batches",
        description="Write generated ImageNet-64 npz batches in the real format, convert them "
        "with `gencond prep imagenet64` in a child process, and record wall time and the peak "
        "anonymous memory of its whole process tree. Writes JSON with machine info.",
    )
    b.add_argument(
        "--batches",
        type=_positive,
        nargs="+",
        default=[2, 4],
        help="train npz batches; one conversion per value (default: 2 4)",
    )
    b.add_argument(
        "--images-per-batch",
        type=_positive,
        default=50_000,
        help="images in each generated train npz batch (default: %(default)s)",
    )
    b.add_argument(
        "--val-images",
        type=_positive,
        default=10_000,
        help="images in the generated val_data.npz (default: %(default)s)",
    )
    b.add_argument(
        "--workers",
        type=_positive,
        default=default_threads(),
        help="`prep --workers` of the timed conversion (default: %(default)s)",
    )
    b.add_argument("--workdir", default="/tmp/gencond-bench-prep", help="scratch (removed after)")
    b.add_argument("--out", type=Path, default=None, help="result JSON")
    b.set_defaults(handler=_run_bench_prep)

    b = bench.add_parser(
        "classes",
        help="condensation step time and memory against the total number of classes",
        description="Generated 64 px datasets with several class counts, the same classes per "
        "step: median step time, images per step, class-dependent parameters and peak RSS of "
        "`gencond condense` (small widths, CPU). Writes JSON with machine info.",
    )
    b.add_argument("--classes", type=_positive, nargs="+", default=[100, 1000, 2000],
                   help="class counts, one run each (default: 100 1000 2000)")  # fmt: skip
    b.add_argument(
        "--classes-per-step",
        type=_positive,
        default=10,
        help="condense.classes_per_step of every run (default: 10)",
    )
    b.add_argument("--steps", type=_positive, default=40, help="steps per run (default: 40)")
    b.add_argument(
        "--workdir",
        default="/tmp/gencond-bench-classes",
        help="scratch folder for the generated datasets",
    )
    b.add_argument("--out", type=Path, default=None, help="result JSON")
    b.set_defaults(handler=_run_bench_classes)
    _add_bench_speed(bench)

    b = bench.add_parser(
        "calibrate",
        help="random-real and herding coresets under our protocol beside the paper's Table 2",
        description="Train fresh ConvNets on random-real and herding coresets with the "
        "evaluation protocol every command uses (eval.* keys; the field's single-op DSA by "
        "default) and set them beside the paper's Table 2. Each finished run is saved at once; "
        "a rerun skips it. Writes JSON and a markdown table.",
    )
    b.add_argument("--data", action="append", required=True, metavar="NAME=DIR",
                   help="a prepared dataset, e.g. mnist=data/mnist (repeatable)")  # fmt: skip
    b.add_argument("--ipcs", default="1,10", help="comma list of IPCs (default: %(default)s)")
    b.add_argument(
        "--sets",
        default="random,herding",
        help="comma list of coresets to train on: random (random real images), "
        "herding (herding in the feature net's embedding) (default: %(default)s)",
    )
    b.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an eval.* key of the protocol, e.g. eval.seeds=5 (repeatable)",
    )
    b.add_argument(
        "--redraw-random",
        action="store_true",
        help="train seed s on random draw s (DC's random rows average over draws) instead of "
        "one draw for every seed",
    )
    b.add_argument(
        "--teacher-epochs",
        type=_positive,
        default=2,
        help="epochs of the ConvNet whose features herding uses (default: 2)",
    )
    b.add_argument(
        "--teacher-width",
        type=_positive,
        default=128,
        help="ConvNet width of the net whose features herding uses (default: 128)",
    )
    b.add_argument(
        "--workdir",
        default="runs/calibration",
        help="where the herding feature nets are cached (default: %(default)s)",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: benchmarks/results/protocol_calibration_cpu.json)",
    )
    b.set_defaults(handler=_run_bench_calibrate)


def _run_bench_calibrate(args) -> int:
    from benchmarks.protocol_calibration import CalibrationConfig, run
    from data_prep.errors import ConfigError
    from engine.config import RunConfig, TeacherConfig
    from engine.tables import show_rows

    holder = RunConfig()
    for item in args.overrides:
        if not item.startswith("eval."):
            raise ConfigError(f"bench calibrate --set {item}: only eval.* keys apply here")
        holder.override(item)
    holder.eval.check()
    datasets = {}
    for item in args.data:
        name, sep, folder = item.partition("=")
        if not sep:
            raise ConfigError(f"--data {item!r}: expected NAME=DIR")
        datasets[name.strip()] = folder.strip()
    cfg = CalibrationConfig(
        datasets=datasets, ipcs=tuple(int(v) for v in args.ipcs.split(",")),
        sets=tuple(v.strip() for v in args.sets.split(",")), eval=holder.eval,
        teacher=TeacherConfig(width=args.teacher_width, epochs=args.teacher_epochs),
        workdir=args.workdir, device=args.device, redraw_random=args.redraw_random,
    )  # fmt: skip
    payload = run(cfg, args.out)
    show_rows("Protocol calibration: test accuracy (%) beside the paper's Table 2",
              payload["summary"])  # fmt: skip
    return 0


def _add_bench_speed(bench) -> None:
    """Issue 7: peak FLOP/s, profile and speed switches of the condensation step."""
    b = bench.add_parser(
        "peak",
        help="measured peak FLOP/s of the device (the MFU denominator)",
        description="Median time of a large random square matrix product in fp32 and bf16 "
        "(and tf32 on CUDA), CUDA events after warm-up (perf_counter on the CPU). Writes JSON.",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument("--size", type=int, default=0, help="n of n x n x n (0: 8192 CUDA, 2048 CPU)")
    b.add_argument("--repeats", type=int, default=0, help="timed products (0: 50 CUDA, 5 CPU)")
    b.add_argument("--out", type=Path, default=None, help="result JSON")
    b.set_defaults(handler=_run_bench_peak)
    for name, helptext in (
        ("profile", "torch.profiler over a few condensation steps: top ops, time per part, "
                    "achieved FLOP/s against the cost model"),
        ("speed", "step time of each speed switch (bf16, channels_last, compile, fused SGD) "
                  "against the reference step"),
    ):  # fmt: skip
        b = bench.add_parser(name, help=helptext, description=helptext + ". Generated tensors "
                             "of the preset's shape; writes JSON with machine info.")  # fmt: skip
        b.add_argument(
            "--preset",
            default="imagenet64-ipc10",
            help="preset whose condensation step is measured (default: %(default)s)",
        )
        b.add_argument(
            "--channels",
            type=_positive,
            default=3,
            help="image channels of the generated tensors (default: %(default)s)",
        )
        _generated_shape(b)
        b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override on the preset (repeatable)")  # fmt: skip
        b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
        b.add_argument("--out", type=Path, default=None, help="result JSON")
        if name == "profile":
            b.add_argument("--steps", type=_positive, default=2, help="profiled steps")
            b.add_argument("--timed", type=_positive, default=3, help="unprofiled timed steps")
            b.add_argument("--peak-tflops", type=float, default=0.0, help="MFU denominator")
            b.set_defaults(handler=_run_bench_profile)
        else:
            b.add_argument(
                "--variants",
                nargs="+",
                default=None,
                help="speed switches to time, e.g. bf16 compile (default: all)",
            )
            b.add_argument(
                "--repeats",
                type=_positive,
                default=5,
                help="timed steps per variant; the median is reported (default: 5)",
            )
            b.add_argument("--warmup", type=_positive, default=2,
                           help="untimed steps per variant before timing (compilation, caches; "
                           "default: 2)")  # fmt: skip
            b.add_argument("--peak-json", default="", help="`bench peak` result, for MFU")
            b.set_defaults(handler=_run_bench_speed)


def _run_bench_peak(args) -> int:
    from benchmarks.peak import PeakConfig, run
    from engine.tables import show_rows

    result = run(PeakConfig(size=args.size, repeats=args.repeats, device=args.device), args.out)
    show_rows(f"Peak FLOP/s on {result['machine']} ({args.device})", result["rows"])
    return 0


def _run_bench_profile(args) -> int:
    from benchmarks.profile_bench import ProfileConfig, run
    from engine.tables import show_rows

    cfg = ProfileConfig(preset=args.preset, channels=args.channels, image_size=args.image_size,
                        num_classes=args.classes, overrides=args.set, steps=args.steps,
                        timed=args.timed, device=args.device,
                        peak_tflops=args.peak_tflops)  # fmt: skip
    result = run(cfg, args.out)
    show_rows(f"Step parts on {result['machine']} ({args.device})", result["rows"])
    return 0


def _run_bench_speed(args) -> int:
    from benchmarks.speed_bench import VARIANTS, SpeedConfig, run
    from engine.tables import show_rows

    cfg = SpeedConfig(preset=args.preset, channels=args.channels, image_size=args.image_size,
                      num_classes=args.classes, overrides=args.set, device=args.device,
                      variants=tuple(args.variants or VARIANTS), repeats=args.repeats,
                      warmup=args.warmup, peak_json=args.peak_json)  # fmt: skip
    result = run(cfg, args.out)
    keys = ("variant", "step_s", "speedup", "tflops", "mfu", "peak_mem_bytes")
    show_rows(f"Speed switches on {result['machine']} ({args.device})",
              [{k: r[k] for k in keys} for r in result["rows"]])  # fmt: skip
    return 0


def _run_bench_loader(args) -> int:
    from benchmarks.loader_bench import LoaderBenchConfig, run
    from engine.tables import show_rows

    cfg = LoaderBenchConfig(
        images=args.images,
        classes=args.classes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        classes_per_step=args.classes_per_step,
        n_per_class=args.n_per_class,
        grouped_steps=args.steps,
        threads=args.threads,
        device=args.device,
        workdir=args.workdir,
    )
    result = run(cfg, args.out)
    show_rows(f"Loader throughput on {result['machine']} ({cfg.device})", result["rows"])
    return 0


def _run_bench_classes(args) -> int:
    from benchmarks.class_scaling_bench import ClassScalingConfig, run
    from engine.tables import show_rows

    cfg = ClassScalingConfig(classes=tuple(args.classes), classes_per_step=args.classes_per_step,
                             steps=args.steps, workdir=args.workdir)  # fmt: skip
    result = run(cfg, args.out)
    show_rows(f"Condensation steps against classes on {result['machine']}", result["rows"])
    return 0


def _run_bench_prep(args) -> int:
    from benchmarks.prep_bench import PrepBenchConfig, run
    from engine.tables import show_rows

    cfg = PrepBenchConfig(
        batches=tuple(args.batches),
        images_per_batch=args.images_per_batch,
        val_images=args.val_images,
        workers=args.workers,
        workdir=args.workdir,
    )
    result = run(cfg, args.out)
    gib = 1 << 30
    rows = [
        {"npz batches": r["npz_batches"], "images": r["images"], "seconds": r["seconds"],
         "images/s": r["images_per_s"], "raw GiB": r["raw_bytes"] / gib,
         "peak anon GiB (all processes)": r["peak_anon_bytes"] / gib,
         "processes": r["peak_processes"]}
        for r in result["rows"]
    ]  # fmt: skip
    show_rows(f"gencond prep imagenet64 on {result['machine']}", rows)
    idle = result["idle_process_anon_bytes"] / gib
    console.print(f"one idle process after imports: {idle:.2f} GiB anonymous memory")
    return 0


SET_HELP = (
    "override a config value: key=value; keys every preset honours: ipc, seed, max_steps "
    "(stop after this many generator updates), device (cpu|cuda); sections: teacher.*, gan.*, "
    "condense.*, eval.* (docs/config_reference.md); repeatable"
)
PRETRAIN_SET_HELP = (
    "override a config value: key=value; the pretrain stage reads seed, device and the "
    "teacher.* and gan.* sections (docs/config_reference.md); ipc, max_steps and condense.* "
    "are accepted but ignored here; repeatable"
)
MISMATCH_HELP = (
    "use the data / pretrain stage even though the run or stage records another one (by "
    "default that is refused: meta.json's source sha256 and the stage's sha256 must match)"
)
CONDENSE_EPILOG = """\
resuming: the run writes RUN/checkpoint.pt every condense.checkpoint_every steps and when it is
stopped by SIGTERM or SIGUSR2 (SLURM's --signal before a time limit). Running the same command
again (same --out, preset and --set values; max_steps and device may change) resumes from it
and ends with the same result as an uninterrupted run. max_steps below the checkpoint's step
is refused.

exit status: 0 done; 2 refused or failed (one `error:` line says why; --debug or
GENCOND_DEBUG=1 for the full trace); 3 stopped by SIGTERM / SIGUSR2 after writing the
checkpoint: run the same command again to resume; 130 interrupted (Ctrl-C).

one writer per RUN folder: a second condense / synthesize / evaluate on it is refused with
the holder's pid and host (a lock a killed process held is released by the kernel)."""


def _add_run_options(p, out_help: str, set_help: str = SET_HELP) -> None:
    p.add_argument("--preset", required=True, help="e.g. fashion-mnist-ipc10, fashion-mnist-smoke")
    p.add_argument("--data", required=True, type=Path, help="a folder written by `gencond prep`")
    p.add_argument("--out", required=True, type=Path, help=out_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=set_help)  # fmt: skip


def _config(args):
    from engine.presets import load_preset_for

    return load_preset_for(args.preset, args.overrides, args.data)


def _add_method(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="teacher, class embeddings and GAN-pretrained generator (once per dataset)",
        description="The per-dataset stage reused by every IPC, seed and ablation: train the "
        "teacher ConvNet, take class embeddings from it, and pretrain the class-conditional "
        "GAN. Writes PRE/pretrained.pt and PRE/pretrain.json.",
    )
    _add_run_options(p, "output folder PRE", PRETRAIN_SET_HELP)
    p.set_defaults(handler=_run_pretrain)

    p = sub.add_parser(
        "condense",
        help="learn the codebook and fine-tune the generator (Algorithm 1)",
        description="Condense a prepared dataset into a codebook + class-conditional generator. "
        "Without --pretrained the pretrain stage runs first into RUN/pretrained (and is reused "
        "if it is there). Writes RUN/condensed.pt and RUN/metrics.jsonl.",
        epilog=CONDENSE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(p, "output folder RUN")
    p.add_argument("--pretrained", type=Path, default=None, help="a PRE folder from `pretrain`")
    p.add_argument("--allow-mismatch", action="store_true", help=MISMATCH_HELP)
    p.set_defaults(handler=_run_condense)

    p = sub.add_parser(
        "synthesize",
        help="condensed artifact -> synthetic set (tensors, beton, grid PNG)",
        description="Write RUN/synthetic/: images.pt (float32, normalised with the dataset's "
        "mean/std), labels.pt (int64, class-major), train.beton (uint8) and grid.png "
        "(rows: classes, columns: the IPC images).",
    )
    p.add_argument("run", type=Path, help="a RUN folder from `condense`")
    p.set_defaults(handler=_run_synthesize)

    p = sub.add_parser(
        "evaluate",
        help="train fresh nets on the condensed set and on baselines; RUN/eval.json",
        description="Train fresh networks on the condensed set and on random-real / herding "
        "coresets of the same IPC (DSA augmentation), N seeds, final-epoch test accuracy; plus "
        "the plain pretrained generator's samples and the within/between-class diversity.",
    )
    p.add_argument("run", type=Path, help="a RUN folder from `condense`")
    p.add_argument("--data", required=True, type=Path, help="the prepared dataset it came from")
    p.add_argument("--models", default=None,
                   help="comma list of convnet,alexnet,vgg11,resnet18,mlp (default: the run's "
                   "eval.models)")  # fmt: skip
    p.add_argument("--seeds", type=_positive, default=None,
                   help="training seeds per set (default: the run's eval.seeds)")  # fmt: skip
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of random (random real), herding, plain (the pretrained G's "
        "samples); '' for none (default: the run's eval.baselines)",
    )
    p.add_argument("--epochs", type=_positive, default=None,
                   help="training epochs per net (default: the run's eval.epochs)")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one eval.* key of the run's protocol, e.g. eval.dsa_mode=all "
                   "(repeatable; docs/config_reference.md)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--seed-index", type=int, default=None,
                   help="evaluate only seed I of --seeds N into RUN/eval_parts/seed_I.json "
                   "(one element of a job array)")  # fmt: skip
    p.add_argument(
        "--gather",
        action="store_true",
        help="merge RUN/eval_parts/seed_{0..N-1}.json into RUN/eval.json and show it",
    )
    p.add_argument("--allow-mismatch", action="store_true", help=MISMATCH_HELP)
    p.set_defaults(handler=_run_evaluate)


def _run_pretrain(args) -> int:
    cfg = _config(args)  # a bad preset, key or dataset fails before torch and ffcv load
    from data_prep.console import is_rank_zero
    from engine import distributed
    from engine.distributed import hold_on_rank0
    from engine.stages import run_pretrain
    from engine.tables import show_pairs

    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        with hold_on_rank0(args.out, "pretrain"):
            summary = run_pretrain(cfg, args.data, args.out)
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        show_pairs(f"Pretrained {args.preset} in {args.out}", list(summary.items()))
    return 0


def _run_condense(args) -> int:
    cfg = _config(args)  # a bad preset, key or dataset fails before torch and ffcv load
    from data_prep.console import is_rank_zero
    from engine import distributed
    from engine.distributed import hold_on_rank0
    from engine.stages import run_condense
    from engine.tables import show_pairs

    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        from data_prep.meta import load_meta
        from engine.preflight import check_condense

        check_condense(cfg, load_meta(args.data), env.world_size)  # before --out is created
        with hold_on_rank0(args.out, "condense"):
            summary = run_condense(cfg, args.data, args.out, args.pretrained, env,
                                   args.allow_mismatch)  # fmt: skip
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        diagnostics = summary.pop("diagnostics", None)
        show_pairs(f"Condensed {args.preset} into {args.out}", list(summary.items()))
        if diagnostics:
            _show_condense_diagnostics(diagnostics)
    return 0


def _show_condense_diagnostics(d: dict) -> None:
    from engine.tables import show_pairs, show_rows

    terms = [{**r, "chance": "-" if r["chance"] is None else r["chance"],
              "per_phi": "-" if r.get("per_phi") is None else r["per_phi"]}
             for r in d["terms"]]  # fmt: skip
    show_rows("Loss terms (first: first tenth of the log; last half: mean of the second; "
              "per phi: mean change within one outer iteration)", terms)  # fmt: skip
    s = d["spread"]
    labels = {"within_class": "within-class distance", "between_class": "between-class distance",
              "closest_pair": "closest class pair"}  # fmt: skip
    pairs = [
        (text, f"{s.get(key, float('nan')):.4g} (real {s.get(key + '_real', float('nan')):.4g})")
        for key, text in labels.items()
    ]
    if "pixels" in d:
        px = d["pixels"]
        pairs.append(("pixels at the top / bottom of the range",
                      f"{px['top']:.1%} / {px['bottom']:.1%} (real {px['top_real']:.1%} / "
                      f"{px['bottom_real']:.1%})"))  # fmt: skip
    if "teacher_agreement" in d:
        pairs.append(("teacher agrees with the label", f"{d['teacher_agreement']:.1%}"))
    show_pairs("Synthetic set in teacher features (real: random real images, same IPC)", pairs)
    for line in d["warnings"]:
        console.print(f"[bold yellow]warning:[/] {line}")


def _require_condensed(run: Path) -> None:
    """A missing artifact fails before torch and ffcv load."""
    from engine import artifact

    artifact.require(run / artifact.CONDENSED_FILE, artifact.CONDENSED_WHAT)


def _run_synthesize(args) -> int:
    _require_condensed(args.run)
    from data_prep.runlock import hold
    from engine.stages import run_synthesize
    from engine.tables import show_pairs

    with hold(args.run, "synthesize"):
        summary = run_synthesize(args.run)
    show_pairs(f"Synthetic set of {args.run}", list(summary.items()))
    return 0


def _run_evaluate(args) -> int:
    _require_condensed(args.run)
    from data_prep.console import is_rank_zero
    from data_prep.runlock import hold, run_lock_path
    from engine import distributed
    from engine.config import RunConfig
    from engine.distributed import hold_on_rank0
    from engine.stages import load_condensed, run_evaluate

    cfg = RunConfig.from_dict(load_condensed(args.run)["config"])
    if args.gather:
        from engine.stages import gather_evaluation

        with hold(args.run, "evaluate --gather"):
            report = gather_evaluation(args.run, args.seeds or cfg.eval.seeds)
        _show_evaluation(report)
        return 0
    eval_cfg = eval_config(cfg, args)
    lock = None  # one job-array element per seed: each locks its own part file
    if args.seed_index is not None:
        lock = run_lock_path(args.run, f".gencond-eval-seed-{args.seed_index}.lock")
    distributed.init(args.device, cfg.collective_timeout_s)
    try:
        with hold_on_rank0(args.run, "evaluate", lock):
            report = run_evaluate(args.run, args.data, eval_cfg, args.device, args.seed_index,
                                  allow_mismatch=args.allow_mismatch)  # fmt: skip
    finally:
        distributed.teardown()
    if is_rank_zero():
        _show_evaluation(report)
    return 0


def eval_config(cfg, args):
    """The run's evaluation protocol (cfg.eval) with this command's flags and --set eval.*."""
    from data_prep.errors import ConfigError

    for item in args.overrides:
        if not item.strip().startswith("eval."):
            raise ConfigError(f"evaluate --set {item}: only eval.* keys apply here")
        cfg.override(item)
    e = cfg.eval
    for name in ("models", "baselines"):
        text = getattr(args, name)
        if text is not None:
            setattr(e, name, tuple(t.strip() for t in text.split(",") if t.strip()))
    e.seeds, e.epochs = args.seeds or e.seeds, args.epochs or e.epochs
    e.check()
    return e


def _show_evaluation(report: dict) -> None:
    from engine.evaluate import summarize
    from engine.tables import show_rows

    div = report["diagnostics"]["diversity_teacher_features"]
    rows = summarize(report["results"])
    for row in rows:
        d = div.get(row["set"], {})
        row["within/between"] = d.get("ratio", float("nan"))
    show_rows(f"IPC {report['ipc']}, {report['epochs']} epochs: test accuracy (%)", rows)
    ratio = div.get("condensed", {}).get("ratio")
    if ratio is not None and ratio < 0.05:
        console.print(
            f"[bold yellow]warning:[/] the condensed images of a class are nearly identical "
            f"(within/between-class distance {ratio:.3f}): the generator ignores its code"
        )


SUBMITTABLE = ("condense", "evaluate", "sweep", "bench")


def _add_submit(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="run condense / evaluate / a sweep / a benchmark as SLURM jobs (submitit)",
        description="Submit a gencond command as a job: --cluster slurm (sbatch), local (a "
        "subprocess here) or debug (in this process). One task per GPU; a multi-task job is "
        "one torch.distributed world. `evaluate` becomes a job array over seeds plus a gather "
        "job; `sweep` a job array over a grid of presets / --set values. Defaults per cluster "
        "come from a TOML file ([slurm] partition=..., account=..., ...).",
        epilog="examples:\n"
        "  gencond submit --partition gpu --nodes 2 --gpus-per-node 8 --time 600 condense "
        "--preset imagenet64-ipc10 --data D --out RUN --set device=cuda\n"
        "  gencond submit --wait evaluate RUN --data D --seeds 20\n"
        "  gencond submit --wait sweep --preset fashion-mnist-ipc10 --data D --out SWEEP "
        "--grid seed=0,1,2 --grid condense.codebook=learned,fixed",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cluster", default=None, help="slurm | local | debug (default: slurm)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--nodes", type=_positive, default=None, help="nodes per job (default: 1)")
    p.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: 0)")
    p.add_argument("--tasks-per-node", type=int, default=None,
                   help="tasks per node (default: one per GPU, 1 without GPUs)")  # fmt: skip
    p.add_argument(
        "--cpus-per-task", type=_positive, default=None, help="CPU cores per task (default: 2)"
    )
    p.add_argument("--mem-gb", type=float, default=None, help="memory per node in GB")
    p.add_argument("--time", dest="time_min", type=_positive, default=None,
                   help="time limit in minutes (default: 60); SIGUSR2 comes --signal-delay-s "
                   "before it: the run checkpoints and requeues itself")  # fmt: skip
    p.add_argument(
        "--signal-delay-s",
        type=_positive,
        default=None,
        help="seconds before the time limit that SIGUSR2 comes (default: 120)",
    )
    p.add_argument("--account", default=None, help="SLURM account")
    p.add_argument("--qos", default=None, help="SLURM QoS")
    p.add_argument("--array-parallelism", type=_positive, default=None,
                   help="array elements running at once (default: 64)")  # fmt: skip
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH parameter, e.g. --sbatch constraint=a100 (repeatable)",
    )
    p.add_argument("--log-dir", default=None, help="job logs (default: gencond-jobs/<job id>)")
    p.add_argument("--defaults", type=Path, default=None,
                   help="cluster defaults TOML (default: $GENCOND_CLUSTER_DEFAULTS or "
                   "~/.config/gencond/clusters.toml)")  # fmt: skip
    p.add_argument(
        "--wait", action="store_true", help="show live job states; exit non-zero if a job failed"
    )
    p.add_argument(
        "--print-sbatch",
        action="store_true",
        help="print the sbatch script these options give and exit",
    )
    p.add_argument("what", choices=SUBMITTABLE, metavar="<condense|evaluate|sweep|bench>")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="that command's own options")
    p.set_defaults(handler=_run_submit)

    p = sub.add_parser(
        "sweep",
        help="condense + evaluate every point of a grid here, one after the other",
        description="Every point of the grid (Cartesian product of --grid key=v1,v2,...; keys: "
        "preset or any --set key) is condensed into OUT/<point> and evaluated; OUT/sweep.json "
        "and a table gather the results. A rerun skips each finished condensation and "
        "evaluation seed (and refuses a point whose config changed under it). `gencond submit "
        "sweep` runs the points as a job array.",
    )
    _add_sweep_options(p)
    p.set_defaults(handler=_run_sweep_here)

    p = sub.add_parser("slurm-local", help="a single-node SLURM on this machine (root)",
                       description="Install (apt) and start munge, slurmctld and slurmd on this "
                       "machine if they are not running; `stop` stops only what `start` "
                       "started; `status` shows the daemons and sinfo.")  # fmt: skip
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(handler=_run_slurm_local)


def _add_sweep_options(p) -> None:
    p.add_argument("--preset", required=True, help="preset of every point (unless in --grid)")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--out", required=True, type=Path, help="sweep folder: OUT/<point>/")
    p.add_argument("--pretrained", type=Path, default=None, help="a PRE folder to reuse")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one axis of the grid (repeatable), e.g. seed=0,1,2 ipc=1,10",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed override of every point (repeatable)")  # fmt: skip
    p.add_argument(
        "--variants",
        type=Path,
        default=None,
        metavar="FILE",
        help='a TOML file of named variants, one [name] table of "key" = value overrides '
        "each (e.g. benchmarks/ablations/fashion-mnist-smoke.toml); they form the grid's first "
        "axis and name its points (OUT/variant-NAME...)",
    )
    p.add_argument(
        "--eval-seeds",
        type=_positive,
        default=None,
        help="evaluation seeds per point (default: the preset's eval.seeds)",
    )
    p.add_argument(
        "--eval-epochs",
        type=_positive,
        default=None,
        help="evaluation epochs (default: the preset's eval.epochs)",
    )
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of random, herding, plain (the pretrained G's samples); '' for "
        "none (default: the preset's eval.baselines)",
    )


def _sweep_plan(args):
    from engine.config import load_variants
    from launch.sweep import SweepPlan

    plan = SweepPlan(preset=args.preset, data=args.data, out=args.out, pretrained=args.pretrained,
                     grid=args.grid, overrides=args.overrides,
                     variants=load_variants(args.variants), eval_seeds=args.eval_seeds,
                     eval_epochs=args.eval_epochs, baselines=args.baselines)  # fmt: skip
    plan.check()
    return plan


def _show_sweep(payload: dict, title: str) -> None:
    from engine.tables import show_rows

    rows = [{k: v for k, v in r.items() if k != "point"} for r in payload["rows"]]
    show_rows(title, rows)


def _run_sweep_here(args) -> int:
    """Every point in turn: condense (skipped when finished), each evaluation seed (skipped
    when its part exists), gather; then OUT/sweep.json over the points."""
    from data_prep.console import log
    from launch.sweep import finished_condense, finished_seed, gather_sweep, point_name

    plan = _sweep_plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for point in plan.points:
        name, seeds = point_name(point), plan.config(point).eval.seeds
        if finished_condense(plan, point):
            log(f"{name}: condensed.pt is there, skipping its condensation")
        elif (code := main(plan.condense_argv(point))) != 0:
            return code
        todo = [i for i in range(seeds) if not finished_seed(plan, point, i)]
        if len(todo) < seeds:
            log(f"{name}: {seeds - len(todo)} of {seeds} evaluation seeds done, skipping them")
        for i in todo:
            if (code := main(plan.evaluate_argv(point, i))) != 0:
                return code
        gather = ["evaluate", str(plan.run_dir(point)), "--seeds", str(seeds), "--gather",
                  "--data", str(plan.data)]  # fmt: skip
        if (code := main(gather)) != 0:
            return code
    _show_sweep(gather_sweep(args.out, plan.points), f"Sweep {args.out}")
    return 0


def _submit_options(args):
    from launch.submit import SubmitOptions, load_defaults

    cluster = args.cluster or "slurm"
    values = load_defaults(cluster, args.defaults) if args.defaults else load_defaults(cluster)
    values["cluster"] = cluster
    for name in ("partition", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
                 "mem_gb", "time_min", "signal_delay_s", "account", "qos",
                 "array_parallelism", "log_dir"):  # fmt: skip
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    extra = dict(values.pop("sbatch", {}))
    for item in args.sbatch:
        if "=" not in item:
            from data_prep.errors import ConfigError

            raise ConfigError(f"--sbatch {item!r}: expected key=value")
        key, value = item.split("=", 1)
        extra[key.strip()] = value.strip()
    opts = SubmitOptions(**values, sbatch=extra)
    opts.check()
    return opts


def _run_submit(args) -> int:
    from engine.tables import show_pairs
    from launch import submit
    from launch.tasks import CommandTask, GatherSweepTask, SequenceTask, run_task

    opts = _submit_options(args)
    opts.job_name = f"gencond-{args.what}"
    if args.print_sbatch:
        print(submit.sbatch_script(opts))
        return 0
    rest = list(args.rest)
    # refuse bad options, presets and inputs here, before anything is queued
    if args.what == "sweep":
        sweep_args = argparse.ArgumentParser(prog="gencond submit sweep")
        _add_sweep_options(sweep_args)
        parsed = sweep_args.parse_args(rest)
        plan = _sweep_plan(parsed)
    else:
        parsed = build_parser().parse_args([args.what, *rest])
        if args.what == "condense":
            _config(parsed)
    ex = submit.executor(opts)
    entry = job_entry()
    after = []
    if args.what == "evaluate":
        from engine.config import RunConfig
        from engine.stages import load_condensed

        seeds = parsed.seeds or RunConfig.from_dict(load_condensed(parsed.run)["config"]).eval.seeds
        if "--seeds" not in rest:
            rest += ["--seeds", str(seeds)]
        elements = [
            CommandTask(["evaluate", *rest, "--seed-index", str(i)], entry) for i in range(seeds)
        ]
        jobs = ex.map_array(run_task, elements)
        gather = CommandTask(["evaluate", str(parsed.run), "--seeds", str(seeds), "--gather",
                              "--data", str(parsed.data)], entry)  # fmt: skip
        after = [gather]
    elif args.what == "sweep":
        parsed.out.mkdir(parents=True, exist_ok=True)
        (parsed.out / "sweep_points.json").write_text(json.dumps(plan.points, indent=1) + "\n")
        tasks = [SequenceTask([plan.condense_argv(p), plan.evaluate_argv(p)],
                              [plan.run_dir(p) / "condensed.pt", plan.run_dir(p) / "eval.json"],
                              entry)
                 for p in plan.points]  # fmt: skip
        jobs = ex.map_array(run_task, tasks)
        after = [GatherSweepTask(str(parsed.out))]
    else:
        jobs = [ex.submit(CommandTask([args.what, *rest], entry))]
    gather_jobs = []
    if after and opts.cluster == "slurm":  # runs when every array element succeeded
        array_id = str(jobs[0].job_id).split("_")[0]
        ex.update_parameters(
            nodes=1,
            tasks_per_node=1,
            slurm_additional_parameters={**opts.sbatch, "dependency": f"afterok:{array_id}"},
        )
        gather_jobs = [ex.submit(after[0])]
    for job in [*jobs, *gather_jobs]:
        show_pairs(f"Submitted {args.what} ({opts.cluster})", list(submit.paths(job).items()))
    if not args.wait and opts.cluster == "slurm":
        return 0
    states = submit.wait(jobs)
    try:
        submit.check_results(jobs)
    except submit.JobFailed:
        for job in gather_jobs:  # its afterok dependency can never be met now
            job.cancel(check=False)
        raise
    if after and not gather_jobs:
        after[0]()
    elif gather_jobs:
        states += submit.wait(gather_jobs)
        submit.check_results(gather_jobs)
    if args.what == "evaluate":
        _show_evaluation(json.loads((parsed.run / "eval.json").read_text()))
    elif args.what == "sweep":
        _show_sweep(json.loads((parsed.out / "sweep.json").read_text()), f"Sweep {parsed.out}")
    return 0 if all(s == "COMPLETED" for s in states) else 1


def _run_slurm_local(args) -> int:
    from engine.tables import show_pairs
    from launch import slurm_local

    result = getattr(slurm_local, args.action)()
    show_pairs(f"slurm-local {args.action}", [(k, str(v)) for k, v in result.items()])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gencond",
        description="Condense an image dataset into a codebook + class-conditional generator "
        "(Zhang et al., ICCV 2023). Start with `gencond prep`.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"on an error, print the full Python traceback after the one "
                        f"`error:` line (or set {DEBUG_ENV}=1)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _add_prep(sub)
    _add_method(sub)
    _add_inspect(sub)
    _add_bench(sub)
    _add_submit(sub)
    return parser


DEBUG_ENV = "GENCOND_DEBUG"


def _one_line(e: BaseException) -> tuple[str, int]:
    """(message, exit status) of an exception no gencond check turned into a GencondError."""
    from data_prep.fsio import disk_error

    mapped = disk_error(e, Path(getattr(e, "filename", None) or "?"))
    if mapped is not None:  # a full disk, permission denied, not a folder, ...
        return str(mapped), 2
    text = " ".join(str(e).split()) or "(no message)"
    name = type(e).__name__
    if len(text) > 400:
        text = text[:400] + " ..."
    if name == "FailedJobError" or _raised_in(e, "submitit"):  # e.g. no SLURM controller
        return f"submit: the job could not be submitted ({name}: {text})", 2
    if isinstance(e, FloatingPointError):
        return f"{text} (a learning rate or loss weight too large, or a NaN in --set?)", 2
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({name}: {text}); lower ipc or condense.classes_per_step", 2
    return f"{name}: {text} (unexpected: run with --debug or {DEBUG_ENV}=1 for the trace)", 1


def _raised_in(e: BaseException, package: str) -> bool:
    """Whether the exception was raised inside that package's code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def job_entry():
    """`main` under its importable name, for jobs. Run as `python -m launch.cli` it is
    `__main__.main`, which cloudpickle would pickle by value, console lock and all."""
    return importlib.import_module("launch.cli").main


def main(argv: list[str] | None = None) -> int:
    """Every failure ends as one `error:` line and a non-zero exit (2: refused or failed, 1:
    an unexpected error), the full traceback only with --debug or GENCOND_DEBUG=1."""
    from engine.checkpoint import Preempted

    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return args.handler(args)
    except Preempted as e:
        os.environ["GENCOND_STOP_SIGNAL"] = e.signal_name  # for a submitit task's requeue
        console.print(f"[bold yellow]stopped:[/] {escape(str(e))}", soft_wrap=True)
        return PREEMPTED_EXIT
    except GencondError as e:
        _error(str(e))
        if debug:
            console.print_exception()
        return 2
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    except Exception as e:  # noqa: BLE001  (the contract: one line, non-zero, no traceback)
        message, status = _one_line(e)
        _error(message)
        if debug:
            console.print_exception()
        return status


if __name__ == "__main__":
    sys.exit(main())
