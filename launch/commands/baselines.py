"""`gencond bench throughput|scaling|accuracy|budget`: ours against the pixel baselines; hooked
into the bench group (launch/commands/bench.py) by `add_baseline_benches`. The options are the
config dataclasses' (benchmarks/config.py); heavy modules load in the handlers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.cli_options import from_args, option, positive

GIB = 1 << 30


@dataclass
class ArrayOptions:
    """`bench accuracy --cluster ...`: each point one job array element."""

    cluster: str | None = option(
        None,
        "slurm | local | debug: each (method, dataset, IPC) point one job array element, merged "
        "here (default: run the points here one after the other)",
    )
    partition: str | None = option(None, "SLURM partition (with --cluster slurm)")
    time_min: int = option(
        120, "minutes per point's job (default: 120)", flag="--time", type=positive
    )


def add_baseline_benches(bench, add_bench) -> None:
    """Add the throughput, scaling, accuracy and budget parsers to the `bench` subparsers with
    bench.py's `add_bench`; an accuracy job array's elements run args.entry (launch.cli.main,
    set by the dispatcher)."""
    from benchmarks import config as c

    add_bench(
        bench,
        "throughput",
        (c.ThroughputConfig,),
        run_throughput,
        "result JSON (default: benchmarks/results/throughput_<device>.json)",
        help="ours vs DM / DSA / MTT / TESLA: parameters, bytes, step and sweep time, memory",
        description="One condensation step of ours and of each pixel baseline at the CIFAR-10 "
        "(32 px, 10 classes), Tiny-ImageNet (64 px, 200) and ImageNet-1K (64 px, 1000) shapes, "
        "each point in its own child process: learnable parameters, bytes of the condensed "
        "result, time per step and per sweep over all classes, images/s, peak memory, and "
        "baseline/ours ratios. Writes benchmarks/results/throughput_<device>.json and .md.",
    )
    add_bench(
        bench,
        "scaling",
        (c.ScalingConfig,),
        run_scaling,
        "result JSON (default: benchmarks/results/scaling_<device>.json)",
        help="parameters, memory and step time against classes and resolution",
        description="Ours and the pixel baselines at 10 ... 10000 classes (generated data) and "
        "32 / 64 / 128 px, one IPC, each point measured as in `bench throughput`. Writes "
        "benchmarks/results/scaling_<device>.json, .md and a .png plot.",
    )
    add_bench(
        bench,
        "accuracy",
        (c.AccuracyConfig, ArrayOptions),
        run_accuracy,
        "result JSON (default: benchmarks/results/accuracy_<device>.json)",
        help="test accuracy of DM / DSA / MTT / random / herding sets (and ours) vs published",
        description="Condense each (method, dataset, IPC) point with the baseline's preset, "
        "train --seeds fresh ConvNets on it with the engine's evaluation harness, and tabulate "
        "the test accuracy next to the papers' published numbers. Ours comes from a RUN's "
        "eval.json (--ours). Writes benchmarks/results/accuracy_<device>.json and .md.",
    )
    add_bench(
        bench,
        "budget",
        (c.BudgetConfig,),
        run_budget,
        "result JSON (see above)",
        help="accuracy against wall-clock: ours (pretraining counted), DM, DSA, MTT",
        description="Each method runs alone from zero on one prepared dataset (ours: the "
        "smoke preset with its pretraining; MTT: its experts counted) and its set is "
        "snapshotted when the clock passes each mark; every snapshot, random real and herding "
        "are trained on with the eval.* protocol over --set eval.seeds seeds. Snapshots and "
        "accuracies are saved as they come; a rerun skips them. Writes JSON, markdown and a "
        "PNG plot (default: benchmarks/results/budget_<dataset>_ipc<K>_<device>.json). "
        "To keep two cores busy, run two condense phases side by side, each pinned to its "
        "own core (taskset -c N, OMP_NUM_THREADS=1), then two evaluate shards.",
    )


def run_budget(args) -> int:
    from benchmarks.budget_bench import BudgetConfig, run
    from common.console import log
    from launch.tables import show_rows

    payload = run(from_args(BudgetConfig, args), args.out, log=log)
    rows = [
        {
            "method": r["method"],
            "minutes": r["mark_min"],
            "at s": r["elapsed_s"],
            "accuracy %": r["mean"],
            "std": r["std"],
            "seeds": r["seeds"],
        }
        for r in payload["summary"]
    ]
    show_rows(f"Accuracy against wall-clock ({payload['device']})", rows)
    return 0


def _fits(row: dict) -> str:
    return {True: "yes", False: "no", None: "?"}[row.get("fits")]


def run_throughput(args) -> int:
    from benchmarks.throughput_bench import ThroughputConfig, run
    from launch.tables import show_rows

    result = run(from_args(ThroughputConfig, args), args.out)
    rows = [
        {
            "shape": r["shape"],
            "ipc": r["ipc"],
            "method": r["method"],
            "params": r["params"],
            "MiB": (r["bytes"] or 0) / (1 << 20),
            "step s": r["step_s"],
            "sweep s": r["sweep_s"],
            "img/s": r["images_per_s"],
            "peak GiB": (r["peak_mem_bytes"] or 0) / GIB,
            "params x": r.get("params_vs_ours"),
            "mem x": r.get("peak_mem_bytes_vs_ours"),
            "sweep x": r.get("sweep_s_vs_ours"),
            "fits": _fits(r),
        }
        for r in result["rows"]
    ]
    show_rows(f"Throughput on {result['machine']} (ratios: baseline / ours)", rows)
    return 0


def run_scaling(args) -> int:
    from benchmarks.scaling_bench import ScalingConfig, run
    from launch.tables import show_rows

    cfg = from_args(ScalingConfig, args)
    result = run(cfg, args.out)
    rows = [
        {
            "px": r["image_size"],
            "classes": r["classes"],
            "method": r["method"],
            "params": r["params"],
            "peak GiB": (r["peak_mem_bytes"] or 0) / GIB,
            "step s": r["step_s"],
            "sweep s": r["sweep_s"],
            "fits": _fits(r),
        }
        for r in result["rows"]
    ]
    show_rows(f"Scaling on {result['machine']} (IPC {cfg.ipc})", rows)
    return 0


def run_accuracy(args) -> int:
    from benchmarks.accuracy_bench import AccuracyConfig, run
    from launch.tables import show_rows

    cfg = from_args(AccuracyConfig, args)
    jobs = from_args(ArrayOptions, args)
    result = _accuracy_array(cfg, jobs, args) if jobs.cluster else run(cfg, args.out)
    rows = [
        {
            "dataset": r["dataset"],
            "ipc": r["ipc"],
            "method": r["method"],
            "measured %": r["mean"],
            "std": r["std"],
            "seeds": r["seeds"],
            "published %": r["published"] if r["published"] is not None else "-",
        }
        for r in result["rows"]
    ]
    show_rows(f"Accuracy on {result['machine']} ({cfg.budget} budget)", rows)
    return 0


def _accuracy_array(cfg, jobs: ArrayOptions, args) -> dict:
    """Each point a job array element (`gencond bench accuracy --only P --out PART`) through
    launch.submit's executors; the parts are merged into one result file here."""
    import time

    from benchmarks.accuracy_bench import all_points, merge_parts, point_name
    from common.cli_options import to_argv
    from launch import submit
    from launch.tasks import CommandTask

    began = time.perf_counter()
    opts = submit.SubmitOptions(**submit.load_defaults(jobs.cluster))
    opts.cluster, opts.time_min, opts.job_name = jobs.cluster, jobs.time_min, "gencond-accuracy"
    opts.partition = jobs.partition or opts.partition
    opts.log_dir = str(Path(cfg.workdir) / "jobs")
    parts_dir = Path(cfg.workdir) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    shared = ("datasets", "seeds", "eval_epochs", "eval_width", "net_width", "budget", "device")
    common = ["bench", "accuracy", *to_argv(cfg, *shared, "workdir")]
    tasks, parts = [], []
    for dataset, ipc, method in all_points(cfg):
        part = parts_dir / f"{method}_{dataset}_ipc{ipc}.json"
        parts.append(part)
        only = ["--only", point_name(dataset, ipc, method), "--out", part]
        tasks.append(CommandTask([*common, "--ipcs", ipc, "--methods", method, *only], args.entry))
    jobs = submit.submit_array(submit.executor(opts), tasks)
    submit.wait(jobs)
    submit.check_results(jobs)
    return merge_parts(cfg, parts, args.out, time.perf_counter() - began)
