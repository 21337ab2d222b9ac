"""`gencond pretrain | condense | synthesize | evaluate`: the method's stages, with their tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.console import console
from launch.commands.common import (
    FIT_CACHE_HELP,
    MISMATCH_HELP,
    PRETRAIN_SET_HELP,
    add_run_options,
    positive,
    run_config,
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

The pretrain stage it runs first (without --pretrained) checkpoints the same way, into
RUN/pretrained/pretrain_checkpoint.pt every gan.checkpoint_every steps.

one writer per RUN folder: a second condense / synthesize / evaluate on it is refused with
the holder's pid and host (a lock a killed process held is released by the kernel)."""


PRETRAIN_EPILOG = """\
resuming: the stage writes PRE/pretrain_checkpoint.pt every gan.checkpoint_every steps (of the
teacher, then of the GAN) and when it is stopped by SIGTERM or SIGUSR2 (SLURM's --signal
before a time limit). Running the same command again (same --out, seed, teacher.* and gan.*
values; device and gan.checkpoint_every may change) resumes from it and ends bit-identical to
an uninterrupted run on as many ranks.

exit status: 0 done; 2 refused or failed; 3 stopped by SIGTERM / SIGUSR2 after writing the
checkpoint: run the same command again to resume; 130 interrupted (Ctrl-C)."""

STOPPED_EPILOG = """\
exit status: 0 done; 2 refused or failed; 3 stopped by SIGTERM / SIGUSR2 with nothing
half-written (one `stopped:` line): run the same command again to finish{kept}; 130
interrupted (Ctrl-C)."""


