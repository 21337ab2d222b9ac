"""Teacher ConvNet trained on the real data, and the class embeddings taken from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.console import progress_bar
from common.errors import ConfigError
from data_prep.loaders import TestLoader, TrainLoader
from data_prep.meta import DatasetMeta
from engine import checkpoint, distributed
from engine.config import TeacherConfig
from engine.evaluate import evaluate_accuracy
from engine.nets import ConvNet, reinit_


def build_teacher(meta: DatasetMeta, width: int) -> ConvNet:
    return ConvNet(meta.channels, meta.num_classes, meta.image_size, width=width)


def train_teacher(
    data_dir: str | Path,
    meta: DatasetMeta,
    cfg: TeacherConfig,
    seed: int,
    device: torch.device,
    resume: dict | None = None,
    on_step: Callable[[int, Callable[[], dict]], None] | None = None,
) -> tuple[ConvNet, float]:
    """SGD with a cosine schedule over `epochs`; returns the net and its test accuracy (%).
    on_step(step, state) after every step (the checkpoints); `resume` is such a state."""
    net = build_teacher(meta, cfg.width)
    reinit_(net, torch.Generator().manual_seed(seed))
    net.to(device)
    rank, world = distributed.world()
    if cfg.batch_size % world:
        raise ConfigError(f"teacher.batch_size={cfg.batch_size} does not split over {world} ranks")
    # each rank a slice of the same global batches; the summed gradients are the global ones
    loader = TrainLoader(
        data_dir, cfg.batch_size // world, seed=seed, device=device, rank=rank, world_size=world
    )
    opt = torch.optim.SGD(
        net.parameters(), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    total = max(1, cfg.epochs * len(loader))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    step, skip = 0, 0
    if resume:  # the order is keyed by (seed, epoch): back to the epoch, skip what it took
        net.load_state_dict(resume["net"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        step, position = resume["step"], resume["loader"]
        loader.epoch, skip = position["epoch"], position["batch"]
        checkpoint.set_rng_states(resume["rng"])

    def state() -> dict:
        return {
            "net": net.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "step": step,
            "loader": checkpoint.loader_position(step, len(loader)),
            "rng": checkpoint.rng_states(),
        }

    with progress_bar() as bar:
        task = bar.add_task("Teacher", total=total, completed=step)
        for _ in range(loader.epoch, cfg.epochs):
            for x, y in loader:
                if skip:
                    skip -= 1
                    continue
                loss = F.cross_entropy(net(x), y) / world
                opt.zero_grad(set_to_none=True)
                loss.backward()
                distributed.sum_gradients(net.parameters())
                opt.step()
                sched.step()
                bar.advance(task)
                step += 1
                if on_step:
                    on_step(step, state)
    return net.eval(), evaluate_accuracy(net, data_dir, device=device)


@torch.no_grad()
def class_embeddings(
    net: ConvNet, data_dir: str | Path, meta: DatasetMeta, device: torch.device
) -> torch.Tensor:
    """Per class, the mean over all its training images of the spatially pooled lowest-resolution
    feature map of the teacher: (classes, width). Ranks share the batches and sum."""
    net.eval()
    sums = torch.zeros(meta.num_classes, net.feature_channels, dtype=torch.float64, device=device)
    counts = torch.zeros(meta.num_classes, dtype=torch.float64, device=device)
    rank, world = distributed.world()
    mine = np.array_split(np.arange(meta.train_count), world)[rank]
    loader = TestLoader(data_dir, batch_size=1024, device=device, split="train", indices=mine)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("Class embeddings", total=len(loader))
        for x, y in loader:
            sums.index_add_(0, y, net.pooled_feature(x).double())
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            bar.advance(task)
    sums, counts = distributed.all_sum(sums), distributed.all_sum(counts)
    return (sums / counts.unsqueeze(1)).float().cpu()
