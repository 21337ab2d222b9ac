"""`gencond bench loader`: images/s of the FFCV random and class-grouped loaders on
ImageNet-64-shaped data, against a plain torch DataLoader over the same uint8 array.

Every loader ends at the same point: a float32 NCHW batch normalised with the dataset's mean/std
on the target device. Each is timed over full passes after a warm-up pass (page cache and FFCV's
JIT compilation), with the same batch size and the same number of threads/workers.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.config import LoaderBenchConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log, progress_bar
from common.errors import GencondError
from data_prep.loaders import ClassGroupedLoader, Normalizer, TrainLoader
from data_prep.meta import load_meta
from data_prep.options import PrepOptions
from data_prep.prepare import prepare_arrays
from data_prep.splits import RawDataset, Segment, Split


def generated_dataset(cfg: LoaderBenchConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    shape = (cfg.images, cfg.image_size, cfg.image_size, 3)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.permutation(np.arange(cfg.images) % cfg.classes).astype(np.int64)
    return images, labels


def _prepared(cfg: LoaderBenchConfig, images: np.ndarray, labels: np.ndarray) -> Path:
    out = Path(cfg.workdir) / f"imagenet64-shaped-{cfg.images}-{cfg.classes}-{cfg.image_size}"
    try:
        meta = load_meta(out)
        if meta.train_count == cfg.images and meta.num_classes == cfg.classes:
            return out
    except GencondError:
        pass
    test = min(10_000, cfg.images)
    raw = RawDataset(
        "imagenet64-shaped",
        [str(c) for c in range(cfg.classes)],
        Split([Segment(images, labels, Path("<generated>"))]),
        Split([Segment(images[:test], labels[:test], Path("<generated>"))]),
        [],
    )
    prepare_arrays(raw, out, PrepOptions(workers=cfg.threads, force=True))
    return out


def _timed(name: str, batches, total: int | None, warmup: bool = True) -> dict:
    """Consume batches (an iterable factory) once to warm up, then once timed."""
    passes = 2 if warmup else 1
    for p in range(passes):
        start, seen = time.perf_counter(), 0
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"{name} ({'warm-up' if p < passes - 1 else 'timed'})", total=total)
            for x in batches():
                seen += x.shape[0]
                bar.advance(task, x.shape[0])
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return {
        "loader": name,
        "images": seen,
        "seconds": round(elapsed, 4),
        "images_per_s": round(seen / elapsed, 1),
    }


def run(cfg: LoaderBenchConfig, out: str | Path | None = None) -> dict:
    side = cfg.image_size
    log(f"Generating {cfg.images} images of {side}x{side}x3, {cfg.classes} classes")
    images, labels = generated_dataset(cfg)
    data_dir = _prepared(cfg, images, labels)
    rows = []

    train = TrainLoader(data_dir, cfg.batch_size, cfg.seed, cfg.device, num_workers=cfg.threads)
    rows.append(_timed("ffcv random", lambda: (x for x, _ in train), len(train) * cfg.batch_size))

    grouped = ClassGroupedLoader(
        data_dir, cfg.n_per_class, cfg.seed, cfg.device, num_workers=cfg.threads
    )
    k, nc = cfg.classes_per_step, cfg.classes
    steps_done = [0]

    def grouped_batches():
        first = steps_done[0]
        steps_done[0] += cfg.grouped_steps  # fresh steps each pass, as in training
        schedule = lambda s: [(s * k + i) % nc for i in range(k)]  # noqa: E731
        return (x for _, x, _ in grouped.iterate(schedule, first, cfg.grouped_steps))

    row = _timed("ffcv class-grouped", grouped_batches, cfg.grouped_steps * k * cfg.n_per_class)
    row.update(classes_per_step=k, n_per_class=cfg.n_per_class)
    rows.append(row)

    meta = train.meta
    normalize = Normalizer(meta.mean, meta.std)
    device = torch.device(cfg.device)
    dataset = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    for workers in sorted({0, cfg.threads}):
        generator = torch.Generator().manual_seed(cfg.seed)
        plain = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            generator=generator,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
        batches = lambda p=plain: (normalize(x.to(device, non_blocking=True)) for x, _ in p)  # noqa: E731
        rows.append(
            _timed(f"torch DataLoader, {workers} workers", batches, len(plain) * cfg.batch_size)
        )

    baseline = max(r["images_per_s"] for r in rows if r["loader"].startswith("torch"))
    for r in rows:
        r["vs_best_torch_dataloader"] = round(r["images_per_s"] / baseline, 2)
    path = Path(out) if out else RESULTS_DIR / f"loader_{cfg.device}.json"
    config = asdict(cfg)
    config["data"] = "generated uniform-random uint8, ImageNet-64-shaped, written by gencond"
    return write_result(path, config, rows, benchmark="loader")
