"""The `gencond` command: parses options, calls data_prep / engine / benchmarks, shows tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.markup import escape

from engine.console import console
from engine.errors import GencondError

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
        "--force", action="store_true", help="replace a dataset already prepared in --out"
    )
    p.set_defaults(handler=_run_prep)


def _run_prep(args) -> int:
    from data_prep.options import PrepOptions
    from data_prep.prepare import prepare
    from launch.tables import show_pairs

    options = PrepOptions(workers=args.workers, image_size=args.image_size, force=args.force)
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
    p.add_argument("--batch-size", type=_positive, default=256, help="(default: %(default)s)")
    p.add_argument("--grid", type=Path, default=None, help="write a PNG grid of real images here")
    p.set_defaults(handler=_run_inspect)


def _run_inspect(args) -> int:
    from data_prep.inspect import class_grid, loader_pass
    from launch.tables import show_rows

    rows = loader_pass(args.data, args.device, args.batch_size)
    if args.grid:
        class_grid(args.data, args.grid)
    show_rows(f"Loader pass over {args.data}", rows)
    if args.grid:
        console.print(f"grid of real images: {args.grid}")
    return 0


def _add_bench(sub) -> None:
    from data_prep.options import default_workers as default_threads

    p = sub.add_parser(
        "bench", help="benchmarks (results under benchmarks/results/)", description="Benchmarks."
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar="<loader|prep>")
    b = bench.add_parser(
        "loader",
        help="images/s of the FFCV loaders vs a plain torch DataLoader",
        description="Images/s of the FFCV random and class-grouped loaders on generated "
        "ImageNet-64-shaped data, against a plain torch DataLoader over the same uint8 array, "
        "each ending in a normalised float batch on --device. Writes JSON with machine info.",
    )
    b.add_argument("--images", type=_positive, default=200_000, help="(default: %(default)s)")
    b.add_argument("--classes", type=_positive, default=1000, help="(default: %(default)s)")
    b.add_argument("--image-size", type=_positive, default=64, help="(default: %(default)s)")
    b.add_argument("--batch-size", type=_positive, default=256, help="(default: %(default)s)")
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
        "--images-per-batch", type=_positive, default=50_000, help="(default: %(default)s)"
    )
    b.add_argument("--val-images", type=_positive, default=10_000, help="(default: %(default)s)")
    b.add_argument(
        "--workers", type=_positive, default=default_threads(), help="(default: %(default)s)"
    )
    b.add_argument("--workdir", default="/tmp/gencond-bench-prep", help="scratch (removed after)")
    b.add_argument("--out", type=Path, default=None, help="result JSON")
    b.set_defaults(handler=_run_bench_prep)


def _run_bench_loader(args) -> int:
    from benchmarks.loader_bench import LoaderBenchConfig, run
    from launch.tables import show_rows

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


def _run_bench_prep(args) -> int:
    from benchmarks.prep_bench import PrepBenchConfig, run
    from launch.tables import show_rows

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


def _add_run_options(p, out_help: str) -> None:
    p.add_argument("--preset", required=True, help="e.g. fashion-mnist-ipc10, fashion-mnist-smoke")
    p.add_argument("--data", required=True, type=Path, help="a folder written by `gencond prep`")
    p.add_argument("--out", required=True, type=Path, help=out_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=SET_HELP)  # fmt: skip


def _config(args):
    from data_prep.meta import load_meta
    from engine.errors import ConfigError
    from launch.presets import load_preset

    cfg = load_preset(args.preset, args.overrides)
    meta = load_meta(args.data)
    if cfg.dataset != meta.dataset:
        raise ConfigError(
            f"preset {args.preset} is for {cfg.dataset}, but {args.data} holds {meta.dataset}"
        )
    return cfg


def _add_method(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="teacher, class embeddings and GAN-pretrained generator (once per dataset)",
        description="The per-dataset stage reused by every IPC, seed and ablation: train the "
        "teacher ConvNet, take class embeddings from it, and pretrain the class-conditional "
        "GAN. Writes PRE/pretrained.pt and PRE/pretrain.json.",
    )
    _add_run_options(p, "output folder PRE")
    p.set_defaults(handler=_run_pretrain)

    p = sub.add_parser(
        "condense",
        help="learn the codebook and fine-tune the generator (Algorithm 1)",
        description="Condense a prepared dataset into a codebook + class-conditional generator. "
        "Without --pretrained the pretrain stage runs first into RUN/pretrained (and is reused "
        "if it is there). Writes RUN/condensed.pt and RUN/metrics.jsonl.",
    )
    _add_run_options(p, "output folder RUN")
    p.add_argument("--pretrained", type=Path, default=None, help="a PRE folder from `pretrain`")
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
    p.add_argument(
        "--models",
        default="convnet",
        help="comma list of convnet,alexnet,vgg11,resnet18,mlp (default: %(default)s)",
    )
    p.add_argument("--seeds", type=_positive, default=None, help="seeds (default: the preset's)")
    p.add_argument("--baselines", default="random,herding", help="(default: %(default)s)")
    p.add_argument("--epochs", type=_positive, default=None, help="(default: the preset's, 300)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.set_defaults(handler=_run_evaluate)


def _run_pretrain(args) -> int:
    from engine import distributed
    from engine.console import is_rank_zero
    from engine.stages import run_pretrain
    from launch.tables import show_pairs

    cfg = _config(args)
    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        summary = run_pretrain(cfg, args.data, args.out)
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        show_pairs(f"Pretrained {args.preset} in {args.out}", list(summary.items()))
    return 0


def _run_condense(args) -> int:
    from engine import distributed
    from engine.console import is_rank_zero
    from engine.stages import run_condense
    from launch.tables import show_pairs

    cfg = _config(args)
    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        summary = run_condense(cfg, args.data, args.out, args.pretrained, env)
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        show_pairs(f"Condensed {args.preset} into {args.out}", list(summary.items()))
    return 0


def _run_synthesize(args) -> int:
    from engine.stages import run_synthesize
    from launch.tables import show_pairs

    summary = run_synthesize(args.run)
    show_pairs(f"Synthetic set of {args.run}", list(summary.items()))
    return 0


def _run_evaluate(args) -> int:
    from engine.config import RunConfig
    from engine.evaluate import summarize
    from engine.stages import load_condensed, run_evaluate
    from launch.tables import show_rows

    cfg = RunConfig.from_dict(load_condensed(args.run)["config"])
    report = run_evaluate(
        args.run,
        args.data,
        tuple(m.strip() for m in args.models.split(",") if m.strip()),
        args.seeds or cfg.eval.seeds,
        tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
        args.epochs or cfg.eval.epochs,
        args.device,
    )
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gencond",
        description="Condense an image dataset into a codebook + class-conditional generator "
        "(Zhang et al., ICCV 2023). Start with `gencond prep`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _add_prep(sub)
    _add_method(sub)
    _add_inspect(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.checkpoint import Preempted

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except Preempted as e:
        console.print(f"[bold yellow]stopped:[/] {escape(str(e))}", soft_wrap=True)
        return PREEMPTED_EXIT
    except GencondError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
