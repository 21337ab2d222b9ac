"""CIFAR-10/100 python batches, parsed by torchvision."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from torchvision.datasets import CIFAR10, CIFAR100

from common.errors import DataError
from data_prep.options import PrepOptions
from data_prep.splits import RawDataset, Segment, Split, integer_labels


def _lenient(cls: type) -> type:
    """torchvision checks each batch against the published md5 and refuses anything else with
    "Dataset not found or corrupted". We record our own sha256 and validate shapes instead, so
    only existence is checked here and the error names the missing file."""

    class Lenient(cls):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            for filename, _ in self.train_list + self.test_list:
                path = Path(self.root, self.base_folder, filename)
                if not path.is_file():
                    raise DataError(f"{path.parent}: missing {filename}")
            return True

        def _load_meta(self) -> None:
            path = Path(self.root, self.base_folder, self.meta["filename"])
            if not path.is_file():
                raise DataError(f"{path.parent}: missing {path.name}")
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]

    return Lenient


def _root(source: Path, base_folder: str) -> Path:
    """Accept the folder holding cifar-*-batches-py as well as that folder itself."""
    if (source / base_folder).is_dir():
        return source
    if source.name == base_folder:
        return source.parent
    raise DataError(f"{source}: no {base_folder} folder (the python version of the dataset)")


def read(dataset: str, source: Path, workdir: Path, options: PrepOptions) -> RawDataset:
    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset]
    root = _root(source, cls.base_folder)
    folder = root / cls.base_folder
    splits = {}
    classes: list[str] = []
    for split, train in (("train", True), ("test", False)):
        try:
            ds = _lenient(cls)(root=os.fspath(root), train=train, download=False)
        except DataError:
            raise
        except Exception as e:  # unpickling or reshaping a corrupt batch
            raise DataError(
                f"{folder}: cannot read the {split} batches ({type(e).__name__}: {e})"
            ) from None
        labels = integer_labels(ds.targets, folder, len(ds.data))
        splits[split] = Split([Segment(ds.data, labels, folder)])
        classes = list(ds.classes)
    sources = [folder / n for n, _ in cls.train_list + cls.test_list] + [
        folder / cls.meta["filename"]
    ]
    return RawDataset(dataset, classes, splits["train"], splits["test"], sources)
