"""`gencond prep`: raw dataset -> DIR/train.beton, DIR/test.beton, DIR/meta.json.

Everything is written under temporary names and renamed into place only when both betons are
complete; meta.json, written last, marks the folder as complete. An interrupted or failed run
leaves no meta.json, and every loader refuses a folder without one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from data_prep import meta
from data_prep.options import DATASETS, PrepOptions
from data_prep.readers import cifar, idx, imagefolder, imagenet64, svhn
from data_prep.splits import RawDataset, Split, validate
from engine.console import log, progress_bar
from engine.errors import ConfigError, DataError

Reader = Callable[[str, Path, Path, PrepOptions], RawDataset]
READERS: dict[str, Reader] = {
    "mnist": idx.read,
    "fashion-mnist": idx.read,
    "cifar10": cifar.read,
    "cifar100": cifar.read,
    "svhn": svhn.read,
    "imagefolder": imagefolder.read,
    "tiny-imagenet": imagefolder.read,
    "imagenet64": imagenet64.read,
}
assert tuple(READERS) == DATASETS
STATS_CHUNK = 2048


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and (population) std over all pixels, scaled to [0, 1]."""
    channels = split.image_shape[2]
    total = np.zeros(channels, np.uint64)
    squares = np.zeros(channels, np.uint64)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("Channel statistics", total=len(split))
        for seg in split.segments:
            for start in range(0, len(seg.images), STATS_CHUNK):
                flat = np.asarray(seg.images[start : start + STATS_CHUNK]).reshape(-1, channels)
                total += flat.sum(0, dtype=np.uint64)
                squares += np.square(flat, dtype=np.uint32).sum(0, dtype=np.uint64)
                bar.advance(task, len(flat) // (split.image_shape[0] * split.image_shape[1]))
    pixels = len(split) * split.image_shape[0] * split.image_shape[1]
    mean = total.astype(np.float64) / pixels
    var = squares.astype(np.float64) / pixels - mean**2
    return (mean / 255).tolist(), (np.sqrt(np.maximum(var, 0)) / 255).tolist()


def _sha256(path: Path) -> dict:
    """Digest of a file, or of a folder's files (relative path and content, sorted)."""
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            digest.update(str(f.relative_to(path)).encode())
            digest.update(_sha256(f)["sha256"].encode())
        return {"path": str(path), "bytes": sum(f.stat().st_size for f in files),
                "files": len(files), "sha256": digest.hexdigest()}  # fmt: skip
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _checksums(files: list[Path], workers: int) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(_sha256, files))


def class_index(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, list[int]]:
    """Training indices grouped by class (ascending within a class) and each class's offset."""
    order = np.argsort(labels, kind="stable").astype(np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return order, offsets.tolist()


@contextmanager
def _scratch(out: Path, force: bool) -> Iterator[Path]:
    """Make out ready for writing and yield a scratch folder inside it, removed afterwards."""
    _prepare_out(out, force)
    workdir = out / f".gencond-tmp-{os.getpid()}"
    workdir.mkdir()
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare_out(out: Path, force: bool) -> None:
    if (out / meta.META_FILE).exists():
        if not force:
            raise ConfigError(
                f"{out}: already holds a prepared dataset (pass --force to replace it)"
            )
        (out / meta.META_FILE).unlink()  # the folder stops looking complete before anything else
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".gencond-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def prepare(dataset: str, source: Path, out: Path, options: PrepOptions) -> meta.DatasetMeta:
    if dataset not in READERS:
        raise ConfigError(f"unknown dataset {dataset!r} (choose from: {', '.join(DATASETS)})")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    with _scratch(out, options.force) as workdir:
        log(f"Reading {dataset} from [bold]{source}[/]")
        raw = READERS[dataset](dataset, source, workdir, options)
        return write_prepared(raw, out, workdir, options)


def write_prepared(
    raw: RawDataset, out: Path, workdir: Path, options: PrepOptions
) -> meta.DatasetMeta:
    """Validate raw, write betons, class index and meta.json (last) into out via workdir."""
    from data_prep import beton  # FFCV takes seconds to import: not needed to refuse bad input

    validate(raw)
    mean, std = channel_stats(raw.train)
    train_labels, test_labels = raw.train.labels, raw.test.labels
    index, offsets = class_index(train_labels, raw.num_classes)
    np.save(workdir / meta.CLASS_INDEX_FILE, index)
    beton.write_beton(workdir / meta.TRAIN_BETON, raw.train, options.workers, "Writing train")
    beton.write_beton(workdir / meta.TEST_BETON, raw.test, options.workers, "Writing test")
    if raw.source_files:
        log("Checksumming sources")
    info = meta.DatasetMeta(
        dataset=raw.name,
        num_classes=raw.num_classes,
        image_size=raw.train.image_shape[0],
        channels=raw.train.image_shape[2],
        train_count=len(raw.train),
        test_count=len(raw.test),
        train_class_counts=np.bincount(train_labels, minlength=raw.num_classes).tolist(),
        test_class_counts=np.bincount(test_labels, minlength=raw.num_classes).tolist(),
        mean=mean,
        std=std,
        class_names=list(raw.class_names),
        class_ids=raw.class_ids,
        sources=_checksums(raw.source_files, options.workers),
        class_index={"file": meta.CLASS_INDEX_FILE, "offsets": offsets},
        gencond_version=meta.gencond_version(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for name in (meta.TRAIN_BETON, meta.TEST_BETON, meta.CLASS_INDEX_FILE):
        os.replace(workdir / name, out / name)
    meta.write_json_atomic(out / meta.META_FILE, info.to_dict())
    return info


def prepare_arrays(raw: RawDataset, out: Path, options: PrepOptions) -> meta.DatasetMeta:
    """Write an in-memory RawDataset (generated data, benchmarks, tests) like `prep` does."""
    with _scratch(Path(out), options.force) as workdir:
        return write_prepared(raw, Path(out), workdir, options)
