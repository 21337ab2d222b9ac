"""Downsampled ImageNet 64x64 npz batches: train_data_batch_{1..10}.npz and val_data.npz.

Each npz holds `data` (N, 3*S*S) uint8, channel-major rows, and `labels` 1..1000. The batches
(15.7 GB of pixels in all) are streamed member by member into memory-mapped staging files in
parallel, a chunk of rows at a time, so memory stays bounded whatever the number of batches.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError
from data_prep import staging
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split, integer_labels

NUM_CLASSES = 1000
ROWS_PER_CHUNK = 8192
_TRAIN = re.compile(r"train_data_batch_(\d+)\.npz$")


@dataclass
class NpzBatch:
    path: Path
    count: int
    image_size: int
    labels: np.ndarray  # 0-based


def _corrupt(path: Path, e: Exception) -> DataError:
    return DataError(f"{path}: not a readable npz batch (truncated or corrupt: {e})")


def _member(zf: zipfile.ZipFile, path: Path, key: str) -> zipfile.ZipExtFile:
    name = key + ".npy"
    if name not in zf.namelist():
        raise DataError(f"{path}: no '{key}' array (keys: {sorted(n[:-4] for n in zf.namelist())})")
    return zf.open(name)


def _header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def inspect(path: Path) -> NpzBatch:
    """Read a batch's labels and the shape of its data without loading the pixels."""
    try:
        with zipfile.ZipFile(path) as zf:
            with _member(zf, path, "data") as f:
                shape, fortran, dtype = _header(f)
            with _member(zf, path, "labels") as f:
                labels = np.asarray(np.lib.format.read_array(f))
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise _corrupt(path, e) from None
    side = int(round((shape[1] / 3) ** 0.5)) if len(shape) == 2 else 0
    if len(shape) != 2 or dtype != np.uint8 or fortran or 3 * side * side != shape[1]:
        raise DataError(
            f"{path}: 'data' must be (N, 3*S*S) uint8 in C order (N, 12288 for 64x64), "
            f"got {dtype} {tuple(shape)}"
        )
    labels = integer_labels(labels, path, shape[0])
    if len(labels) and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        bad = int(labels[(labels < 1) | (labels > NUM_CLASSES)][0])
        raise DataError(f"{path}: label {bad} out of range (expected 1..{NUM_CLASSES})")
    return NpzBatch(path, int(shape[0]), side, labels - 1)


def stage(task: tuple[Path, Path, int]) -> int:
    """Worker: stream one batch's pixels into its staging map as (N, S, S, 3)."""
    path, out, side = task
    images = staging.open_rw(out)
    try:
        with zipfile.ZipFile(path) as zf, _member(zf, path, "data") as f:
            _header(f)
            row_bytes = 3 * side * side
            done = 0
            while done < len(images):
                n = min(ROWS_PER_CHUNK, len(images) - done)
                buf = f.read(n * row_bytes)
                if len(buf) != n * row_bytes:
                    raise EOFError(f"data ends after {done + len(buf) // row_bytes} rows")
                chunk = np.frombuffer(buf, np.uint8).reshape(n, 3, side, side)
                images[done : done + n] = chunk.transpose(0, 2, 3, 1)
                done += n
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise _corrupt(path, e) from None
    images.flush()
    return len(images)


def _class_names(source: Path) -> list[str]:
    """Names from map_clsloc.txt (`wnid index name`) where the source has it, else indices."""
    names = [str(i) for i in range(NUM_CLASSES)]
    for mapping in source.rglob("map_clsloc.txt"):
        for line in mapping.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit() and 1 <= int(parts[1]) <= NUM_CLASSES:
                names[int(parts[1]) - 1] = parts[2]
        break
    return names


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    if not source.is_dir():
        raise DataError(f"{source}: not a folder holding train_data_batch_*.npz and val_data.npz")
    train_files = sorted(
        (p for p in source.rglob("train_data_batch_*.npz") if _TRAIN.search(p.name)),
        key=lambda p: int(_TRAIN.search(p.name).group(1)),  # type: ignore[union-attr]
    )
    if not train_files:
        raise DataError(f"{source}: missing train_data_batch_*.npz")
    val_files = sorted(source.rglob("val_data.npz"))
    if not val_files:
        raise DataError(f"{source}: missing val_data.npz")
    batches = [inspect(p) for p in train_files + val_files[:1]]
    side = batches[0].image_size
    for b in batches:
        if b.image_size != side:
            raise DataError(
                f"{b.path}: {b.image_size}x{b.image_size} images, but {batches[0].path} "
                f"holds {side}x{side}"
            )
    tasks, segments = [], []
    for i, b in enumerate(batches):
        out = workdir / f"imagenet_{i:02d}.npy"
        staging.create(out, (b.count, side, side, 3))
        tasks.append((b.path, out, side))
    staging.run_parallel(
        tasks, stage, sum(b.count for b in batches), options.workers, "Decompressing npz batches"
    )
    for b, (_, out, _) in zip(batches, tasks, strict=True):
        segments.append(Segment(np.load(out, mmap_mode="r"), b.labels, b.path))
    return RawDataset(
        dataset,
        _class_names(source),
        Split(segments[:-1]),
        Split(segments[-1:]),
        [b.path for b in batches],
    )
