"""Write a Split to an FFCV .beton: fields `image` (NDArrayField uint8 H x W x C) and `label`."""

from __future__ import annotations

import ctypes
import math
import queue
import signal
import sys
import time
from multiprocessing import Process, Queue, Value
from pathlib import Path

import numpy as np
from ffcv.fields import IntField, NDArrayField
from ffcv.writer import DatasetWriter, MemoryAllocator

from common import fsio
from common.console import progress_bar
from common.errors import DataError
from data_prep.splits import Split

PAGE_SIZE = 1 << 23  # FFCV's default (4 x 2 MiB): every worker writes whole pages
ALLOC_ENTRY = 24  # bytes per sample in the allocation table (id, pointer, size)
POLL_S = 0.05
REPORT_GRACE_S = 30.0  # a worker that exited cleanly has this long to deliver its allocations


def beton_fields(image_shape: tuple[int, int, int]) -> dict:
    return {"image": NDArrayField(np.dtype("uint8"), tuple(image_shape)), "label": IntField()}


def beton_bytes(count: int, image_shape: tuple[int, ...], workers: int) -> int:
    """An upper estimate of the file FFCV writes: header and metadata rounded up to a page,
    the pixels in pages (a sample never straddles two; each worker's last page is written
    whole), the allocation table."""
    sample = int(np.prod(image_shape))
    per_page = max(1, PAGE_SIZE // max(1, sample))
    data_pages = math.ceil(count / per_page) + max(1, workers) - 1
    pages = math.ceil((256 + 32 * count) / PAGE_SIZE) + data_pages
    return pages * PAGE_SIZE + ALLOC_ENTRY * count


def _guarded(work_fn, errors: Queue, *args) -> None:
    """A writer worker that reports its exception (errno, text) instead of printing a traceback,
    then exits with status 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what to do
    try:
        work_fn(*args)
    except BaseException as e:  # noqa: BLE001  (reported to the main process, which raises)
        errors.put((getattr(e, "errno", None), f"{type(e).__name__}: {e}"))
        errors.close()
        errors.join_thread()
        sys.exit(1)


class _Writer(DatasetWriter):
    """FFCV's writer with a rich progress bar, and an error instead of a hang when a worker
    process dies or fails (FFCV's own loop waits forever for the samples or the allocation
    table of a dead worker, e.g. one that hit a full disk on its last page)."""

    description = "Writing beton"

    def _failure(self, workers: list[Process], errors: Queue) -> DataError | None:
        where = fsio.shown(self.fname)
        try:
            code, text = errors.get_nowait()
        except queue.Empty:
            failed = [p for p in workers if p.exitcode not in (None, 0)]
            if not failed:
                return None
            code, text = None, ""
            exitcode = failed[0].exitcode
            if exitcode < 0:
                name = signal.Signals(-exitcode).name
                text = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
                return DataError(f"{where}: a writer process died ({text})")
            return DataError(f"{where}: a writer process died (exit code {exitcode})")
        if code in fsio.FULL:
            need = beton_bytes(self.num_samples, self.image_shape, self.num_workers)
            free = fsio.free_bytes(Path(self.fname).parent)
            return DataError(
                f"{where}: no space left on device while writing the beton "
                f"(needs about {fsio.human(need)}, {fsio.human(free)} free)"
            )
        return DataError(f"{where}: a writer process failed ({text})")

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        self.num_samples = num_samples
        self.prepare()
        work: Queue = Queue()
        for todo in queue_content:
            work.put(todo)
        for _ in range(self.num_workers):
            work.put(None)
        allocations: Queue = Queue()
        errors: Queue = Queue()
        done = Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        args = (
            work,
            self.metadata_sm,
            self.metadata_type,
            self.fields,
            allocator,
            done,
            allocations,
            *extra_worker_args,
        )
        workers = [
            Process(target=_guarded, args=(work_fn, errors, *args)) for _ in range(self.num_workers)
        ]
        for p in workers:
            p.start()
        finished = False
        try:
            with progress_bar() as bar:
                task = bar.add_task(self.description, total=self.num_samples)
                while (count := done.value) != self.num_samples:
                    bar.update(task, completed=count)
                    if (error := self._failure(workers, errors)) is not None:
                        raise error
                    time.sleep(POLL_S)
                bar.update(task, completed=count)
            allocation_list = []
            received, deadline = 0, None
            while received < len(workers):  # each worker sends its table after its last page
                try:
                    allocation_list.extend(allocations.get(timeout=POLL_S))
                    received += 1
                    continue
                except queue.Empty:
                    pass
                if (error := self._failure(workers, errors)) is not None:
                    raise error
                if all(p.exitcode is not None for p in workers):
                    deadline = deadline or time.monotonic() + REPORT_GRACE_S
                    if time.monotonic() > deadline:
                        raise DataError(
                            f"{fsio.shown(self.fname)}: a writer process ended without "
                            "reporting its allocations"
                        )
            self.finalize(allocation_list)
            finished = True
        finally:
            for p in workers:
                if p.is_alive() and not finished:
                    p.terminate()
                p.join()
            self.metadata_sm.close()
            self.metadata_sm.unlink()


def write_beton(path: Path, split: Split, workers: int, description: str) -> None:
    """Write split to `path` (the caller renames it into place once everything is complete).
    Refuses at once when the disk cannot hold it; removes the partial file on any failure."""
    path = Path(path)
    workers = max(1, workers)
    fsio.check_space(path.parent, beton_bytes(len(split), split.image_shape, workers), path.name)
    writer = _Writer(str(path), beton_fields(split.image_shape), num_workers=workers)
    writer.description = description
    writer.image_shape = split.image_shape
    chunk = max(64, min(4096, len(split) // (4 * writer.num_workers) + 1))
    try:
        writer.from_indexed_dataset(split, chunksize=chunk)
    except BaseException as e:
        path.unlink(missing_ok=True)
        mapped = fsio.disk_error(e, path, beton_bytes(len(split), split.image_shape, workers))
        if mapped is not None:
            raise mapped from None
        raise
