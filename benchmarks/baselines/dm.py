"""DM: Distribution Matching (Zhao & Bilen, WACV 2023).

Every iteration draws a randomly initialised ConvNet; for each class the mean embedding of a
real batch and of the class's synthetic images are matched (squared Euclidean distance), both
through the same DSA transform; the sum over classes is minimised by SGD on the pixels.

Per-class losses touch disjoint rows of the pixel tensor, so classes are sharded over ranks:
each rank back-propagates its own classes (one class at a time, so memory does not grow with the
class count, unlike the reference code's single graph over every class) and the image gradients
are summed, which gives every rank the single-process gradient exactly (other rows are zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.baselines.base import (
    AUG_STREAM,
    REAL_STREAM,
    PixelCondenser,
    RealPool,
    SetShape,
    keyed_generator,
    siamese_pair,
)
from engine import distributed
from engine.augment import DiffAugment
from engine.losses import mean_embedding_gap


@dataclass
class DMConfig:
    """Defaults: DM's code (main_DM.py) and paper."""

    iterations: int = 20_000
    lr_img: float = 1.0  # DM: 1 for CIFAR-10/100 and Tiny-ImageNet (main_DM.py default)
    momentum: float = 0.5
    batch_real: int = 256
    init: str = "real"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    net_width: int = 128


class DistributionMatching(PixelCondenser):
    name = "dm"

    def __init__(
        self, shape: SetShape, cfg: DMConfig, seed: int = 0, device: str | torch.device = "cpu"
    ):
        super().__init__(shape, seed, cfg.net_width, device)
        self.cfg = cfg
        self.augment = DiffAugment(cfg.dsa_strategy, batch_mode=True)
        self.opt = torch.optim.SGD([self.images], lr=cfg.lr_img, momentum=cfg.momentum)

    def class_loss(self, net, iteration: int, cls: int, real: RealPool) -> torch.Tensor:
        """||mean embed(aug(real_c)) - mean embed(aug(syn_c))||^2 for one class."""
        x_real = real.sample(
            cls, self.cfg.batch_real, keyed_generator(self.seed, REAL_STREAM, iteration, cls)
        )
        pair = siamese_pair(self.seed, AUG_STREAM, iteration, cls)
        syn = self.images[self.rows(cls)]
        return mean_embedding_gap(net.embed, x_real.to(self.device), syn, self.augment, pair)

    def step(self, iteration: int, real: RealPool, classes: list[int] | None = None) -> dict:
        net = self.fresh_net(iteration)
        net.train()
        net.requires_grad_(False)
        self.zero_image_grad()
        total = 0.0
        for cls in self.my_classes(classes):
            loss = self.class_loss(net, iteration, cls, real)
            loss.backward()  # per class: the loss is a sum over classes with disjoint rows
            total += loss.item()
        distributed.sum_gradients([self.images])
        self.opt.step()
        return self.summed({"loss": total})
