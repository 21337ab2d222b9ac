"""`gencond bench ...`: every benchmark's options (declared on its config dataclass in
benchmarks/config.py); the work is in benchmarks/."""

from __future__ import annotations

from pathlib import Path

from common.cli_options import add_options, from_args
from common.console import console

NAMES = "throughput|scaling|accuracy|budget|recipe|calibrate|loader|prep|classes|peak|profile|speed"


def add_bench(bench, name: str, configs: tuple, handler, out_help: str, **texts):
    """One `bench NAME` parser: the options of the config dataclasses, then --out."""
    b = bench.add_parser(name, **texts)
    add_options(b, *configs)
    b.add_argument("--out", type=Path, default=None, help=out_help)
    b.set_defaults(handler=handler)
    return b


def add(sub) -> None:
    from benchmarks import config as c
    from launch.commands.baselines import add_baseline_benches

    p = sub.add_parser(
        "bench", help="benchmarks (results under benchmarks/results/)", description="Benchmarks."
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar=f"<{NAMES}>")
    add_baseline_benches(bench, add_bench)  # throughput, scaling, accuracy, budget
    add_bench(
        bench,
        "loader",
        (c.LoaderBenchConfig,),
        _run_bench_loader,
        "result JSON (default: benchmarks/results/)",
        help="images/s of the FFCV loaders vs a plain torch DataLoader",
        description="Images/s of the FFCV random and class-grouped loaders on generated "
        "ImageNet-64-shaped data, against a plain torch DataLoader over the same uint8 array, "
        "each ending in a normalised float batch on --device. Writes JSON with machine info.",
    )
    add_bench(
        bench,
        "prep",
        (c.PrepBenchConfig,),
        _run_bench_prep,
        "result JSON",
        help="time and peak memory of `gencond prep imagenet64` on generated npz batches",
        description="Write generated ImageNet-64 npz batches in the real format, convert them "
        "with `gencond prep imagenet64` in a child process, and record wall time and the peak "
        "anonymous memory of its whole process tree. Writes JSON with machine info.",
    )
    add_bench(
        bench,
        "classes",
        (c.ClassScalingConfig,),
        _run_bench_classes,
        "result JSON",
        help="condensation step time and memory against the total number of classes",
        description="Generated 64 px datasets with several class counts, the same classes per "
        "step: median step time, images per step, class-dependent parameters and peak RSS of "
        "`gencond condense` (small widths, CPU). Writes JSON with machine info.",
    )
    add_bench(
        bench,
        "peak",
        (c.PeakConfig,),
        _run_bench_peak,
        "result JSON",
        help="measured peak FLOP/s of the device (the MFU denominator)",
        description="Median time of a large random square matrix product in fp32 and bf16 "
        "(and tf32 on CUDA), CUDA events after warm-up (perf_counter on the CPU). Writes JSON.",
    )
    for name, cfg, handler, text in (
        (
            "profile",
            c.ProfileConfig,
            _run_bench_profile,
            "torch.profiler over a few condensation steps: top ops, time per part, "
            "achieved FLOP/s against the cost model",
        ),
        (
            "speed",
            c.SpeedConfig,
            _run_bench_speed,
            "step time of each speed switch (bf16, channels_last, compile, fused SGD) "
            "against the reference step",
        ),
    ):
        description = (
            f"{text}. Generated tensors of the preset's shape; writes JSON with machine info."
        )
        add_bench(bench, name, (cfg,), handler, "result JSON", help=text, description=description)
    add_bench(
        bench,
        "recipe",
        (c.RecipeBenchConfig,),
        _run_bench_recipe,
        "result JSON (default: benchmarks/results/recipe_<dataset>_ipc<K>_<device>.json)",
        help="a recipe's set beside the paper's preset, random real, herding and plain samples",
        description="Condense with --recipe and with the paper's preset (recipe paper) from one "
        "pretrain stage, evaluate each set and the coresets over --seeds seeds (with --ablate "
        "also the recipe minus each departure, --ablate-seeds each). Every run lives in "
        "--workdir: a rerun skips what is finished. Writes JSON with machine info, rewritten "
        "after each evaluated run.",
    )
    add_bench(
        bench,
        "calibrate",
        (c.CalibrationConfig,),
        _run_bench_calibrate,
        "result JSON (default: benchmarks/results/protocol_calibration_cpu.json)",
        help="random-real and herding coresets under our protocol beside the paper's Table 2",
        description="Train fresh ConvNets on random-real and herding coresets with the "
        "evaluation protocol every command uses (eval.* keys; the field's single-op DSA by "
        "default) and set them beside the paper's Table 2. Each finished run is saved at once; "
        "a rerun skips it. Writes JSON and a markdown table.",
    )


def _run_bench_recipe(args) -> int:
    from benchmarks.recipe_bench import RecipeBenchConfig, run
    from launch.tables import show_rows

    result = run(from_args(RecipeBenchConfig, args), args.out)
    rows = [{k: r[k] for k in ("set", "mean", "std", "seeds")} for r in result["rows"]]
    show_rows(
        f"{result['config']['recipe']} on {result['config']['preset']}: test accuracy (%)", rows
    )
    return 0


def _run_bench_calibrate(args) -> int:
    from benchmarks.protocol_calibration import CalibrationConfig, run
    from launch.tables import show_rows

    payload = run(from_args(CalibrationConfig, args), args.out)
    show_rows(
        "Protocol calibration: test accuracy (%) beside the paper's Table 2", payload["summary"]
    )
    return 0


def _run_bench_peak(args) -> int:
    from benchmarks.peak import PeakConfig, run
    from launch.tables import show_rows

    cfg = from_args(PeakConfig, args)
    result = run(cfg, args.out)
    show_rows(f"Peak FLOP/s on {result['machine']} ({cfg.device})", result["rows"])
    return 0


def _run_bench_profile(args) -> int:
    from benchmarks.profile_bench import ProfileConfig, run
    from launch.tables import show_rows

    cfg = from_args(ProfileConfig, args)
    result = run(cfg, args.out)
    show_rows(f"Step parts on {result['machine']} ({cfg.device})", result["rows"])
    return 0


def _run_bench_speed(args) -> int:
    from benchmarks.speed_bench import SpeedConfig, run
    from launch.tables import show_rows

    cfg = from_args(SpeedConfig, args)
    result = run(cfg, args.out)
    keys = ("variant", "step_s", "speedup", "tflops", "mfu", "peak_mem_bytes")
    show_rows(
        f"Speed switches on {result['machine']} ({cfg.device})",
        [{k: r[k] for k in keys} for r in result["rows"]],
    )
    return 0


def _run_bench_loader(args) -> int:
    from benchmarks.loader_bench import LoaderBenchConfig, run
    from launch.tables import show_rows

    cfg = from_args(LoaderBenchConfig, args)
    result = run(cfg, args.out)
    show_rows(f"Loader throughput on {result['machine']} ({cfg.device})", result["rows"])
    return 0


def _run_bench_classes(args) -> int:
    from benchmarks.class_scaling_bench import ClassScalingConfig, run
    from launch.tables import show_rows

    result = run(from_args(ClassScalingConfig, args), args.out)
    show_rows(f"Condensation steps against classes on {result['machine']}", result["rows"])
    return 0


def _run_bench_prep(args) -> int:
    from benchmarks.prep_bench import PrepBenchConfig, run
    from launch.tables import show_rows

    result = run(from_args(PrepBenchConfig, args), args.out)
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
