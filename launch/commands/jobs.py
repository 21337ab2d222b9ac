"""`gencond submit`, `gencond sweep` and `gencond slurm-local`: commands that run other commands,
here, as submitit jobs, or as job arrays. They get `main` and the parser from the dispatcher
(args.entry, args.parser), so nothing here imports the CLI back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import fsio
from launch.commands.common import add_recipe_option, positive, run_config, with_recipe
from launch.commands.method import show_evaluation

SUBMITTABLE = ("pretrain", "condense", "evaluate", "sweep", "bench")


def add(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="run pretrain / condense / evaluate / a sweep / a benchmark as SLURM jobs (submitit)",
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
    p.add_argument("--nodes", type=positive, default=None, help="nodes per job (default: 1)")
    p.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: 0)")
    p.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="tasks per node (default: one per GPU, 1 without GPUs)",
    )
    p.add_argument(
        "--cpus-per-task", type=positive, default=None, help="CPU cores per task (default: 2)"
    )
    p.add_argument("--mem-gb", type=float, default=None, help="memory per node in GB")
    p.add_argument(
        "--time",
        dest="time_min",
        type=positive,
        default=None,
        help="time limit in minutes (default: 60); SIGUSR2 comes --signal-delay-s "
        "before it: the run checkpoints and requeues itself",
    )
    p.add_argument(
        "--signal-delay-s",
        type=positive,
        default=None,
        help="seconds before the time limit that SIGUSR2 comes (default: 120)",
    )
    p.add_argument("--account", default=None, help="SLURM account")
    p.add_argument("--qos", default=None, help="SLURM QoS")
    p.add_argument(
        "--array-parallelism",
        type=positive,
        default=None,
        help="array elements running at once (default: 64)",
    )
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH parameter, e.g. --sbatch constraint=a100 (repeatable)",
    )
    p.add_argument("--log-dir", default=None, help="job logs (default: gencond-jobs/<job id>)")
    p.add_argument(
        "--defaults",
        type=Path,
        default=None,
        help="cluster defaults TOML (default: $GENCOND_CLUSTER_DEFAULTS or "
        "~/.config/gencond/clusters.toml)",
    )
    p.add_argument(
        "--wait", action="store_true", help="show live job states; exit non-zero if a job failed"
    )
    p.add_argument(
        "--print-sbatch",
        action="store_true",
        help="print the sbatch script these options give and exit",
    )
    p.add_argument("what", choices=SUBMITTABLE, metavar="<pretrain|condense|evaluate|sweep|bench>")
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

    p = sub.add_parser(
        "slurm-local",
        help="a single-node SLURM on this machine (root)",
        description="Install (apt) and start munge, slurmctld and slurmd on this "
        "machine if they are not running; `stop` stops only what `start` "
        "started; `status` shows the daemons and sinfo.",
    )
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(handler=_run_slurm_local)


def _add_sweep_options(p) -> None:
    p.add_argument("--preset", required=True, help="preset of every point (unless in --grid)")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--out", required=True, type=Path, help="sweep folder: OUT/<point>/")
    p.add_argument("--pretrained", type=Path, default=None, help="a PRE folder to reuse")
    add_recipe_option(p)
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one axis of the grid (repeatable), e.g. seed=0,1,2 ipc=1,10",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fixed override of every point (repeatable)",
    )
    p.add_argument(
        "--variants",
        type=Path,
        default=None,
        metavar="FILE",
        help='a TOML file of named variants, one [name] table of "key" = value overrides '
        "each (e.g. research/ablations/fashion-mnist-smoke.toml); they form the grid's first "
        "axis and name its points (OUT/variant-NAME...)",
    )
    p.add_argument(
        "--eval-seeds",
        type=positive,
        default=None,
        help="evaluation seeds per point (default: the preset's eval.seeds)",
    )
    p.add_argument(
        "--eval-epochs",
        type=positive,
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

    plan = SweepPlan(
        preset=args.preset,
        data=args.data,
        out=args.out,
        pretrained=args.pretrained,
        grid=args.grid,
        overrides=with_recipe(args, args.overrides),
        variants=load_variants(args.variants),
        eval_seeds=args.eval_seeds,
        eval_epochs=args.eval_epochs,
        baselines=args.baselines,
    )
    plan.check()
    return plan


def _show_sweep(payload: dict, title: str) -> None:
    from launch.tables import show_rows

    rows = [{k: v for k, v in r.items() if k != "point"} for r in payload["rows"]]
    show_rows(title, rows)


def _run_sweep_here(args) -> int:
    """Every point in turn: condense (skipped when finished), each evaluation seed (skipped
    when its part exists), gather; then OUT/sweep.json over the points."""
    from common.console import log
    from launch.sweep import finished_condense, finished_seed, gather_sweep, point_name

    plan = _sweep_plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    for point in plan.points:
        name, seeds = point_name(point), plan.config(point).eval.seeds
        if finished_condense(plan, point):
            log(f"{name}: condensed.pt is there, skipping its condensation")
        elif (code := args.entry(plan.condense_argv(point))) != 0:
            return code
        todo = [i for i in range(seeds) if not finished_seed(plan, point, i)]
        if len(todo) < seeds:
            log(f"{name}: {seeds - len(todo)} of {seeds} evaluation seeds done, skipping them")
        for i in todo:
            if (code := args.entry(plan.evaluate_argv(point, i))) != 0:
                return code
        gather = [
            "evaluate",
            str(plan.run_dir(point)),
            "--seeds",
            str(seeds),
            "--gather",
            "--data",
            str(plan.data),
        ]
        if (code := args.entry(gather)) != 0:
            return code
    _show_sweep(gather_sweep(args.out, plan.points), f"Sweep {args.out}")
    return 0


def _submit_options(args):
    from launch.submit import SubmitOptions, load_defaults

    cluster = args.cluster or "slurm"
    values = load_defaults(cluster, args.defaults) if args.defaults else load_defaults(cluster)
    values["cluster"] = cluster
    for name in (
        "partition",
        "nodes",
        "gpus_per_node",
        "tasks_per_node",
        "cpus_per_task",
        "mem_gb",
        "time_min",
        "signal_delay_s",
        "account",
        "qos",
        "array_parallelism",
        "log_dir",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    extra = dict(values.pop("sbatch", {}))
    for item in args.sbatch:
        if "=" not in item:
            from common.errors import ConfigError

            raise ConfigError(f"--sbatch {item!r}: expected key=value")
        key, value = item.split("=", 1)
        extra[key.strip()] = value.strip()
    opts = SubmitOptions(**values, sbatch=extra)
    opts.check()
    return opts


def condense_job_argv(parsed, cfg, log_dir: str, command: str = "condense") -> list[str]:
    """A submitted condensation's (or pretrain stage's) command: the resolved, validated config
    in a file under the log folder (LOG_DIR/configs/), so the job resolves no preset and parses
    no --set."""
    import uuid

    path = (Path(log_dir) / "configs" / f"{cfg.preset}-{uuid.uuid4().hex[:12]}.json").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.to_file(path)
    argv = [command, "--config", str(path), "--data", str(parsed.data), "--out", str(parsed.out)]
    if getattr(parsed, "pretrained", None) is not None:
        argv += ["--pretrained", str(parsed.pretrained)]
    if getattr(parsed, "allow_mismatch", False):
        argv.append("--allow-mismatch")
    return argv


def _run_submit(args) -> int:
    from launch import submit
    from launch.tables import show_pairs
    from launch.tasks import CommandTask, GatherSweepTask, SequenceTask

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
        parsed = args.parser.parse_args([args.what, *rest])
        if args.what in ("pretrain", "condense"):  # the job gets the resolved config
            rest = condense_job_argv(parsed, run_config(parsed), opts.log_dir, args.what)[1:]
    ex = submit.executor(opts)
    entry = args.entry
    after = []
    if args.what == "evaluate":
        from engine.config import RunConfig
        from engine.stages import load_condensed

        seeds = parsed.seeds or RunConfig.from_dict(load_condensed(parsed.run).config).eval.seeds
        if "--seeds" not in rest:
            rest += ["--seeds", str(seeds)]
        elements = [
            CommandTask(["evaluate", *rest, "--seed-index", str(i)], entry) for i in range(seeds)
        ]
        jobs = submit.submit_array(ex, elements)
        gather = CommandTask(
            [
                "evaluate",
                str(parsed.run),
                "--seeds",
                str(seeds),
                "--gather",
                "--data",
                str(parsed.data),
            ],
            entry,
        )
        after = [gather]
    elif args.what == "sweep":
        parsed.out.mkdir(parents=True, exist_ok=True)
        (parsed.out / "sweep_points.json").write_text(json.dumps(plan.points, indent=1) + "\n")
        tasks = [
            SequenceTask(
                [plan.condense_argv(p), plan.evaluate_argv(p)],
                [plan.run_dir(p) / "condensed.pt", plan.run_dir(p) / "eval.json"],
                entry,
            )
            for p in plan.points
        ]
        jobs = submit.submit_array(ex, tasks)
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
        show_evaluation(fsio.read_json(parsed.run / "eval.json", "evaluation report"))
    elif args.what == "sweep":
        _show_sweep(
            fsio.read_json(parsed.out / "sweep.json", "sweep report"), f"Sweep {parsed.out}"
        )
    return 0 if all(s == "COMPLETED" for s in states) else 1


def _run_slurm_local(args) -> int:
    from launch import slurm_local
    from launch.tables import show_pairs

    result = getattr(slurm_local, args.action)()
    show_pairs(f"slurm-local {args.action}", [(k, str(v)) for k, v in result.items()])
    return 0
