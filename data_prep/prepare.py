"""`gencond prep`: raw dataset -> DIR/train.beton, DIR/test.beton, DIR/meta.json.

The new folder is built aside (a hidden sibling of DIR, holding DIR's lock) and replaces DIR as
a whole only once both betons, the class index and meta.json (written last) are complete. A
broken source, a full disk or an interrupt leaves DIR exactly as it was (with --force: the old
dataset stays usable); every loader refuses a folder without meta.json.
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

from common import fsio, runlock
from common.console import log, progress_bar
from common.errors import ConfigError, DataError
from data_prep import meta
from data_prep.options import DATASETS, PrepOptions
from data_prep.readers import cifar, idx, imagefolder, imagenet64, svhn
from data_prep.splits import RawDataset, Split, validate

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
        return {
            "path": str(path),
            "bytes": sum(f.stat().st_size for f in files),
            "files": len(files),
            "sha256": digest.hexdigest(),
        }
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


PREPARED_FILES = (meta.META_FILE, meta.TRAIN_BETON, meta.TEST_BETON, meta.CLASS_INDEX_FILE)


@contextmanager
def _building(out: Path, force: bool) -> Iterator[tuple[Path, Path]]:
    """(folder, scratch): the new dataset is built in a hidden sibling of out, holding out's
    lock, and replaces out as a whole only once complete. Any failure (a broken source, a full
    disk, an interrupt) leaves out exactly as it was; a kill leaves a hidden sibling that the
    next prep of out removes."""
    fsio.make_dir(out.parent)
    with runlock.hold(out, "prep", lock=runlock.sibling_lock_path(out)):
        _check_out(out, force)
        fsio.remove_leftovers(out)
        with fsio.build_dir(out) as folder:
            scratch = folder / ".scratch"
            scratch.mkdir()
            yield folder, scratch
            shutil.rmtree(scratch, ignore_errors=True)


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if (out / meta.META_FILE).exists() and not force:
        raise ConfigError(f"{out}: already holds a prepared dataset (pass --force to replace it)")
    ours = lambda name: name in PREPARED_FILES or name.startswith(".gencond-tmp-")  # noqa: E731
    foreign = sorted(p.name for p in out.iterdir() if not ours(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise DataError(
            f"{out}: holds {len(foreign)} file(s) prep did not write ({shown}); prep replaces "
            f"the folder as a whole: move them away or choose another --out"
        )


def prepare(dataset: str, source: Path, out: Path, options: PrepOptions) -> meta.DatasetMeta:
    if dataset not in READERS:
        raise ConfigError(f"unknown dataset {dataset!r} (choose from: {', '.join(DATASETS)})")
    source, out = Path(source), Path(out)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    with _building(out, options.force) as (folder, scratch):
        log(f"Reading {dataset} from [bold]{source}[/]")
        raw = READERS[dataset](dataset, source, scratch, options)
        return write_prepared(raw, folder, scratch, options)


def write_prepared(
    raw: RawDataset, out: Path, workdir: Path, options: PrepOptions
) -> meta.DatasetMeta:
    """Validate raw, write betons, class index and meta.json (last) into out via workdir
    (out: the folder being built, swapped into place by the caller)."""
    from data_prep import beton  # FFCV takes seconds to import: not needed to refuse bad input

    validate(raw)
    mean, std = channel_stats(raw.train)
    train_labels, test_labels = raw.train.labels, raw.test.labels
    index, offsets = class_index(train_labels, raw.num_classes)
    fsio.write_file(workdir / meta.CLASS_INDEX_FILE, lambda f: np.save(f, index), index.nbytes)
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
        info.files[name] = (out / name).stat().st_size
        info.digests[name] = meta.file_digest(out / name)
    fsio.write_json(out / meta.META_FILE, info.to_dict())
    return info


def prepare_arrays(raw: RawDataset, out: Path, options: PrepOptions) -> meta.DatasetMeta:
    """Write an in-memory RawDataset (generated data, benchmarks, tests) like `prep` does."""
    with _building(Path(out), options.force) as (folder, scratch):
        return write_prepared(raw, folder, scratch, options)
