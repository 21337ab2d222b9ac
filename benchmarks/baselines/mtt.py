"""MTT: Matching Training Trajectories (Cazenavette et al., CVPR 2022), and TESLA's
constant-memory gradient (Cui et al., ICML 2023) as an option.

Experts: ConvNets trained on the real data (SGD, lr_teacher, DSA), their flattened parameters
saved after every epoch. One distillation step: pick an expert and a start epoch t below
max_start_epoch; a student starting at theta_t takes `syn_steps` SGD steps on minibatches of the
synthetic set with a learnable learning rate; the loss is
||theta_N - theta*_{t+M}||^2 / ||theta_t - theta*_{t+M}||^2 (M = expert_epochs), minimised over
the pixels (lr_img) and the learning rate (lr_lr).

`constant_memory=False` (MTT) back-propagates through the unrolled steps: memory grows with
syn_steps. `constant_memory=True` (TESLA) runs the steps twice: once without a graph to get
theta_N, then once more, back-propagating dL/dtheta_N through each step's own gradient
g_i(theta_i, X_i) with theta_i held constant (one step's graph alive at a time), so memory does
not grow with syn_steps; the terms through later steps' Hessians are not propagated. With
syn_steps = 1 the two gradients are identical (tested).

Not class-separable: a student step mixes every class of its minibatch, so MTT runs whole on
each rank (no class sharding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from benchmarks.baselines.base import (
    AUG_STREAM,
    BATCH_STREAM,
    PixelCondenser,
    RealPool,
    SetShape,
    TensorPool,
    keyed_generator,
)
from engine.augment import DiffAugment
from engine.nets import ConvNet

EXPERT_STREAM = 17


@dataclass
class MTTConfig:
    """Defaults: MTT's code (distill.py / buffer.py); per-dataset values in presets.py."""

    iterations: int = 5000
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01  # expert SGD rate and the learnable rate's start
    batch_syn: int = 0  # 0: the whole synthetic set per student step
    momentum: float = 0.5
    constant_memory: bool = False  # True: TESLA
    init: str = "real"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    net_width: int = 128
    # experts (buffer.py): num_experts x train_epochs, SGD without momentum
    num_experts: int = 100
    train_epochs: int = 50
    batch_train: int = 256
    expert_images: int = 0  # 0: the whole training set per expert epoch (CPU presets: a subset)


class FlatNet:
    """A ConvNet evaluated at a flat parameter vector (MTT's student)."""

    def __init__(self, net: ConvNet):
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = theta.split(self.sizes)
        params = {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}
        return functional_call(self.net, params, (x,))


