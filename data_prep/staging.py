"""Bounded-memory staging: fill a memory-mapped (N, H, W, C) uint8 .npy file in parallel.

Large sources (ImageNet-64 npz batches, image folders) are decoded by worker processes straight
into a memory map in the output's scratch folder, so resident memory stays near one chunk per
worker whatever the dataset size, and the beton writer then reads the map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from common.console import progress_bar


def create(path: Path, shape: tuple[int, ...]) -> None:
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape).flush()


def open_rw(path: Path) -> np.memmap:
    return np.load(path, mmap_mode="r+")


def run_parallel(
    tasks: Sequence[Any],
    work: Callable[[Any], int],
    total: int,
    workers: int,
    description: str,
) -> list[int]:
    """Run work(task) for each task in worker processes; each returns how many images it did.

    The first failure cancels the rest and is raised here (a DataError keeps its message)."""
    results: list[int] = [0] * len(tasks)
    with progress_bar() as bar, ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        task_id = bar.add_task(description, total=total)
        futures = {pool.submit(work, t): i for i, t in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                    results[futures[f]] = f.result()
                    bar.advance(task_id, f.result())
        except BaseException:  # a failure, Ctrl-C or a stop signal: start no queued task
            for p in pending:
                p.cancel()
            raise
    return results
