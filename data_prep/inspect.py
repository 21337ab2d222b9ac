"""A pass of every loader over a prepared folder, checked against meta.json, and a class grid."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from common import fsio
from common.console import progress_bar
from common.errors import ConfigError, DataError
from data_prep.loaders import ClassGroupedLoader, TestLoader, TrainLoader


def loader_pass(
    data_dir: str | Path, device: str = "cpu", batch_size: int = 256, seed: int = 0
) -> list[dict]:
    """One epoch of the random and sequential loaders and a few class-grouped steps; raises if
    what comes out disagrees with meta.json (counts, labels, shapes)."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is visible (use --device cpu)")
    rows = []
    train = TrainLoader(data_dir, batch_size, seed=seed, device=device)
    meta = train.meta
    shape = (meta.channels, meta.image_size, meta.image_size)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("Random train epoch", total=len(train))
        start, seen, total, square = time.perf_counter(), 0, 0.0, 0.0
        for images, labels in train:
            seen += len(labels)
            total += images.sum().item()
            square += images.square().sum().item()
            bar.advance(task)
        elapsed = time.perf_counter() - start
    expected = (meta.train_count // batch_size) * batch_size
    if seen != expected:
        raise DataError(f"{data_dir}: random loader gave {seen} images, expected {expected}")
    count = seen * shape[1] * shape[2] * shape[0]
    mean = total / max(1, count)
    std = (square / max(1, count) - mean**2) ** 0.5
    rows.append(_row("random (train)", seen, elapsed, f"mean {mean:+.3f} std {std:.3f}"))

    grouped = ClassGroupedLoader(data_dir, n_per_class=16, seed=seed, device=device)
    k = min(10, meta.num_classes)
    steps = 20
    start = time.perf_counter()
    for step, images, labels in grouped.iterate(
        lambda s: [(s * k + i) % meta.num_classes for i in range(k)], 0, steps
    ):
        want = torch.tensor([(step * k + i) % meta.num_classes for i in range(k)])
        if not torch.equal(labels.cpu(), want.repeat_interleave(16)):
            raise DataError(f"{data_dir}: class-grouped loader returned the wrong classes")
        if tuple(images.shape[1:]) != shape:
            raise DataError(f"{data_dir}: images of shape {tuple(images.shape[1:])}, not {shape}")
    rows.append(
        _row("class-grouped", steps * k * 16, time.perf_counter() - start, f"{k} classes x 16")
    )

    start, seen = time.perf_counter(), 0
    counts = torch.zeros(meta.num_classes, dtype=torch.int64)
    for _, labels in TestLoader(data_dir, batch_size=1024, device=device):
        seen += len(labels)
        counts += torch.bincount(labels.cpu(), minlength=meta.num_classes)
    if seen != meta.test_count or counts.tolist() != meta.test_class_counts:
        raise DataError(f"{data_dir}: test loader's class counts differ from meta.json")
    rows.append(_row("sequential (test)", seen, time.perf_counter() - start, "counts match"))
    return rows


def _row(loader: str, images: int, seconds: float, check: str) -> dict:
    return {
        "loader": loader,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / max(seconds, 1e-9),
        "check": check,
    }


def class_grid(data_dir: str | Path, path: str | Path, classes: int = 10, per_class: int = 10):
    """A PNG of per_class real training images (columns) for the first `classes` classes (rows)."""
    grouped = ClassGroupedLoader(data_dir, n_per_class=per_class, seed=0, raw=True)
    k = min(classes, grouped.meta.num_classes)
    images, _ = grouped.get(0, list(range(k)))
    grid = images.permute(0, 3, 1, 2).float() / 255
    fsio.write_file(path, lambda f: save_image(grid, f, format="png", nrow=per_class, padding=1))
