"""`gencond bench ...`: every benchmark's options; the work is in benchmarks/."""

from __future__ import annotations

from pathlib import Path

from common.console import console
from launch.commands.common import positive


def _generated_shape(b) -> None:
    """--classes and --image-size of the generated data a benchmark runs on."""
    b.add_argument(
        "--classes",
        type=positive,
        default=1000,
        help="classes of the generated data (default: %(default)s)",
    )
    b.add_argument(
        "--image-size",
        type=positive,
        default=64,
        help="side of the generated square images (default: %(default)s)",
    )


def add(sub) -> None:
    from data_prep.options import default_workers as default_threads

    p = sub.add_parser(
        "bench", help="benchmarks (results under benchmarks/results/)", description="Benchmarks."
    )
    names = "throughput|scaling|accuracy|calibrate|loader|prep|classes|peak|profile|speed"
    bench = p.add_subparsers(dest="bench", required=True, metavar=f"<{names}>")
    from launch.commands.baselines import add_baseline_benches

    add_baseline_benches(bench, positive)  # throughput, scaling, accuracy
    b = bench.add_parser(
        "loader",
        help="images/s of the FFCV loaders vs a plain torch DataLoader",
        description="Images/s of the FFCV random and class-grouped loaders on generated "
        "ImageNet-64-shaped data, against a plain torch DataLoader over the same uint8 array, "
        "each ending in a normalised float batch on --device. Writes JSON with machine info.",
    )
    b.add_argument(
        "--images",
        type=positive,
        default=200_000,
        help="generated training images (default: %(default)s)",
    )
    _generated_shape(b)
    b.add_argument(
        "--batch-size",
        type=positive,
        default=256,
        help="images per batch of each loader (default: %(default)s)",
    )
    b.add_argument(
        "--classes-per-step",
        type=positive,
        default=100,
        help="class-grouped loader: classes per step (default: %(default)s)",
    )
    b.add_argument(
        "--n-per-class",
        type=positive,
        default=32,
        help="class-grouped loader: real images per class per step (default: %(default)s)",
    )
    b.add_argument("--steps", type=positive, default=100, help="class-grouped steps timed")
    b.add_argument(
        "--threads",
        type=positive,
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
        type=positive,
        nargs="+",
        default=[2, 4],
        help="train npz batches; one conversion per value (default: 2 4)",
    )
    b.add_argument(
        "--images-per-batch",
        type=positive,
        default=50_000,
        help="images in each generated train npz batch (default: %(default)s)",
    )
    b.add_argument(
        "--val-images",
        type=positive,
        default=10_000,
        help="images in the generated val_data.npz (default: %(default)s)",
    )
    b.add_argument(
        "--workers",
        type=positive,
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
    b.add_argument(
        "--classes",
        type=positive,
        nargs="+",
        default=[100, 1000, 2000],
        help="class counts, one run each (default: 100 1000 2000)",
    )
    b.add_argument(
        "--classes-per-step",
        type=positive,
        default=10,
        help="condense.classes_per_step of every run (default: 10)",
    )
    b.add_argument("--steps", type=positive, default=40, help="steps per run (default: 40)")
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
    b.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a prepared dataset, e.g. mnist=data/mnist (repeatable)",
    )
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
        type=positive,
        default=2,
        help="epochs of the ConvNet whose features herding uses (default: 2)",
    )
    b.add_argument(
        "--teacher-width",
        type=positive,
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
    from common.errors import ConfigError
    from engine.config import RunConfig, TeacherConfig
    from launch.tables import show_rows

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
        datasets=datasets,
        ipcs=tuple(int(v) for v in args.ipcs.split(",")),
        sets=tuple(v.strip() for v in args.sets.split(",")),
        eval=holder.eval,
        teacher=TeacherConfig(width=args.teacher_width, epochs=args.teacher_epochs),
        workdir=args.workdir,
        device=args.device,
        redraw_random=args.redraw_random,
    )
    payload = run(cfg, args.out)
    show_rows(
        "Protocol calibration: test accuracy (%) beside the paper's Table 2", payload["summary"]
    )
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
        (
            "profile",
            "torch.profiler over a few condensation steps: top ops, time per part, "
            "achieved FLOP/s against the cost model",
        ),
        (
            "speed",
            "step time of each speed switch (bf16, channels_last, compile, fused SGD) "
            "against the reference step",
        ),
    ):
        b = bench.add_parser(
            name,
            help=helptext,
            description=helptext + ". Generated tensors "
            "of the preset's shape; writes JSON with machine info.",
        )
        b.add_argument(
            "--preset",
            default="imagenet64-ipc10",
            help="preset whose condensation step is measured (default: %(default)s)",
        )
        b.add_argument(
            "--channels",
            type=positive,
            default=3,
            help="image channels of the generated tensors (default: %(default)s)",
        )
        _generated_shape(b)
        b.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override on the preset (repeatable)",
        )
        b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
        b.add_argument("--out", type=Path, default=None, help="result JSON")
        if name == "profile":
            b.add_argument("--steps", type=positive, default=2, help="profiled steps")
            b.add_argument("--timed", type=positive, default=3, help="unprofiled timed steps")
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
                type=positive,
                default=5,
                help="timed steps per variant; the median is reported (default: 5)",
            )
            b.add_argument(
                "--warmup",
                type=positive,
                default=2,
                help="untimed steps per variant before timing (compilation, caches; default: 2)",
            )
            b.add_argument("--peak-json", default="", help="`bench peak` result, for MFU")
            b.set_defaults(handler=_run_bench_speed)


