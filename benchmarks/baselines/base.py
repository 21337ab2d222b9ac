"""What every pixel baseline shares: the learnable image tensor, its labels, the real-data
pools it samples from, keyed random streams, and the class split over ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from common.errors import ConfigError
from engine import distributed
from engine.nets import ConvNet, reinit_


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints (seed, stream, iteration, class, ...): the
    same key gives the same draws on every rank, whatever the rank owns."""
    state = np.random.SeedSequence([int(k) & (2**63 - 1) for k in key]).generate_state(2)
    return torch.Generator().manual_seed((int(state[0]) << 31 ^ int(state[1])) & (2**63 - 1))


@dataclass(frozen=True)
class SetShape:
    """The dataset shape a baseline condenses: classes, images per class, image geometry."""

    num_classes: int
    ipc: int
    channels: int
    image_size: int

    def __post_init__(self) -> None:
        for name in ("num_classes", "ipc", "channels", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


class RealPool(Protocol):
    """Real training images of one dataset, normalised float NCHW, drawn per class."""

    def sample(self, cls: int, n: int, generator: torch.Generator) -> torch.Tensor: ...


class TensorPool:
    """Real images held in memory; `sample` draws n distinct images of a class (all of them,
    in a random order, when the class has fewer)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels.long()
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels)
        self.by_class = list(torch.split(order, counts.tolist()))

    def sample(self, cls: int, n: int, generator: torch.Generator) -> torch.Tensor:
        members = self.by_class[cls]
        pick = members[torch.randperm(len(members), generator=generator)[:n]]
        return self.images[pick]

    def batches(self, batch_size: int, generator: torch.Generator):
        """One shuffled epoch of (images, labels) batches."""
        order = torch.randperm(len(self.labels), generator=generator)
        for idx in order.split(batch_size):
            yield self.images[idx], self.labels[idx]


class NoisePool:
    """Stand-in real data for timing: N(0, 1) images made on demand (speed does not depend on
    pixel values)."""

    def __init__(self, channels: int, image_size: int, device: str | torch.device = "cpu"):
        self.shape = (channels, image_size, image_size)
        self.device = torch.device(device)

    def sample(self, cls: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, *self.shape, generator=generator).to(self.device)


# independent random streams of a baseline run
NET_STREAM, REAL_STREAM, AUG_STREAM, INIT_STREAM, BATCH_STREAM = range(5)


class PixelCondenser:
    """A learnable (classes x IPC, C, H, W) pixel tensor, class-major, and the ConvNet the
    method matches through. Subclasses implement `step`."""

    name = "pixels"

    def __init__(
        self,
        shape: SetShape,
        seed: int = 0,
        net_width: int = 128,
        device: str | torch.device = "cpu",
    ):
        self.shape, self.seed, self.net_width = shape, seed, net_width
        self.device = torch.device(device)
        n = shape.num_classes * shape.ipc
        self.images = nn.Parameter(
            torch.empty(n, shape.channels, shape.image_size, shape.image_size, device=self.device)
        )
        self.labels = torch.arange(shape.num_classes, device=self.device).repeat_interleave(
            shape.ipc
        )

    @property
    def params(self) -> int:
        """Learnable parameters of the condensed result."""
        return self.images.numel()

    @property
    def bytes(self) -> int:
        """Bytes of the condensed result (float32 pixels, plus any learned scalars)."""
        return self.images.numel() * self.images.element_size()

    def rows(self, cls: int) -> slice:
        return slice(cls * self.shape.ipc, (cls + 1) * self.shape.ipc)

    @torch.no_grad()
    def init_from(self, real: RealPool, how: str = "real") -> None:
        """Each class's images from `ipc` random real images of it ('real') or N(0, 1)."""
        for c in range(self.shape.num_classes):
            g = keyed_generator(self.seed, INIT_STREAM, c)
            if how == "real":
                self.images[self.rows(c)] = real.sample(c, self.shape.ipc, g).to(self.device)
            elif how == "noise":
                self.images[self.rows(c)] = torch.randn(
                    self.images[self.rows(c)].shape, generator=g
                ).to(self.device)
            else:
                raise ConfigError(f"init must be real or noise, not {how!r}")

    def fresh_net(self, *key: int) -> ConvNet:
        """A ConvNet initialised from the keyed stream (the same on every rank)."""
        s = self.shape
        with torch.random.fork_rng(devices=[]):
            net = ConvNet(s.channels, s.num_classes, s.image_size, width=self.net_width)
        reinit_(net, keyed_generator(self.seed, NET_STREAM, *key))
        return net.to(self.device)

    def my_classes(self, classes: list[int] | None) -> list[int]:
        """This rank's block of the step's classes (every class when None)."""
        everything = list(range(self.shape.num_classes)) if classes is None else list(classes)
        rank, world = distributed.world()
        return distributed.my_share(everything, rank, world)

    def zero_image_grad(self) -> None:
        """A zero gradient on every row, so every rank joins the gradient all-reduce."""
        self.images.grad = torch.zeros_like(self.images)

    def step(self, iteration: int, real: RealPool, classes: list[int] | None = None) -> dict:
        raise NotImplementedError

    @staticmethod
    def summed(record: dict[str, float]) -> dict[str, float]:
        """Per-rank partial losses summed over ranks (the single-process values)."""
        keys = list(record)
        total = distributed.all_sum(torch.tensor([record[k] for k in keys], dtype=torch.float64))
        return dict(zip(keys, total.tolist(), strict=True))


def siamese_pair(*key: int) -> tuple[torch.Generator, torch.Generator]:
    """Two generators in the same state: the same DSA transform on real and synthetic images."""
    state = keyed_generator(*key).get_state()
    a, b = torch.Generator(), torch.Generator()
    a.set_state(state)
    b.set_state(state)
    return a, b
