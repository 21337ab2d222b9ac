"""Options of `gencond prep` that reach the readers and the writer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# dataset ids of `gencond prep` (the contract's names); data_prep.prepare maps each to a reader
DATASETS = (
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "imagefolder",
    "tiny-imagenet",
    "imagenet64",
)


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, a SLURM cpuset), not all the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(8, usable_cpus()))


@dataclass
class PrepOptions:
    workers: int = field(default_factory=default_workers)  # decoding and beton-writing processes
    image_size: int | None = (
        None  # imagefolder/tiny-imagenet: resize to this (default: first image)
    )
    force: bool = False  # replace an existing prepared dataset in the output folder
    # imagefolder/tiny-imagenet: keep only these class folders / wnids (labels in sorted order)
    classes: tuple[str, ...] | None = None
