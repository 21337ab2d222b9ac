"""`gencond bench throughput|scaling|accuracy|budget`: ours against the pixel baselines; hooked
into the bench group (launch/commands/bench.py) by `add_baseline_benches`. Heavy modules load
in the handlers."""

from __future__ import annotations

from pathlib import Path

GIB = 1 << 30
MEM_LIMIT_HELP = (
    "a point needing more is reported as not fitting (default: this machine's RAM, "
    "or the GPU's memory with --device cuda)"
)
THROUGHPUT_METHODS = ("ours", "dm", "dsa", "mtt", "tesla")
THROUGHPUT_SHAPES = ("cifar10", "tiny-imagenet", "imagenet64")


def add_baseline_benches(bench, positive) -> None:
    """Add the throughput, scaling, accuracy and budget parsers to the `bench` subparsers; an
    accuracy job array's elements run args.entry (launch.cli.main, set by the dispatcher)."""
    b = bench.add_parser(
        "throughput",
        help="ours vs DM / DSA / MTT / TESLA: parameters, bytes, step and sweep time, memory",
        description="One condensation step of ours and of each pixel baseline at the CIFAR-10 "
        "(32 px, 10 classes), Tiny-ImageNet (64 px, 200) and ImageNet-1K (64 px, 1000) shapes, "
        "each point in its own child process: learnable parameters, bytes of the condensed "
        "result, time per step and per sweep over all classes, images/s, peak memory, and "
        "baseline/ours ratios. Writes benchmarks/results/throughput_<device>.json and .md.",
    )
    b.add_argument(
        "--shapes",
        nargs="+",
        default=list(THROUGHPUT_SHAPES),
        metavar="SHAPE",
        help=f"of {', '.join(THROUGHPUT_SHAPES)} (default: all)",
    )
    b.add_argument(
        "--ipcs",
        type=positive,
        nargs="+",
        default=[1, 10, 50],
        help="images per class (default: 1 10 50)",
    )
    _add_timing_options(b, positive)
    b.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: benchmarks/results/throughput_<device>.json)",
    )
    b.set_defaults(handler=run_throughput)

    b = bench.add_parser(
        "scaling",
        help="parameters, memory and step time against classes and resolution",
        description="Ours and the pixel baselines at 10 ... 10000 classes (generated data) and "
        "32 / 64 / 128 px, one IPC, each point measured as in `bench throughput`. Writes "
        "benchmarks/results/scaling_<device>.json, .md and a .png plot.",
    )
    b.add_argument(
        "--classes",
        type=positive,
        nargs="+",
        default=[10, 100, 1000, 10000],
        help="class counts (default: 10 100 1000 10000)",
    )
    b.add_argument(
        "--resolutions",
        type=positive,
        nargs="+",
        default=[32, 64, 128],
        help="image sizes in px (default: 32 64 128)",
    )
    b.add_argument("--ipc", type=positive, default=10, help="images per class (default: 10)")
    _add_timing_options(b, positive)
    b.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: benchmarks/results/scaling_<device>.json)",
    )
    b.set_defaults(handler=run_scaling)

    b = bench.add_parser(
        "accuracy",
        help="test accuracy of DM / DSA / MTT / random / herding sets (and ours) vs published",
        description="Condense each (method, dataset, IPC) point with the baseline's preset, "
        "train --seeds fresh ConvNets on it with the engine's evaluation harness, and tabulate "
        "the test accuracy next to the papers' published numbers. Ours comes from a RUN's "
        "eval.json (--ours). Writes benchmarks/results/accuracy_<device>.json and .md.",
    )
    b.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DATASET=DIR",
        help="prepared datasets (repeatable; default: mnist=/tmp/d/mnist "
        "fashion-mnist=/tmp/d/fmnist)",
    )
    b.add_argument(
        "--ipcs", type=positive, nargs="+", default=[1, 10], help="images per class (default: 1 10)"
    )
    b.add_argument(
        "--methods",
        nargs="+",
        default=["dm", "dsa", "mtt", "random", "herding"],
        metavar="METHOD",
        help="of dm, dsa, mtt, tesla, random, herding (default: dm dsa mtt random herding)",
    )
    b.add_argument("--seeds", type=positive, default=2, help="evaluation seeds (default: 2)")
    b.add_argument(
        "--epochs",
        type=positive,
        default=100,
        help="evaluation epochs (default: 100; the paper: 300)",
    )
    b.add_argument(
        "--eval-width",
        type=positive,
        default=128,
        help="width of the evaluation ConvNets (default: 128)",
    )
    b.add_argument(
        "--net-width", type=int, default=0, help="condensation and expert ConvNet width (0: 128)"
    )
    b.add_argument("--budget", default="cpu", help="cpu (shrunk loops) or paper (default: cpu)")
    b.add_argument(
        "--ours",
        action="append",
        default=[],
        metavar="DATASET=RUN",
        help="a RUN whose eval.json gives ours (repeatable)",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument(
        "--workdir",
        default="/tmp/gencond-bench-accuracy",
        help="cached experts (default: %(default)s)",
    )
    b.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: benchmarks/results/accuracy_<device>.json)",
    )
    b.add_argument(
        "--cluster",
        default=None,
        help="slurm | local | debug: each (method, "
        "dataset, IPC) point one job array element, merged here (default: run "
        "the points here one after the other)",
    )
    b.add_argument("--partition", default=None, help="SLURM partition (with --cluster slurm)")
    b.add_argument(
        "--time",
        dest="time_min",
        type=positive,
        default=120,
        help="minutes per point's job (default: 120)",
    )
    b.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="METHOD:DATASET:IPC",
        help="run only these points (what each array element is given)",
    )
    b.set_defaults(handler=run_accuracy)

    b = bench.add_parser(
        "budget",
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
    b.add_argument("--data", required=True, help="a prepared dataset folder")
    b.add_argument("--ipc", type=positive, default=10, help="images per class (default: 10)")
    b.add_argument(
        "--methods",
        default="ours,dm,dsa,mtt",
        help="comma list of ours, dm, dsa, mtt (default: %(default)s)",
    )
    b.add_argument(
        "--marks",
        default="5,10,20,40",
        help="wall-clock minutes at which each set is snapshotted (default: %(default)s)",
    )
    b.add_argument("--preset", default=None, help="ours' preset (default: <dataset>-smoke)")
    b.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="eval.* keys change the protocol (default: 3 seeds, else the field's); "
        "other keys go to ours' preset (repeatable)",
    )
    b.add_argument(
        "--baseline",
        dest="baseline_sets",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a pixel baseline's setting, e.g. dm.batch_real=64 (repeatable)",
    )
    b.add_argument(
        "--ours-chunk",
        type=positive,
        default=100,
        help="ours' condensation steps between clock checks (default: 100)",
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument(
        "--workdir",
        default="runs/budget",
        help="snapshots, ours' runs, the herding net (default: %(default)s)",
    )
    b.add_argument(
        "--phase",
        choices=("all", "condense", "evaluate", "report"),
        default="all",
        help="condense: only make the snapshots; evaluate: only train on them; "
        "all: both; report: only rebuild the JSON, markdown and plot from the rows "
        "(default: %(default)s)",
    )
    b.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="evaluate every N-th (method, mark, seed) starting at K, so N processes can "
        "share the evaluations (default: %(default)s)",
    )
    b.add_argument("--out", type=Path, default=None, help="result JSON (see above)")
    b.set_defaults(handler=run_budget)


