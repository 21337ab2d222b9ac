"""CIFAR-10/100 python batches: pickled dicts ('data' (N, 3072) uint8 channel-major, 'labels' or
'fine_labels'), file names and classes as torchvision's CIFAR10 / CIFAR100 define them.

The batches are read with a restricted unpickler: only what the published files need may be
named (numpy's array reconstruction, and bytes as Python 3 writes them in protocol 2; dicts,
lists, bytes, str and ints are pickle opcodes, not globals), so a crafted batch cannot run
code: anything else is refused in one line naming the file. Our own sha256 is recorded instead
of torchvision's md5 check, and shapes are validated."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from common.errors import DataError
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split, integer_labels

ALLOWED = {  # (module, name) a published CIFAR python batch names
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
}


class _Refused(Exception):
    pass


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def load_batch(path: Path) -> Any:
    """One pickled CIFAR file as data (Python 2 pickles: str keys decode with latin1)."""
    if not path.is_file():
        raise DataError(f"{path.parent}: missing {path.name}")
    try:
        with open(path, "rb") as f:
            return _DataOnly(f, encoding="latin1").load()
    except _Refused as e:
        raise DataError(
            f"{path}: refused to load: it names {e}; a CIFAR batch holds only arrays, lists "
            f"and strings, and nothing a file names is run"
        ) from None
    except Exception as e:  # a truncated or corrupt pickle
        raise DataError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None


def _root(source: Path, base_folder: str) -> Path:
    """Accept the folder holding cifar-*-batches-py as well as that folder itself."""
    if (source / base_folder).is_dir():
        return source
    if source.name == base_folder:
        return source.parent
    raise DataError(f"{source}: no {base_folder} folder (the python version of the dataset)")


def _split(folder: Path, files: list[str]) -> tuple[np.ndarray, list]:
    data, targets = [], []
    for name in files:
        entry = load_batch(folder / name)
        if not isinstance(entry, dict) or "data" not in entry:
            raise DataError(f"{folder / name}: not a CIFAR batch (no 'data' key)")
        key = "labels" if "labels" in entry else "fine_labels"
        if key not in entry:
            raise DataError(f"{folder / name}: not a CIFAR batch (no 'labels' key)")
        data.append(np.asarray(entry["data"]))
        targets.extend(entry[key])
    images = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
    return images, targets


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset]
    root = _root(source, cls.base_folder)
    folder = root / cls.base_folder
    splits = {}
    for split, listed in (("train", cls.train_list), ("test", cls.test_list)):
        try:
            images, targets = _split(folder, [n for n, _ in listed])
        except DataError:
            raise
        except Exception as e:  # reshaping a corrupt batch
            raise DataError(
                f"{folder}: cannot read the {split} batches ({type(e).__name__}: {e})"
            ) from None
        labels = integer_labels(targets, folder, len(images))
        splits[split] = Split([Segment(images, labels, folder)])
    meta_file = folder / cls.meta["filename"]
    names = load_batch(meta_file)
    if not isinstance(names, dict) or cls.meta["key"] not in names:
        raise DataError(f"{meta_file}: no {cls.meta['key']!r} key")
    classes = list(names[cls.meta["key"]])
    sources = [folder / n for n, _ in cls.train_list + cls.test_list] + [meta_file]
    return RawDataset(dataset, classes, splits["train"], splits["test"], sources)
