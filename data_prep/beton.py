"""Write a Split to an FFCV .beton: fields `image` (NDArrayField uint8 H x W x C) and `label`."""

from __future__ import annotations

import ctypes
from multiprocessing import Process, Queue, Value
from pathlib import Path
from time import sleep

import numpy as np
from ffcv.fields import IntField, NDArrayField
from ffcv.writer import DatasetWriter, MemoryAllocator

from data_prep.splits import Split
from engine.console import progress_bar
from engine.errors import DataError


def beton_fields(image_shape: tuple[int, int, int]) -> dict:
    return {"image": NDArrayField(np.dtype("uint8"), tuple(image_shape)), "label": IntField()}


class _Writer(DatasetWriter):
    """FFCV's writer with a rich progress bar, and an error instead of a hang when a worker
    process dies (FFCV's own loop waits forever for the samples of a dead worker)."""

    description = "Writing beton"

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        self.num_samples = num_samples
        self.prepare()
        work: Queue = Queue()
        for todo in queue_content:
            work.put(todo)
        for _ in range(self.num_workers):
            work.put(None)
        allocations: Queue = Queue()
        done = Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        args = (work, self.metadata_sm, self.metadata_type, self.fields, allocator, done,
                allocations, *extra_worker_args)  # fmt: skip
        workers = [Process(target=work_fn, args=args) for _ in range(self.num_workers)]
        for p in workers:
            p.start()
        try:
            with progress_bar() as bar:
                task = bar.add_task(self.description, total=self.num_samples)
                while (count := done.value) != self.num_samples:
                    bar.update(task, completed=count)
                    failed = [p for p in workers if p.exitcode not in (None, 0)]
                    if failed:
                        raise DataError(
                            f"{self.fname}: a writer process died (exit code {failed[0].exitcode})"
                        )
                    sleep(0.05)
                bar.update(task, completed=count)
            allocation_list = []
            for _ in workers:
                allocation_list.extend(allocations.get())
            self.finalize(allocation_list)
        finally:
            for p in workers:
                if p.is_alive() and done.value != self.num_samples:
                    p.terminate()
                p.join()
            self.metadata_sm.close()
            self.metadata_sm.unlink()


def write_beton(path: Path, split: Split, workers: int, description: str) -> None:
    """Write split to `path` (the caller renames it into place once everything is complete)."""
    writer = _Writer(str(path), beton_fields(split.image_shape), num_workers=max(1, workers))
    writer.description = description
    chunk = max(64, min(4096, len(split) // (4 * writer.num_workers) + 1))
    writer.from_indexed_dataset(split, chunksize=chunk)
