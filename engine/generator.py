"""The condensed format: a codebook Z (K x C) shared by all classes, and a class-conditional
generator G(z, proj(c(y))) whose output is an image normalised like the real data."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine import distributed


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training-mode statistics are those of the global batch, summed over
    ranks with a differentiable all-reduce (the gloo-capable stand-in for SyncBatchNorm, which
    refuses CPU tensors). One process: exactly nn.BatchNorm2d. Eval mode: running statistics,
    so each image depends on its own code and class only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.world()[1] > 1):
            return super().forward(x)
        n = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype, device=x.device)
        stats = distributed.sum_shared(
            torch.cat([x.sum((0, 2, 3)), x.square().sum((0, 2, 3)), n.detach()])
        )
        c = x.shape[1]
        count = stats[-1].detach()
        mean = stats[:c] / count
        var = (stats[c : 2 * c] / count - mean.square()).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var * count / (count - 1).clamp_min(1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
        scale = self.weight / (var + self.eps).sqrt()
        shift = self.bias - mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class Generator(nn.Module):
    """Input concat(z, proj(condition)) -> linear -> `blocks` x [2x upsample, (ReLU, conv3x3,
    BN) x 2] -> ReLU, conv3x3, tanh -> [0, 1] -> (x - mean) / std.

    3 blocks for images up to 32 px, 4 above. Sizes that are not a power of two (MNIST's 28)
    are generated at the next power of two and centre-cropped. In condensation and synthesis
    the BatchNorm layers run on their running statistics (eval mode), so an image depends on its
    own code and class only, never on the batch it is generated in."""

    def __init__(
        self,
        z_dim: int,
        cond_dim: int,
        proj_dim: int,
        channels: int,
        image_size: int,
        width: int,
        mean: list[float],
        std: list[float],
    ):
        super().__init__()
        self.z_dim, self.cond_dim, self.image_size = z_dim, cond_dim, image_size
        self.blocks_count = 3 if image_size <= 32 else 4
        self.gen_size = 2 ** math.ceil(math.log2(image_size))
        self.start = self.gen_size // 2**self.blocks_count
        if self.start < 1:
            raise ValueError(f"image size {image_size} too small for {self.blocks_count} blocks")
        chans = [width * 2 ** (self.blocks_count - i) for i in range(self.blocks_count)] + [width]
        self.project = nn.Linear(cond_dim, proj_dim)
        self.fc = nn.Linear(z_dim + proj_dim, chans[0] * self.start * self.start)
        self.bn0 = GlobalBatchNorm2d(chans[0])
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReLU(),
                nn.Conv2d(cin, cout, 3, padding=1),
                GlobalBatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                GlobalBatchNorm2d(cout),
            )
            for cin, cout in zip(chans[:-1], chans[1:], strict=True)
        )
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.project(condition)], dim=1))
        h = self.bn0(h.view(len(z), -1, self.start, self.start))
        for block in self.blocks:
            h = block(h)
        x = (self.out(h) + 1) / 2  # [0, 1]
        if self.gen_size != self.image_size:
            lo = (self.gen_size - self.image_size) // 2
            x = x[:, :, lo : lo + self.image_size, lo : lo + self.image_size]
        return (x - self.mean) / self.std


def init_codebook(ipc: int, z_dim: int, kind: str, truncation: float, seed: int) -> torch.Tensor:
    """K x C codes from N(0, 1); `truncated` redraws entries beyond +-truncation (the paper's
    "random with threshold" ablation)."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randn(ipc, z_dim, generator=gen)
    if kind == "truncated":
        while (bad := codes.abs() > truncation).any():
            codes[bad] = torch.randn(int(bad.sum()), generator=gen)
    return codes


CONDITION_NORMS = ("raw", "centred", "standardised")


def condition_table(kind: str, class_embeddings: torch.Tensor, norm: str = "raw") -> torch.Tensor:
    """The fixed per-class condition: the teacher's class embeddings, or one-hot labels.

    `norm` rescales class features over the classes before G's projection layer: `centred`
    subtracts the mean over classes, `standardised` also divides each channel by its std over
    classes (a channel constant over classes becomes 0). Both are affine maps that the
    projection layer could absorb, so G's function class is unchanged; what changes is that
    the class-to-class differences reach it at the scale of z rather than as a few percent of
    one shared vector. One-hot labels are left as they are."""
    if kind == "one_hot":
        return torch.eye(len(class_embeddings))
    if norm not in CONDITION_NORMS:
        raise ValueError(f"condition norm must be one of {', '.join(CONDITION_NORMS)}: {norm!r}")
    table = class_embeddings.double()
    if norm in ("centred", "standardised"):
        table = table - table.mean(0, keepdim=True)
    if norm == "standardised":
        std = table.std(0, correction=0, keepdim=True)
        table = torch.where(std > 1e-8 * table.abs().amax().clamp_min(1e-30), table / std, 0.0)
    return table.to(class_embeddings.dtype)


def generate(
    generator: Generator, codebook: torch.Tensor, conditions: torch.Tensor, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every code for every class in `classes`: images class-major (len(classes) * K) and labels."""
    k = len(codebook)
    z = codebook.repeat(len(classes), 1)
    cond = conditions[torch.as_tensor(classes, device=conditions.device)].repeat_interleave(k, 0)
    labels = torch.as_tensor(classes, device=codebook.device).repeat_interleave(k)
    return generator(z, cond), labels
