"""Which classes each condensation step visits and which of them each rank takes: one object,
built once per run (engine.stages.run_condense), read by the preflight, the loop and the
association loader."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from common.errors import ConfigError
from engine import distributed
from engine.config import CondenseConfig


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class StepClasses:
    """One step's classes (every rank's, sorted) and this rank's contiguous block of them."""

    step: int
    classes: list[int]
    mine: list[int]


class ClassPlan:
    """A sweep visits every class once in `sweep_steps` steps: all classes every step
    (classes_per_step 0 or >= the class count), else ceil(classes / classes_per_step) near-equal
    blocks of a permutation of the classes redrawn every sweep (keyed by (seed, sweep)). Each
    rank takes a contiguous block of a step's classes (distributed.my_share)."""

    CACHED_STEPS = 256  # the loader asks a window of steps ahead; the loop reads behind it

    def __init__(
        self, num_classes: int, classes_per_step: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        self.num_classes, self.seed = num_classes, seed
        self.rank, self.world_size = rank, world_size
        k = classes_per_step
        self.sweep_steps = 1 if k <= 0 or k >= num_classes else ceil_div(num_classes, k)
        self.largest = ceil_div(num_classes, self.sweep_steps)  # classes of the largest step
        self.smallest = num_classes // self.sweep_steps
        self.largest_share = ceil_div(self.largest, world_size)  # one rank's, at most
        self._steps: OrderedDict[int, StepClasses] = OrderedDict()

    @classmethod
    def of(
        cls, c: CondenseConfig, num_classes: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> ClassPlan:
        return cls(num_classes, c.classes_per_step, seed, rank, world_size)

    def check_split(self) -> None:
        """Every rank needs at least one class of every step."""
        if self.world_size > self.smallest:
            raise ConfigError(
                f"{self.world_size} ranks but only {self.smallest} classes per step: every rank "
                f"needs at least one class (lower the rank count or raise "
                f"condense.classes_per_step)"
            )

    def at(self, step: int) -> StepClasses:
        """The classes of `step`, drawn once (kept for the last CACHED_STEPS steps asked)."""
        if step not in self._steps:
            classes = self._draw(step)
            mine = distributed.my_share(classes, self.rank, self.world_size)
            self._steps[step] = StepClasses(step, classes, mine)
            if len(self._steps) > self.CACHED_STEPS:
                self._steps.popitem(last=False)
        return self._steps[step]

    def mine(self, step: int) -> list[int]:
        """This rank's classes of `step` (what its association loader streams)."""
        return self.at(step).mine

    def _draw(self, step: int) -> list[int]:
        if self.sweep_steps <= 1:
            return list(range(self.num_classes))
        sweep, block = divmod(step, self.sweep_steps)
        perm = torch.randperm(
            self.num_classes, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + sweep)
        )
        return sorted(torch.tensor_split(perm, self.sweep_steps)[block].tolist())
