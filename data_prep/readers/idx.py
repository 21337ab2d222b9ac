"""MNIST and Fashion-MNIST idx files (plain or .gz), parsed by torchvision."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
from torchvision.datasets import MNIST, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from common.errors import DataError
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": list(FashionMNIST.classes),
}
_TORCHVISION_DIRS = {"mnist": MNIST.__name__, "fashion-mnist": FashionMNIST.__name__}


def find_file(source: Path, stem: str, dataset: str) -> Path:
    """The idx file `stem` (plain or .gz) in source, source/raw or torchvision's layout."""
    for folder in (source, source / "raw", source / _TORCHVISION_DIRS[dataset] / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{source}: missing {stem} (or {stem}.gz)")


def _plain_copy(path: Path, workdir: Path) -> Path:
    if path.suffix != ".gz":
        return path
    out = workdir / path.stem
    try:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    return out


MAGIC = {"images": 0x803, "labels": 0x801}  # big-endian: 0, 0, dtype 0x08 (ubyte), dims


def _check_header(path: Path, plain: Path, kind: str) -> None:
    with open(plain, "rb") as f:
        head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: empty or too short for an idx {kind} file ({len(head)} bytes)")
    magic = int.from_bytes(head, "big")
    if magic != MAGIC[kind]:
        raise DataError(
            f"{path}: not an idx {kind} file (magic 0x{magic:08x}, expected 0x{MAGIC[kind]:08x})"
        )


def _read(path: Path, workdir: Path, kind: str) -> np.ndarray:
    plain = _plain_copy(path, workdir)
    _check_header(path, plain, kind)
    try:
        tensor = read_image_file(str(plain)) if kind == "images" else read_label_file(str(plain))
    except Exception as e:  # torchvision raises assorted errors on a corrupt idx file
        raise DataError(f"{path}: not a valid idx {kind} file ({type(e).__name__}: {e})") from None
    return tensor.numpy()


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    splits = {}
    files = []
    for split, (image_stem, label_stem) in FILES.items():
        image_path = find_file(source, image_stem, dataset)
        label_path = find_file(source, label_stem, dataset)
        images = _read(image_path, workdir, "images")[..., None]  # (N, 28, 28, 1)
        labels = _read(label_path, workdir, "labels").astype(np.int64)
        if len(images) != len(labels):
            raise DataError(
                f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}"
            )
        splits[split] = Split([Segment(images, labels, image_path, label_path)])
        files += [image_path, label_path]
    return RawDataset(dataset, CLASS_NAMES[dataset], splits["train"], splits["test"], files)
