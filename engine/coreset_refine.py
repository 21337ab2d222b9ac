"""DM refinement of the coreset before G is fitted to it (`condense.coreset_refine_updates`).

DM's own loop (Zhao & Bilen 2023, main_DM.py) on the coreset's pixels: every update draws a
freshly initialised ConvNet; for each class the mean embedding of a batch of its real images
and the mean embedding of its coreset images, both through the same DSA transform, are matched
(squared Euclidean distance, summed over classes) and the pixels take one SGD step (momentum
0.5). Classes are split over ranks; a class's loss touches only its own rows, so the summed
image gradients are the one-process gradient. Every random draw is keyed by (seed, update,
class), so the result does not depend on the number of ranks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from common.console import log, progress_bar
from data_prep.loaders import ClassGroupedLoader
from data_prep.meta import DatasetMeta
from engine import distributed
from engine.augment import DiffAugment
from engine.config import RunConfig
from engine.losses import mean_embedding_gap
from engine.nets import ConvNet, reinit_
from engine.step import keyed_generator

REFINE_MOMENTUM = 0.5  # DM's (main_DM.py)
REAL_STREAM, NET_STREAM, AUG_STREAM = 0x5EA1, 0x5E7, 0x5A6


def _fresh_net(meta: DatasetMeta, width: int, seed: int, update: int, device) -> ConvNet:
    with torch.random.fork_rng(devices=[]):
        net = ConvNet(meta.channels, meta.num_classes, meta.image_size, width=width)
    reinit_(net, keyed_generator(seed, NET_STREAM, update))
    return net.to(device).train().requires_grad_(False)


def refine_coreset(
    images: torch.Tensor,
    *,
    cfg: RunConfig,
    meta: DatasetMeta,
    data_dir: str | Path,
    mine: list[int],
) -> torch.Tensor:
    """`images` (class-major, K per class, normalised) after condense.coreset_refine_updates DM
    updates, on every rank; `mine` are this rank's classes."""
    c = cfg.condense
    updates, K = c.coreset_refine_updates, c.ipc
    if updates == 0:
        return images
    x = torch.nn.Parameter(images.detach().clone())
    opt = torch.optim.SGD([x], lr=c.coreset_refine_lr, momentum=REFINE_MOMENTUM)
    augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
    B = c.coreset_refine_batch
    real = (
        ClassGroupedLoader(data_dir, B, cfg.seed + REAL_STREAM, x.device).iterate(
            lambda _: mine, 0, updates
        )
        if mine
        else None
    )
    with progress_bar() as bar:
        task = bar.add_task("Refining the coreset with DM", total=updates)
        for update in range(updates):
            net = _fresh_net(meta, c.coreset_refine_width, cfg.seed, update, x.device)
            x.grad = torch.zeros_like(x)  # every rank joins the all-reduce
            batch = next(real)[1] if real is not None else None
            for i, cls in enumerate(mine):
                pair = (keyed_generator(cfg.seed, AUG_STREAM, update, cls) for _ in range(2))
                real_c, syn_c = batch[i * B : (i + 1) * B], x[cls * K : (cls + 1) * K]
                mean_embedding_gap(net.embed, real_c, syn_c, augment, tuple(pair)).backward()
            distributed.sum_gradients([x])
            opt.step()
            bar.advance(task)
    log(f"Refined the coreset with {updates} DM updates")
    return x.detach()
