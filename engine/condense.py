"""Algorithm 1: learn the codebook Z and fine-tune the generator G against a feature net phi
that is re-initialised every outer iteration and trained on real data in between.

    for outer in range(O):                    re-initialise phi (seeded by (seed, outer))
        for n in range(N):
            for i in range(M):                one step: update (Z, G), then D and the head
            update phi on a real batch
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from common.console import log, progress_bar
from common.errors import ConfigError, DataError
from data_prep.loaders import ClassGroupedLoader, TrainLoader
from data_prep.meta import DatasetMeta
from engine import checkpoint, distributed
from engine.augment import DiffAugment
from engine.class_plan import ClassPlan
from engine.config import RunConfig, with_defaults
from engine.coreset_init import coreset, fitted_start
from engine.coreset_refine import refine_coreset
from engine.distributed import DistEnv
from engine.generator import Generator
from engine.nets import ConvNet
from engine.step import StepInput, StepModules, condense_step, phi_update


def _real_batches(loader: TrainLoader, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """phi's real batches from global batch number `start` on (epochs keyed by the seed)."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ConfigError("condense.phi_batch is larger than the training set")
    loader.epoch, skip = divmod(start, per_epoch)
    while True:
        for batch in loader:
            if skip:
                skip -= 1
                continue
            yield batch