def train_experts(
    pool: TensorPool,
    shape: SetShape,
    cfg: MTTConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[list[torch.Tensor]]:
    """cfg.num_experts trajectories of cfg.train_epochs + 1 flat parameter vectors (MTT's
    buffer.py: SGD lr_teacher, no momentum, DSA on every batch)."""
    augment = DiffAugment(cfg.dsa_strategy, batch_mode=False)
    probe = PixelCondenser(
        SetShape(shape.num_classes, 1, shape.channels, shape.image_size),
        seed,
        cfg.net_width,
        device,
    )
    trajectories = []
    for e in range(cfg.num_experts):
        net = probe.fresh_net(EXPERT_STREAM, e)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr_teacher)
        flat = FlatNet(net)
        trajectory = [flat.flat().cpu()]
        for epoch in range(cfg.train_epochs):
            gen = keyed_generator(seed, EXPERT_STREAM, e, epoch)
            seen = 0
            for x, y in pool.batches(cfg.batch_train, gen):
                loss = F.cross_entropy(net(augment(x.to(device), gen)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
                if cfg.expert_images and seen >= cfg.expert_images:
                    break
            trajectory.append(flat.flat().cpu())
        trajectories.append(trajectory)
    return trajectories


def random_trajectories(shape: SetShape, cfg: MTTConfig, seed: int = 0) -> list[list[torch.Tensor]]:
    """Stand-in experts for timing (speed does not depend on the values): one trajectory of
    independently initialised parameter vectors."""
    probe = PixelCondenser(
        SetShape(shape.num_classes, 1, shape.channels, shape.image_size), seed, cfg.net_width
    )
    epochs = cfg.max_start_epoch + cfg.expert_epochs + 1
    return [[FlatNet(probe.fresh_net(EXPERT_STREAM, 0, k)).flat() for k in range(epochs)]]


class TrajectoryMatching(PixelCondenser):
    def __init__(
        self,
        shape: SetShape,
        cfg: MTTConfig,
        trajectories: list[list[torch.Tensor]],
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        super().__init__(shape, seed, cfg.net_width, device)
        self.cfg = cfg
        self.name = "tesla" if cfg.constant_memory else "mtt"
        self.trajectories = trajectories
        if len(trajectories[0]) < cfg.expert_epochs + 2:
            from common.errors import ConfigError

            raise ConfigError(
                f"experts of {len(trajectories[0]) - 1} epochs are too short for "
                f"expert_epochs={cfg.expert_epochs}"
            )
        self.syn_lr = torch.tensor(cfg.lr_teacher, device=self.device, requires_grad=True)
        self.augment = DiffAugment(cfg.dsa_strategy, batch_mode=False)
        self.opt = torch.optim.SGD([self.images], lr=cfg.lr_img, momentum=cfg.momentum)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=cfg.lr_lr, momentum=cfg.momentum)
        self.student = FlatNet(self.fresh_net(0))

    @property
    def params(self) -> int:
        return self.images.numel() + 1  # the learned learning rate

    @property
    def bytes(self) -> int:
        return super().bytes + 4

    def plan(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Start and target parameters and the syn_steps minibatch indices of one step."""
        gen = keyed_generator(self.seed, BATCH_STREAM, iteration)
        traj = self.trajectories[int(torch.randint(len(self.trajectories), (1,), generator=gen))]
        last_start = min(self.cfg.max_start_epoch, len(traj) - 1 - self.cfg.expert_epochs)
        start = int(torch.randint(last_start, (1,), generator=gen))
        n = len(self.labels)
        batch = self.cfg.batch_syn or n
        order = torch.cat(
            [torch.randperm(n, generator=gen) for _ in range(-(-self.cfg.syn_steps * batch // n))]
        )
        batches = list(order.split(batch))[: self.cfg.syn_steps]
        end = start + self.cfg.expert_epochs
        return traj[start].to(self.device), traj[end].to(self.device), batches

    def _student_grad(self, theta, idx, iteration, i, create_graph):
        x = self.augment(self.images[idx], keyed_generator(self.seed, AUG_STREAM, iteration, i))
        loss = F.cross_entropy(self.student(theta, x), self.labels[idx])
        return torch.autograd.grad(loss, theta, create_graph=create_graph)[0]

    def step(
        self, iteration: int, real: RealPool | None = None, classes: list[int] | None = None
    ) -> dict:
        theta0, target, batches = self.plan(iteration)
        denom = (theta0 - target).square().sum()
        self.opt.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        if self.cfg.constant_memory:
            loss = self._constant_memory_backward(theta0, target, denom, batches, iteration)
        else:
            theta = theta0.clone().requires_grad_(True)
            for i, idx in enumerate(batches):
                theta = theta - self.syn_lr * self._student_grad(theta, idx, iteration, i, True)
            loss_t = (theta - target).square().sum() / denom
            loss_t.backward()
            loss = loss_t.item()
        self.opt.step()
        self.opt_lr.step()
        return {"loss": loss, "syn_lr": self.syn_lr.item()}

    def _constant_memory_backward(self, theta0, target, denom, batches, iteration) -> float:
        theta = theta0.clone()
        for i, idx in enumerate(batches):  # pass 1: theta_N, no graph kept
            leaf = theta.requires_grad_(True)
            theta = (
                leaf - self.syn_lr.detach() * self._student_grad(leaf, idx, iteration, i, False)
            ).detach()
        loss = float((theta - target).square().sum() / denom)
        upstream = 2 * (theta - target) / denom  # dL/dtheta_N
        theta = theta0.clone()
        for i, idx in enumerate(batches):  # pass 2: one step's graph at a time
            leaf = theta.requires_grad_(True)
            grad = self._student_grad(leaf, idx, iteration, i, True)
            (-(self.syn_lr * (grad * upstream).sum())).backward(inputs=[self.images, self.syn_lr])
            theta = (leaf - self.syn_lr.detach() * grad).detach()
            # backward(inputs=...) skips the graph's branch towards theta: its saved activations
            # live as long as `grad` does, so drop it before the next step builds its own
            del grad, leaf
        return loss
