"""DC (Zhao, Mopuri & Bilen, ICLR 2021) and DSA (Zhao & Bilen, ICML 2021): gradient matching.

One `step` is one of DC's outer-loop iterations: for each class, the gradient of the
cross-entropy of a real batch and of the class's synthetic images with respect to the
network's weights are matched (DC's layer-wise distance: per output unit, 1 - cosine; biases and
norm weights are left out), the pixels take one SGD step, then the network trains `inner_loop`
epochs on the synthetic set. A fresh network is drawn every `outer_loop` steps. DSA is DC plus
the same differentiable augmentation on both sides (siamese), also when training the network.

Per-class matching losses touch disjoint rows: classes are sharded over ranks as in DM (each
rank back-propagates its own classes, image gradients are summed). The network's training on
the synthetic set is replicated on every rank (the synthetic set is the same everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.baselines.base import (
    AUG_STREAM,
    BATCH_STREAM,
    REAL_STREAM,
    PixelCondenser,
    RealPool,
    SetShape,
    keyed_generator,
    siamese_pair,
)
from engine import distributed
from engine.augment import DiffAugment

# DC's get_loops(ipc): (outer_loop, inner_loop)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def dc_loops(ipc: int) -> tuple[int, int]:
    """DC's (outer_loop, inner_loop) for an IPC; IPCs DC does not list take the next listed."""
    for listed in sorted(DC_LOOPS):
        if ipc <= listed:
            return DC_LOOPS[listed]
    return DC_LOOPS[50]


@dataclass
class GradientMatchingConfig:
    """Defaults: DC/DSA's code (main.py) and papers."""

    iterations: int = 1000  # outer iterations, each of outer_loop image updates
    siamese_augment: bool = True  # True: DSA; False: DC
    lr_img: float = 0.1
    momentum: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    outer_loop: int = 0  # 0: DC's table for the IPC
    inner_loop: int = 0
    init: str = "real"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    net_width: int = 128


def matching_distance(
    grads_real: list[torch.Tensor], grads_syn: list[torch.Tensor]
) -> torch.Tensor:
    """DC's distance: sum over layers and output units of 1 - cos(g_real, g_syn), each unit's
    gradient flattened over its inputs (conv: in x kh x kw); 1-d parameters are skipped."""
    total = grads_syn[0].new_zeros(())
    for gr, gs in zip(grads_real, grads_syn, strict=True):
        if gs.dim() == 1:
            continue
        gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
        cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


class GradientMatching(PixelCondenser):
    def __init__(
        self,
        shape: SetShape,
        cfg: GradientMatchingConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        super().__init__(shape, seed, cfg.net_width, device)
        self.cfg = cfg
        self.name = "dsa" if cfg.siamese_augment else "dc"
        outer, inner = dc_loops(shape.ipc)
        self.outer_loop, self.inner_loop = cfg.outer_loop or outer, cfg.inner_loop or inner
        self.augment = DiffAugment(
            cfg.dsa_strategy if cfg.siamese_augment else "none", batch_mode=True
        )
        self.opt = torch.optim.SGD([self.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.net, self.net_opt = None, None

    def class_loss(self, iteration: int, cls: int, real: RealPool) -> torch.Tensor:
        net, params = self.net, list(self.net.parameters())
        x_real = real.sample(
            cls, self.cfg.batch_real, keyed_generator(self.seed, REAL_STREAM, iteration, cls)
        )
        y = torch.full((len(x_real),), cls, device=self.device)
        g_real, g_syn = siamese_pair(self.seed, AUG_STREAM, iteration, cls)
        loss_real = F.cross_entropy(net(self.augment(x_real.to(self.device), g_real)), y)
        grads_real = [g.detach() for g in torch.autograd.grad(loss_real, params)]
        syn = self.images[self.rows(cls)]
        y_syn = torch.full((len(syn),), cls, device=self.device)
        loss_syn = F.cross_entropy(net(self.augment(syn, g_syn)), y_syn)
        grads_syn = torch.autograd.grad(loss_syn, params, create_graph=True)
        return matching_distance(grads_real, grads_syn)

    def match(self, iteration: int, real: RealPool, classes: list[int] | None) -> float:
        """One image update: every class's matching loss, gradients summed over ranks."""
        self.zero_image_grad()
        total = 0.0
        for cls in self.my_classes(classes):
            loss = self.class_loss(iteration, cls, real)
            loss.backward(inputs=[self.images])
            total += loss.item()
        distributed.sum_gradients([self.images])
        self.opt.step()
        return total

    def train_net(self, iteration: int, epochs: int, max_batches: int = 0) -> None:
        """`epochs` passes of the network over the (augmented) synthetic set (at most
        `max_batches` minibatches in all when > 0: the benchmarks time a few)."""
        gen = keyed_generator(self.seed, BATCH_STREAM, iteration)
        x_all, y_all = self.images.detach(), self.labels
        done = 0
        for _ in range(epochs):
            order = torch.randperm(len(y_all), generator=gen).to(self.device)
            for idx in order.split(self.cfg.batch_train):
                if max_batches and done >= max_batches:
                    return
                done += 1
                x = self.augment(x_all[idx], gen)
                loss = F.cross_entropy(self.net(x), y_all[idx])
                self.net_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.net_opt.step()

    def step(self, iteration: int, real: RealPool, classes: list[int] | None = None) -> dict:
        """Image update number `iteration` (DC: iteration // outer_loop is the outer iteration)."""
        outer, ol = divmod(iteration, self.outer_loop)
        if ol == 0 or self.net is None:
            self.net = self.fresh_net(outer)
            self.net.train()
            self.net_opt = torch.optim.SGD(self.net.parameters(), lr=self.cfg.lr_net)
        record = self.summed({"loss": self.match(iteration, real, classes)})
        if ol != self.outer_loop - 1:  # DC trains the net between image updates, not after the last
            self.train_net(iteration, self.inner_loop)
        return record