def _run_bench_peak(args) -> int:
    from benchmarks.peak import PeakConfig, run
    from launch.tables import show_rows

    result = run(PeakConfig(size=args.size, repeats=args.repeats, device=args.device), args.out)
    show_rows(f"Peak FLOP/s on {result['machine']} ({args.device})", result["rows"])
    return 0


def _run_bench_profile(args) -> int:
    from benchmarks.profile_bench import ProfileConfig, run
    from launch.tables import show_rows

    cfg = ProfileConfig(
        preset=args.preset,
        channels=args.channels,
        image_size=args.image_size,
        num_classes=args.classes,
        overrides=args.set,
        steps=args.steps,
        timed=args.timed,
        device=args.device,
        peak_tflops=args.peak_tflops,
    )
    result = run(cfg, args.out)
    show_rows(f"Step parts on {result['machine']} ({args.device})", result["rows"])
    return 0


def _run_bench_speed(args) -> int:
    from benchmarks.speed_bench import VARIANTS, SpeedConfig, run
    from launch.tables import show_rows

    cfg = SpeedConfig(
        preset=args.preset,
        channels=args.channels,
        image_size=args.image_size,
        num_classes=args.classes,
        overrides=args.set,
        device=args.device,
        variants=tuple(args.variants or VARIANTS),
        repeats=args.repeats,
        warmup=args.warmup,
        peak_json=args.peak_json,
    )
    result = run(cfg, args.out)
    keys = ("variant", "step_s", "speedup", "tflops", "mfu", "peak_mem_bytes")
    show_rows(
        f"Speed switches on {result['machine']} ({args.device})",
        [{k: r[k] for k in keys} for r in result["rows"]],
    )
    return 0


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


def _run_bench_classes(args) -> int:
    from benchmarks.class_scaling_bench import ClassScalingConfig, run
    from launch.tables import show_rows

    cfg = ClassScalingConfig(
        classes=tuple(args.classes),
        classes_per_step=args.classes_per_step,
        steps=args.steps,
        workdir=args.workdir,
    )
    result = run(cfg, args.out)
    show_rows(f"Condensation steps against classes on {result['machine']}", result["rows"])
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
        {
            "npz batches": r["npz_batches"],
            "images": r["images"],
            "seconds": r["seconds"],
            "images/s": r["images_per_s"],
            "raw GiB": r["raw_bytes"] / gib,
            "peak anon GiB (all processes)": r["peak_anon_bytes"] / gib,
            "processes": r["peak_processes"],
        }
        for r in result["rows"]
    ]
    show_rows(f"gencond prep imagenet64 on {result['machine']}", rows)
    idle = result["idle_process_anon_bytes"] / gib
    console.print(f"one idle process after imports: {idle:.2f} GiB anonymous memory")
    return 0