def add(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="teacher, class embeddings and GAN-pretrained generator (once per dataset)",
        description="The per-dataset stage reused by every IPC, seed and ablation: train the "
        "teacher ConvNet, take class embeddings from it, and pretrain the class-conditional "
        "GAN. Writes PRE/pretrained.pt and PRE/pretrain.json.",
        epilog=PRETRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_options(p, "output folder PRE", PRETRAIN_SET_HELP)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a pretrain stage made with other settings in PRE (by default refused: the "
        "runs made from it record its sha256; the same settings reuse it)",
    )
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
    add_run_options(p, "output folder RUN")
    p.add_argument("--pretrained", type=Path, default=None, help="a PRE folder from `pretrain`")
    p.add_argument("--allow-mismatch", action="store_true", help=MISMATCH_HELP)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a run made with another config in RUN (by default refused); its "
        "condensed.pt, checkpoint, metrics, synthetic/, eval.json and eval_parts/ are removed "
        "first. The same config resumes or redoes the run without it",
    )
    p.add_argument("--fit-cache", type=Path, default=None, help=FIT_CACHE_HELP)
    p.set_defaults(handler=_run_condense)

    p = sub.add_parser(
        "synthesize",
        help="condensed artifact -> synthetic set (tensors, beton, grid PNG)",
        description="Write RUN/synthetic/: images.pt (float32, normalised with the dataset's "
        "mean/std), labels.pt (int64, class-major), train.beton (uint8) and grid.png "
        "(rows: classes, columns: the IPC images).",
        epilog=STOPPED_EPILOG.format(kept=" (RUN/synthetic/ appears only once complete)"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="a RUN folder from `condense`")
    p.set_defaults(handler=_run_synthesize)

    p = sub.add_parser(
        "evaluate",
        help="train fresh nets on the condensed set and on baselines; RUN/eval.json",
        description="Train fresh networks on the condensed set and on random-real / herding "
        "coresets of the same IPC (DSA augmentation), N seeds, final-epoch test accuracy; plus "
        "the plain pretrained generator's samples and the within/between-class diversity.",
        epilog=STOPPED_EPILOG.format(
            kept=" (each finished training is kept in RUN/eval_progress/ and not redone)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="a RUN folder from `condense`")
    p.add_argument("--data", required=True, type=Path, help="the prepared dataset it came from")
    p.add_argument(
        "--models",
        default=None,
        help="comma list of convnet,alexnet,vgg11,resnet18,mlp (default: the run's eval.models)",
    )
    p.add_argument(
        "--seeds",
        type=positive,
        default=None,
        help="training seeds per set (default: the run's eval.seeds)",
    )
    p.add_argument(
        "--baselines",
        default=None,
        help="comma list of random (random real), herding, plain (the pretrained G's "
        "samples); '' for none (default: the run's eval.baselines)",
    )
    p.add_argument(
        "--epochs",
        type=positive,
        default=None,
        help="training epochs per net (default: the run's eval.epochs)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one eval.* key of the run's protocol, e.g. eval.dsa_mode=all "
        "(repeatable; docs/config_reference.md)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--seed-index",
        type=int,
        default=None,
        help="evaluate only seed I of --seeds N into RUN/eval_parts/seed_I.json "
        "(one element of a job array)",
    )
    p.add_argument(
        "--gather",
        action="store_true",
        help="merge RUN/eval_parts/seed_{0..N-1}.json into RUN/eval.json and show it",
    )
    p.add_argument("--allow-mismatch", action="store_true", help=MISMATCH_HELP)
    p.set_defaults(handler=_run_evaluate)


def _run_pretrain(args) -> int:
    cfg = run_config(args)  # a bad preset, key or dataset fails before torch and ffcv load
    from common.console import is_rank_zero
    from engine import distributed
    from engine.distributed import hold_on_rank0
    from engine.stages import existing_pretrain, run_pretrain
    from launch.tables import show_pairs

    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        with hold_on_rank0(args.out, "pretrain"):
            summary = existing_pretrain(cfg, args.data, args.out, args.force)
            if summary is None:
                summary = run_pretrain(cfg, args.data, args.out)
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        warnings = summary.pop("warnings")
        show_pairs(f"Pretrained {cfg.preset} in {args.out}", list(summary.items()))
        for line in warnings:
            console.print(f"[bold yellow]warning:[/] {line}")
    return 0


def _run_condense(args) -> int:
    cfg = run_config(args)  # a bad preset, key or dataset fails before torch and ffcv load
    from common.console import is_rank_zero
    from engine import distributed
    from engine.distributed import hold_on_rank0
    from engine.stages import run_condense
    from launch.tables import show_pairs

    env = distributed.init(cfg.device, cfg.collective_timeout_s)
    try:
        from data_prep.meta import load_meta
        from engine.class_plan import ClassPlan
        from engine.preflight import check_condense

        meta = load_meta(args.data)  # checked before --out is created (run_condense checks too)
        plan = ClassPlan.of(cfg.condense, meta.num_classes, cfg.seed, env.rank, env.world_size)
        check_condense(cfg, meta, plan)
        with hold_on_rank0(args.out, "condense"):
            summary = run_condense(
                cfg,
                args.data,
                args.out,
                args.pretrained,
                env,
                args.allow_mismatch,
                args.force,
                fit_cache=args.fit_cache,
            )
    finally:
        distributed.teardown()
    if is_rank_zero():
        summary["ranks"] = env.world_size
        diagnostics = summary.pop("diagnostics", None)
        show_pairs(f"Condensed {cfg.preset} into {args.out}", list(summary.items()))
        if diagnostics:
            _show_condense_diagnostics(diagnostics)
    return 0


def _show_condense_diagnostics(d: dict) -> None:
    from launch.tables import show_pairs, show_rows

    terms = [
        {
            **r,
            "chance": "-" if r["chance"] is None else r["chance"],
            "per_phi": "-" if r.get("per_phi") is None else r["per_phi"],
        }
        for r in d["terms"]
    ]
    show_rows(
        "Loss terms (first: first tenth of the log; last half: mean of the second; "
        "per phi: mean change within one outer iteration)",
        terms,
    )
    s = d["spread"]
    labels = {
        "within_class": "within-class distance",
        "between_class": "between-class distance",
        "closest_pair": "closest class pair",
    }

    def value(key: str) -> str:
        v = s.get(key, float("nan"))
        return "none (one image a class)" if v is None else f"{v:.4g}"

    pairs = [
        (text, f"{value(key)} (real {s.get(key + '_real', float('nan')):.4g})")
        for key, text in labels.items()
    ]
    if "pixels" in d:
        px = d["pixels"]
        pairs.append(
            (
                "pixels at the top / bottom of the range",
                f"{px['top']:.1%} / {px['bottom']:.1%} (real {px['top_real']:.1%} / "
                f"{px['bottom_real']:.1%})",
            )
        )
    if d.get("conditions", {}).get("mean_cosine") is not None:
        c = d["conditions"]
        pairs.append(
            (
                "cosine between class conditions (mean / max)",
                f"{c['mean_cosine']:.3f} / {c['max_cosine']:.3f} (one-hot 0)",
            )
        )
    if "movement" in d:
        mv = d["movement"]
        pairs.append(
            (
                "moved from the pretrained G's images (features / pixel RMS)",
                f"{mv['teacher_features']:.4g} ({mv['over_real_within_class']:.1%} of real "
                f"within-class distance) / {mv['pixel_rms']:.3g}",
            )
        )
    if "teacher_agreement" in d:
        pairs.append(("teacher agrees with the label", f"{d['teacher_agreement']:.1%}"))
    show_pairs("Synthetic set in teacher features (real: random real, 10 a class or more)", pairs)
    for line in d["warnings"]:
        console.print(f"[bold yellow]warning:[/] {line}")


def _require_condensed(run: Path) -> None:
    """A missing artifact fails before torch and ffcv load."""
    from engine import artifact

    artifact.require(run / artifact.CONDENSED_FILE, artifact.CONDENSED_WHAT)


def _run_synthesize(args) -> int:
    _require_condensed(args.run)
    from common.runlock import hold
    from engine.checkpoint import stop_raises
    from engine.stages import SYNTHETIC_DIR, run_synthesize
    from launch.tables import show_pairs

    unfinished = f"{args.run / SYNTHETIC_DIR} is replaced only once complete; left as it was"
    with stop_raises(unfinished), hold(args.run, "synthesize"):
        summary = run_synthesize(args.run)
    show_pairs(f"Synthetic set of {args.run}", list(summary.items()))
    return 0


def _run_evaluate(args) -> int:
    _require_condensed(args.run)
    from common.console import is_rank_zero
    from common.runlock import hold, run_lock_path
    from engine import distributed
    from engine.checkpoint import stop_raises
    from engine.config import RunConfig
    from engine.distributed import hold_on_rank0
    from engine.stages import load_condensed, run_evaluate

    cfg = RunConfig.from_dict(load_condensed(args.run).config)
    unfinished = f"{args.run / 'eval.json'} is written only once complete"
    if args.gather:
        from engine.stages import gather_evaluation

        with stop_raises(unfinished), hold(args.run, "evaluate --gather"):
            report = gather_evaluation(args.run, args.seeds or cfg.eval.seeds)
        show_evaluation(report)
        return 0
    eval_cfg = eval_config(cfg, args)
    lock = None  # one job-array element per seed: each locks its own part file
    if args.seed_index is not None:
        lock = run_lock_path(args.run, f".gencond-eval-seed-{args.seed_index}.lock")
    distributed.init(args.device, cfg.collective_timeout_s)
    try:
        with stop_raises(unfinished), hold_on_rank0(args.run, "evaluate", lock):
            report = run_evaluate(
                args.run,
                args.data,
                eval_cfg,
                args.device,
                args.seed_index,
                allow_mismatch=args.allow_mismatch,
            )
    finally:
        distributed.teardown()
    if is_rank_zero():
        show_evaluation(report)
    return 0


def eval_config(cfg, args):
    """The run's evaluation protocol (cfg.eval) with this command's flags and --set eval.*."""
    from common.errors import ConfigError

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


def show_evaluation(report: dict) -> None:
    from engine.evaluate import summarize
    from launch.tables import show_rows

    div = report["diagnostics"]["diversity_teacher_features"]
    rows = summarize(report["results"])
    for row in rows:
        d = div.get(row["set"], {})
        ratio = d.get("ratio", float("nan"))
        row["within/between"] = "-" if ratio is None else ratio  # None: one image a class
    show_rows(f"IPC {report['ipc']}, {report['epochs']} epochs: test accuracy (%)", rows)
    ratio = div.get("condensed", {}).get("ratio")
    if ratio is not None and ratio < 0.05:
        console.print(
            f"[bold yellow]warning:[/] the condensed images of a class are nearly identical "
            f"(within/between-class distance {ratio:.3f}): the generator ignores its code"
        )
