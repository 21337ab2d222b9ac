"""In-memory (or memory-mapped) form of a raw dataset, as every reader returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import DataError


@dataclass
class Segment:
    """Images (n, H, W, C) uint8 and labels (n,) int64 read from one source file or folder."""

    images: np.ndarray
    labels: np.ndarray
    source: Path
    label_source: Path | None = None  # where the labels come from, if not `source`


@dataclass
class Split:
    """One split (train or test) as a list of segments in source order."""

    segments: list[Segment]
    _offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        sizes = [len(s.labels) for s in self.segments]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        seg = int(np.searchsorted(self._offsets, index, side="right")) - 1
        local = index - int(self._offsets[seg])
        segment = self.segments[seg]
        return np.ascontiguousarray(segment.images[local]), int(segment.labels[local])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([s.labels for s in self.segments]).astype(np.int64)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.segments[0].images.shape[1:])  # type: ignore[return-value]


@dataclass
class RawDataset:
    """What a reader produces: both splits, the class names and the source files it read."""

    name: str
    class_names: list[str]
    train: Split
    test: Split
    source_files: list[Path]
    class_ids: list[str] | None = None  # folder names / wnids where the source has them

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


MAX_EXACT = 2**53  # floats represent every integer up to this


def integer_labels(values, path: Path, count: int) -> np.ndarray:
    """Labels as int64, refused unless they are exactly `count` integers in one dimension: a
    float label must be integral (1.0, not 1.5 or NaN), nothing is truncated or reshaped."""
    labels = np.asarray(values)
    if labels.shape != (count,):
        raise DataError(f"{path}: labels of shape {tuple(labels.shape)}, expected ({count},)")
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    if labels.dtype.kind != "f":
        raise DataError(f"{path}: labels of dtype {labels.dtype}, expected integers")
    finite = np.nan_to_num(labels, nan=0.5, posinf=0.5, neginf=0.5)  # 0.5: not an integer
    bad = (finite != np.round(finite)) | (np.abs(finite) > MAX_EXACT)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label {labels[row].item()!r} (row {row}) is not an integer")
    return labels.astype(np.int64)


def validate(raw: RawDataset) -> None:
    """Refuse shapes, dtypes, labels and class coverage that would make a wrong beton."""
    expected_shape: tuple[int, ...] | None = None
    for split_name, split in (("train", raw.train), ("test", raw.test)):
        if len(split) == 0:
            where = ", ".join(str(s.source) for s in split.segments) or "the source"
            raise DataError(f"{where}: the {split_name} split holds no images")
        for seg in split.segments:
            images, labels = seg.images, seg.labels
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DataError(
                    f"{seg.source}: expected uint8 images of shape (N, H, W, C), "
                    f"got {images.dtype} {tuple(images.shape)}"
                )
            n, h, w, c = images.shape
            if h != w or c not in (1, 3):
                raise DataError(
                    f"{seg.source}: expected square images with 1 or 3 channels, "
                    f"got H={h} W={w} C={c}"
                )
            if expected_shape is None:
                expected_shape = images.shape[1:]
            elif images.shape[1:] != expected_shape:
                raise DataError(
                    f"{seg.source}: image shape {tuple(images.shape[1:])} differs from "
                    f"{tuple(expected_shape)} in the other files"
                )
            label_file = seg.label_source or seg.source
            if labels.ndim != 1 or len(labels) != n:
                raise DataError(
                    f"{label_file}: {n} images but labels of shape {tuple(labels.shape)}"
                )
            if n and (labels.min() < 0 or labels.max() >= raw.num_classes):
                bad = int(labels[(labels < 0) | (labels >= raw.num_classes)][0])
                raise DataError(
                    f"{label_file}: label {bad} out of range for {raw.num_classes} classes "
                    f"(expected 0..{raw.num_classes - 1})"
                )
    counts = np.bincount(raw.train.labels, minlength=raw.num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        c = int(empty[0])
        where = ", ".join(str(s.source) for s in raw.train.segments)
        raise DataError(
            f"{where}: class {c} ({raw.class_names[c]!r}) has no training images "
            f"({len(empty)} empty class(es) in all)"
        )