def run_budget(args) -> int:
    import ast

    from benchmarks.budget_bench import BudgetConfig, run
    from common.console import log
    from common.errors import ConfigError
    from data_prep.meta import load_meta
    from engine.config import RunConfig
    from launch.tables import show_rows

    if not (Path(args.data) / "meta.json").is_file():
        raise ConfigError(f"{args.data}: not a prepared dataset (no meta.json)")
    dataset = load_meta(args.data).dataset
    evaluation = RunConfig()
    evaluation.eval.seeds, evaluation.eval.baselines = 3, ()
    preset_sets = []
    for item in args.overrides:
        if item.strip().startswith("eval."):
            evaluation.override(item)
        else:
            preset_sets.append(item)
    cfg = BudgetConfig(
        data=args.data,
        dataset=dataset,
        ipc=args.ipc,
        device=args.device,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        preset=args.preset or f"{dataset}-smoke",
        ours_chunk=args.ours_chunk,
        preset_overrides=(*preset_sets, f"ipc={args.ipc}"),
        eval=evaluation.eval,
        workdir=args.workdir,
        phase=args.phase,
    )
    try:
        k, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {args.shard!r}: expected K/N, e.g. 0/2") from None
    cfg.shard = (k, n)
    try:
        cfg.marks_min = tuple(float(m) for m in args.marks.split(",") if m.strip())
    except ValueError:
        raise ConfigError(f"--marks {args.marks!r}: expected minutes like 5,10,20,40") from None
    for item in args.baseline_sets:
        key, _, text = item.partition("=")
        method, _, name = key.partition(".")
        if not name or not text:
            raise ConfigError(f"--baseline {item!r}: expected METHOD.KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        cfg.baseline_overrides.setdefault(method.strip(), {})[name.strip()] = value
    payload = run(cfg, args.out, log=log)
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


def _add_timing_options(b, positive) -> None:
    b.add_argument(
        "--methods",
        nargs="+",
        default=list(THROUGHPUT_METHODS),
        metavar="METHOD",
        help=f"of {', '.join(THROUGHPUT_METHODS)} (default: all)",
    )
    b.add_argument(
        "--timed-classes",
        type=positive,
        default=1,
        help="classes per timed step; sweeps are extrapolated (default: 1)",
    )
    b.add_argument(
        "--timed-syn-steps",
        type=positive,
        default=2,
        help="MTT/TESLA student steps timed per iteration (default: 2)",
    )
    b.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    b.add_argument(
        "--repeats", type=positive, default=2, help="timed steps; the median is kept (default: 2)"
    )
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument("--mem-limit-gb", type=float, default=None, help=MEM_LIMIT_HELP)
    b.add_argument(
        "--point-timeout-s",
        type=float,
        default=300.0,
        help="a slower point is reported as not measured (default: 300)",
    )


def _timing_config(args, **extra):
    from benchmarks.throughput_bench import ThroughputConfig, default_mem_limit_gb

    cfg = ThroughputConfig(
        methods=tuple(args.methods),
        timed_classes=args.timed_classes,
        timed_syn_steps=args.timed_syn_steps,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        mem_limit_gb=args.mem_limit_gb or default_mem_limit_gb(args.device),
        point_timeout_s=args.point_timeout_s,
        **extra,
    )
    cfg.check()
    return cfg


def _fits(row: dict) -> str:
    return {True: "yes", False: "no", None: "?"}[row.get("fits")]


def run_throughput(args) -> int:
    from benchmarks.throughput_bench import run
    from launch.tables import show_rows

    cfg = _timing_config(args, shapes=tuple(args.shapes), ipcs=tuple(args.ipcs))
    result = run(cfg, args.out)
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

    cfg = ScalingConfig(
        classes=tuple(args.classes),
        resolutions=tuple(args.resolutions),
        ipc=args.ipc,
        timing=_timing_config(args),
    )
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


def _pairs(items: list[str], option: str) -> dict[str, str]:
    from common.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{option} {item!r}: expected DATASET=PATH")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def run_accuracy(args) -> int:
    from benchmarks.accuracy_bench import DEFAULT_DATA, AccuracyConfig, run
    from common.errors import ConfigError
    from launch.tables import show_rows

    if args.budget not in ("cpu", "paper"):
        raise ConfigError(f"--budget must be cpu or paper, not {args.budget!r}")
    cfg = AccuracyConfig(
        datasets=_pairs(args.data, "--data") or dict(DEFAULT_DATA),
        ipcs=tuple(args.ipcs),
        methods=tuple(args.methods),
        seeds=args.seeds,
        eval_epochs=args.epochs,
        eval_width=args.eval_width,
        net_width=args.net_width,
        budget=args.budget,
        device=args.device,
        ours=_pairs(args.ours, "--ours"),
        workdir=args.workdir,
        only=tuple(args.only),
    )
    result = _accuracy_array(args, cfg) if args.cluster else run(cfg, args.out)
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


def _accuracy_array(args, cfg) -> dict:
    """Each point a job array element (`gencond bench accuracy --only P --out PART`) through
    launch.submit's executors; the parts are merged into one result file here."""
    import time

    from benchmarks.accuracy_bench import all_points, merge_parts, point_name
    from launch import submit
    from launch.tasks import CommandTask

    began = time.perf_counter()
    opts = submit.SubmitOptions(**submit.load_defaults(args.cluster))
    opts.cluster, opts.time_min, opts.job_name = args.cluster, args.time_min, "gencond-accuracy"
    opts.partition = args.partition or opts.partition
    opts.log_dir = str(Path(args.workdir) / "jobs")
    parts_dir = Path(args.workdir) / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    common = [
        "bench",
        "accuracy",
        "--seeds",
        args.seeds,
        "--epochs",
        args.epochs,
        "--eval-width",
        args.eval_width,
        "--net-width",
        args.net_width,
        "--budget",
        args.budget,
        "--device",
        args.device,
        "--workdir",
        args.workdir,
    ]
    for name, folder in cfg.datasets.items():
        common += ["--data", f"{name}={folder}"]
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
