"""meta.json: what a prepared dataset folder holds, and how to check it is complete."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common.errors import DataError

META_FILE = "meta.json"
TRAIN_BETON = "train.beton"
TEST_BETON = "test.beton"
CLASS_INDEX_FILE = "train_class_index.npy"
FORMAT_VERSION = 1


@dataclass
class DatasetMeta:
    dataset: str
    num_classes: int
    image_size: int
    channels: int
    train_count: int
    test_count: int
    train_class_counts: list[int]
    test_class_counts: list[int]
    mean: list[float]  # per channel, pixel values scaled to [0, 1], over the training split
    std: list[float]
    class_names: list[str]
    sources: list[dict]  # {"path", "bytes", "sha256"} of each source file (or folder digest)
    # train indices grouped by class: class c is CLASS_INDEX_FILE[offsets[c]:offsets[c+1]]
    class_index: dict = field(default_factory=dict)
    class_ids: list[str] | None = None
    layout: str = "HWC"
    fields: dict = field(
        default_factory=lambda: {"image": "NDArrayField uint8 (H, W, C)", "label": "IntField"}
    )
    files: dict = field(default_factory=dict)  # bytes of each file, to catch a truncated copy
    # file_digest of each file: a file of the same size from another prep (or damaged) is caught
    digests: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    gencond_version: str = ""
    created: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    @property
    def class_offsets(self) -> np.ndarray:
        return np.asarray(self.class_index["offsets"], dtype=np.int64)

    def to_dict(self) -> dict:
        return asdict(self)


def load_meta(data_dir: str | Path) -> DatasetMeta:
    """Read DIR/meta.json and check the betons it describes are there."""
    data_dir = Path(data_dir)
    path = data_dir / META_FILE
    if not path.is_file():
        raise DataError(f"{data_dir}: no {META_FILE} (not a prepared dataset; run `gencond prep`)")
    try:
        raw = json.loads(path.read_text())
        meta = DatasetMeta(**raw)
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"{path}: not a valid gencond meta.json ({e})") from None
    if meta.format_version != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.format_version}, expected {FORMAT_VERSION}")
    for name in (TRAIN_BETON, TEST_BETON, CLASS_INDEX_FILE):
        if not (data_dir / name).is_file():
            raise DataError(f"{data_dir / name}: missing (the folder is incomplete; re-run prep)")
        size, expected = (data_dir / name).stat().st_size, meta.files.get(name)
        if expected is not None and size != expected:
            raise DataError(
                f"{data_dir / name}: {size} bytes, but meta.json says {expected} "
                "(truncated or replaced; re-run prep)"
            )
    check_belongs(data_dir, meta)
    return meta


SAMPLE_BLOCK = 1 << 16
SAMPLES = 64


def file_digest(path: Path) -> str:
    """sha256 of a file's size and content: all of it up to 8 MiB, else its first and last
    4 MiB and 64 evenly spaced 64 KiB blocks (cheap enough for every load of a large beton,
    and different for any other prep's file)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 8 << 20:
            digest.update(f.read())
        else:
            step = (size - (8 << 20)) // (SAMPLES + 1)
            for offset in (
                0,
                *((4 << 20) + step * (i + 1) for i in range(SAMPLES)),
                size - (4 << 20),
            ):
                f.seek(offset)
                digest.update(f.read(4 << 20 if offset in (0, size - (4 << 20)) else SAMPLE_BLOCK))
    return digest.hexdigest()


def beton_count(path: Path) -> int | None:
    """The sample count in an FFCV file's header (None when the header is not there)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24:
        return None
    return struct.unpack("<HHIQQ", head)[3]


def check_belongs(data_dir: Path, meta: DatasetMeta) -> None:
    """The files beside meta.json are the ones it describes: each beton's image count, and
    (meta.json of this gencond on) each file's digest."""
    for name, count in ((TRAIN_BETON, meta.train_count), (TEST_BETON, meta.test_count)):
        found = beton_count(data_dir / name)
        if found != count:
            raise DataError(
                f"{data_dir / name}: holds {found} images, but meta.json says {count} (a file "
                "from another prep, or damaged; re-run prep)"
            )
    for name, expected in meta.digests.items():
        if name in (TRAIN_BETON, TEST_BETON, CLASS_INDEX_FILE):
            if file_digest(data_dir / name) != expected:
                raise DataError(
                    f"{data_dir / name}: its content is not what meta.json records (a file from "
                    "another prep, or damaged; re-run prep)"
                )


def load_class_index(data_dir: str | Path, meta: DatasetMeta) -> np.ndarray:
    path = Path(data_dir) / CLASS_INDEX_FILE
    index = np.load(path)
    if index.shape != (meta.train_count,):
        raise DataError(f"{path}: {index.shape[0]} entries, meta.json says {meta.train_count}")
    return index


def gencond_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gencond")
    except PackageNotFoundError:
        return "unknown"
