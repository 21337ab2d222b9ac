"""FFCV traversal orders: world-size-invariant random batches and class-grouped associations.

FFCV 1.0.2 rejects a TraversalOrder subclass passed as `order=` (it checks an instance against
the class, then calls it), but it instantiates whatever ORDER_MAP holds under the key it is given.
`build_loader` registers a bound order under a one-off key for the loader's construction.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence

import numpy as np
from ffcv.loader import Loader
from ffcv.loader.loader import ORDER_MAP
from ffcv.traversal_order.base import TraversalOrder

ASSOCIATION_STREAM = 0xA550C  # keeps association draws apart from other uses of (seed, step)
SHUFFLE_STREAM = 0x5EED


def build_loader(order_cls: type[TraversalOrder], order_args: dict, **loader_kwargs) -> Loader:
    key = f"gencond-{order_cls.__name__}-{uuid.uuid4().hex}"
    ORDER_MAP[key] = functools.partial(order_cls, **order_args)
    try:
        return Loader(order=key, **loader_kwargs)
    finally:
        del ORDER_MAP[key]


class WorldSliceRandom(TraversalOrder):
    """A permutation keyed by (seed, epoch) only, cut into global batches of batch_size x world;
    rank r takes slice r of each. The union over ranks of batch j is the same set of images
    whatever the world size, which keeps training of phi world-size invariant."""

    def __init__(self, loader: Loader, rank: int, world_size: int):
        super().__init__(loader)
        self.rank, self.world_size = rank, world_size

    def sample_order(self, epoch: int) -> Sequence[int]:
        rng = np.random.default_rng([self.seed, SHUFFLE_STREAM, epoch])
        perm = self.indices[rng.permutation(len(self.indices))]
        per_rank = self.loader.batch_size
        global_batch = per_rank * self.world_size
        batches = len(perm) // global_batch
        if batches == 0:  # fewer images than one global batch: everyone gets a short batch
            return perm[self.rank :: self.world_size]
        grid = perm[: batches * global_batch].reshape(batches, self.world_size, per_rank)
        return grid[:, self.rank].reshape(-1)


def association_indices(
    class_index: np.ndarray,
    offsets: np.ndarray,
    seed: int,
    step: int,
    classes: Sequence[int],
    n_per_class: int,
) -> np.ndarray:
    """n_per_class training indices for each class, class-major, from a random stream keyed by
    (seed, step, class) alone: any rank asking for a class at a step gets the same images.
    Drawn without replacement when the class has enough images, with replacement otherwise."""
    out = np.empty(len(classes) * n_per_class, dtype=np.int64)
    for i, c in enumerate(classes):
        members = class_index[offsets[c] : offsets[c + 1]]
        rng = np.random.default_rng([seed, ASSOCIATION_STREAM, step, int(c)])
        if n_per_class <= len(members):
            pick = rng.choice(len(members), n_per_class, replace=False)
        else:
            pick = rng.integers(0, len(members), n_per_class)
        out[i * n_per_class : (i + 1) * n_per_class] = members[pick]
    return out


class ClassGrouped(TraversalOrder):
    """Yields one batch per step: the associations of that step's classes, for a window of
    steps at a time. `request(first_step, count)` sets the window before each pass."""

    def __init__(
        self,
        loader: Loader,
        class_index: np.ndarray,
        offsets: np.ndarray,
        n_per_class: int,
        window: int,
    ):
        super().__init__(loader)
        self.class_index, self.offsets = class_index, offsets
        self.n_per_class, self.window = n_per_class, window
        self.schedule: Callable[[int], Sequence[int]] | None = None
        self.first_step, self.count = 0, window

    def request(self, schedule: Callable[[int], Sequence[int]], first_step: int, count: int):
        self.schedule, self.first_step, self.count = schedule, first_step, min(count, self.window)

    def sample_order(self, epoch: int) -> Sequence[int]:
        if self.schedule is None:  # at construction FFCV sizes the loader from this length
            return np.zeros(self.window * self.loader.batch_size, dtype=np.int64)
        parts = [
            association_indices(
                self.class_index,
                self.offsets,
                self.seed,
                step,
                self.schedule(step),
                self.n_per_class,
            )
            for step in range(self.first_step, self.first_step + self.count)
        ]
        return np.concatenate(parts)
