"""SVHN cropped digits (.mat), parsed by torchvision (scipy.io)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torchvision.datasets import SVHN

from common.errors import DataError
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split, integer_labels


class _LenientSVHN(SVHN):
    """Existence instead of torchvision's published-md5 check; we record our own sha256."""

    def _check_integrity(self) -> bool:
        path = Path(self.root, self.filename)
        if not path.is_file():
            raise DataError(f"{path.parent}: missing {path.name}")
        return True


def _exact_labels(path: Path, count: int) -> np.ndarray:
    """The .mat's own `y` (torchvision casts it to int64, truncating 1.5 to 1), checked exact;
    SVHN labels digit 0 as 10."""
    import scipy.io

    y = scipy.io.loadmat(os.fspath(path), variable_names=["y"]).get("y")
    if y is None:
        raise DataError(f"{path}: no 'y' (labels) in this .mat file")
    y = np.asarray(y)
    labels = integer_labels(y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y, path, count)
    labels[labels == 10] = 0
    return labels


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    splits = {}
    files = []
    for split in ("train", "test"):
        path = source / SVHN.split_list[split][1]
        try:
            ds = _LenientSVHN(root=os.fspath(source), split=split, download=False)
        except DataError:
            raise
        except Exception as e:
            raise DataError(
                f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})"
            ) from None
        images = np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        splits[split] = Split([Segment(images, _exact_labels(path, len(images)), path)])
        files.append(path)
    return RawDataset(dataset, [str(i) for i in range(10)], splits["train"], splits["test"], files)