def condense(
    cfg: RunConfig,
    data_dir: str | Path,
    meta: DatasetMeta,
    generator: Generator,
    conditions: torch.Tensor,
    out_dir: Path,
    *,
    plan: ClassPlan,
    teacher: ConvNet | None = None,
    env: DistEnv | None = None,
    fit_cache: Path | None = None,
) -> dict:
    """Run Algorithm 1 on this rank's share of every step's classes (`plan`, already checked
    against the world size); returns the state the artifact needs. Rank 0 writes metrics.jsonl
    and the checkpoints; a run that finds RUN/checkpoint.pt made with the same config resumes
    from it. A coreset start is kept in RUN/coreset_fit.pt and, with `fit_cache`, in that folder
    for other runs with the same fit (engine.coreset_init.fitted_start)."""
    c = cfg.condense
    env = env or DistEnv(device=torch.device(cfg.device))
    device = env.device
    M, per_outer = c.gen_steps, c.inner_iterations * c.gen_steps
    if (c.soft_labels or c.classifier == "teacher") and teacher is None:
        raise ConfigError(
            "condense.soft_labels / classifier=teacher need the pretrain stage's teacher"
        )
    if c.phi_batch % env.world_size:
        raise ConfigError(
            f"condense.phi_batch={c.phi_batch} does not split evenly over {env.world_size} ranks"
        )
    m = StepModules(cfg, meta, generator, conditions, device)
    if cfg.gan.condition == "online_feature" and m.conditions.shape[1] != m.phi.feature_channels:
        raise ConfigError(
            f"gan.condition=online_feature needs teacher.width == condense.phi_width "
            f"({m.conditions.shape[1]} != {m.phi.feature_channels})"
        )
    total = c.total_steps if not cfg.max_steps else min(c.total_steps, cfg.max_steps)
    ckpt_path = out_dir / checkpoint.CHECKPOINT_FILE
    start, seconds = 0, 0.0
    if ckpt_path.is_file():
        saved = checkpoint.Checkpoint.read(ckpt_path)
        _check_resumable(saved, cfg, ckpt_path)
        m.load_state_dict(saved.modules, saved.step)
        start, seconds = saved.step, saved.seconds
        log(f"Resuming from {ckpt_path} at step {start} (saved by {saved.world_size} rank(s))")
    elif c.coreset_init != "none":
        images, _ = coreset(cfg, data_dir, teacher)
        all_classes = list(range(meta.num_classes))
        mine = distributed.my_share(all_classes, env.rank, env.world_size)
        fitted_start(
            G=m.G,
            codebook=m.codebook,
            conditions=m.conditions,
            images=images.to(device),
            mine=mine,
            num_classes=meta.num_classes,
            cfg=cfg,
            run_dir=out_dir,
            refine=partial(refine_coreset, cfg=cfg, meta=meta, data_dir=data_dir, mine=mine),
            cache_dir=fit_cache,
            world_size=env.world_size,
            is_main=env.is_main,
        )

    associations = ClassGroupedLoader(
        data_dir, c.ipc * c.assoc_per_image, cfg.seed, device
    ).iterate(plan.mine, start)
    real_loader = TrainLoader(
        data_dir,
        c.phi_batch // env.world_size,
        seed=cfg.seed + 1,
        device=device,
        rank=env.rank,
        world_size=env.world_size,
    )
    real_batches = _real_batches(real_loader, start // M)
    augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
    metrics = checkpoint.open_metrics(out_dir / "metrics.jsonl", start) if env.is_main else None
    stop = checkpoint.StopFlag()
    began = time.perf_counter() - seconds

    def save_checkpoint(step: int) -> None:
        if env.is_main:
            checkpoint.Checkpoint(
                step=step,
                seconds=time.perf_counter() - began,
                world_size=env.world_size,
                config=cfg.to_dict(),
                modules=m.state_dict(),
            ).save(ckpt_path)
        distributed.barrier()

    try:
        with progress_bar() as bar:
            task = bar.add_task("Condensing", total=total, completed=start)
            for step in range(start, total):
                outer, within = divmod(step, per_outer)
                if within == 0:  # Algorithm 1: a fresh phi every outer iteration
                    m.fresh_phi(cfg.seed, outer, c.disc_reinit)
                loaded, real, real_labels = next(associations)  # of plan.mine(step)
                if loaded != step:
                    raise RuntimeError(f"associations of step {loaded} at step {step}")
                at = plan.at(step)  # drawn once: what the loader streamed for this step
                batch = StepInput(step, at.classes, at.mine, real, real_labels)
                record = condense_step(cfg=cfg, m=m, teacher=teacher, augment=augment, batch=batch)
                # after M generator steps, one phi step on real data (none at rate 0)
                if within % M == M - 1 and c.phi_trains:
                    x, y = next(real_batches)
                    phi_update(cfg, m, x, y, env.world_size)
                if within == per_outer - 1 and c.phi_trains:  # the next fresh phi's rate
                    m.sched_phi.step()
                # one small all-reduce a step: global losses, a NaN anywhere, a stop signal
                summary = distributed.all_sum(
                    torch.tensor([*record.values(), float(stop.raised)], dtype=torch.float64)
                )
                record = dict(zip(record, summary[:-1].tolist(), strict=True))
                bar.advance(task)
                done = step + 1
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"condensation loss {record['loss']} at step {step}")
                if metrics and (done % c.log_every == 0 or done == total):
                    record.update(
                        step=done, outer=outer, seconds=round(time.perf_counter() - began, 3)
                    )
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                if summary[-1] > 0:
                    save_checkpoint(done)
                    raise checkpoint.Preempted(done, ckpt_path, stop.signal_name or "a signal")
                if c.checkpoint_every and done % c.checkpoint_every == 0 and done < total:
                    save_checkpoint(done)
        if start < total < c.total_steps:  # stopped early by max_steps: a larger one continues
            save_checkpoint(total)
    finally:
        stop.close()
        if metrics:
            metrics.close()
    return {
        "generator": m.G.cpu(),
        "codebook": m.codebook.detach().cpu(),
        "conditions": m.conditions.cpu(),
        "steps": total,
        "seconds": time.perf_counter() - began,
    }


def _check_resumable(saved: checkpoint.Checkpoint, cfg: RunConfig, path: Path) -> None:
    """Only the stopping point (max_steps) and the device may differ from the saved run, and
    max_steps cannot go back before the checkpoint's step."""
    if not isinstance(saved.step, int) or not 0 <= saved.step <= cfg.condense.total_steps:
        raise DataError(
            f"{path}: its step {saved.step} lies outside this run's 0..{cfg.condense.total_steps} "
            "steps (not this run's checkpoint, or damaged); delete it to start over"
        )
    if cfg.max_steps and cfg.max_steps < saved.step:
        raise ConfigError(
            f"max_steps={cfg.max_steps} is below the step of {path} ({saved.step}): a run "
            f"cannot go back; use a new --out folder (or max_steps >= {saved.step})"
        )
    mine, theirs = cfg.to_dict(), with_defaults(saved.config)
    for key in ("max_steps", "device"):
        mine.pop(key, None)
        theirs.pop(key, None)
    if json.dumps(mine, sort_keys=True, default=str) != json.dumps(
        theirs, sort_keys=True, default=str
    ):
        raise ConfigError(
            f"{path} was written by a run with another config; use a new --out folder "
            f"(or delete the checkpoint to start over)"
        )
