"""Writers of small files in each publisher's true format, returning the pixels they hold."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def write_idx(folder: Path, n_train: int, n_test: int, seed: int, gz: bool) -> dict:
    """MNIST idx files: big-endian magic 0x803 (images) / 0x801 (labels), then dims, then bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        img_bytes = struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()
        lab_bytes = struct.pack(">II", 0x801, n) + labels.tobytes()
        for name, data in (
            (f"{stem}-images-idx3-ubyte", img_bytes),
            (f"{stem}-labels-idx1-ubyte", lab_bytes),
        ):
            if gz:
                with gzip.open(folder / (name + ".gz"), "wb") as f:
                    f.write(data)
            else:
                (folder / name).write_bytes(data)
        out[split] = (images[..., None], labels.astype(np.int64))
    return out


def write_cifar(root: Path, hundred: bool, per_batch: int, seed: int) -> dict:
    """CIFAR python batches: pickled dicts, 'data' (N, 3072) channel-major, label lists.

    The published files are Python 2 pickles whose str keys load as str with latin1."""
    rng = np.random.default_rng(seed)
    classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    out = {}
    for split, files in (("train", names), ("test", ["test" if hundred else "test_batch"])):
        all_x, all_y = [], []
        for name in files:
            n = per_batch if split == "test" or hundred else per_batch // 5
            n = max(n, classes)
            x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            y = [int(v) for v in rng.permutation(np.arange(n) % classes)]
            with open(folder / name, "wb") as f:
                pickle.dump({"data": x.reshape(n, -1), key: y, "batch_label": "x"}, f, protocol=2)
            all_x.append(x.transpose(0, 2, 3, 1))
            all_y += y
        out[split] = (np.concatenate(all_x), np.array(all_y, dtype=np.int64))
    meta_name, meta_key = (
        ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    )
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"c{i}" for i in range(classes)]}, f)
    return out


def write_svhn(folder: Path, n_train: int, n_test: int, seed: int) -> dict:
    """SVHN .mat: X (32, 32, 3, N) uint8, y (N, 1) with digit 0 stored as 10."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 10).astype(np.int64)
        stored = np.where(y == 0, 10, y).reshape(-1, 1).astype(np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": stored})
        out[split] = (x, y)
    return out


def write_imagefolder(
    root: Path, classes: list[str], per_class: int, size: int, seed: int, test_dir: str = "val"
) -> dict:
    """train/<class>/*.png and <test_dir>/<class>/*.png; PNG is lossless so pixels are exact."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, folder in (("train", "train"), ("test", test_dir)):
        xs, ys = [], []
        for c, name in enumerate(classes):
            d = root / folder / name
            d.mkdir(parents=True)
            for i in range(per_class):
                x = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(x).save(d / f"img_{i:03d}.png")
                xs.append(x)
                ys.append(c)
        out[split] = (np.stack(xs), np.array(ys, dtype=np.int64))
    return out


def write_tiny_imagenet(root: Path, wnids: list[str], per_class: int, val: int, seed: int) -> dict:
    """The Tiny-ImageNet tree: JPEGs; expected pixels are PIL's decoding of each file."""
    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (top / "words.txt").write_text("".join(f"{w}\tthing {w}, other\n" for w in wnids))
    decoded = lambda p: np.asarray(Image.open(p).convert("RGB"))  # noqa: E731
    xs, ys = [], []
    for c, w in enumerate(sorted(wnids)):
        d = top / "train" / w / "images"
        d.mkdir(parents=True)
        (top / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(per_class):
            p = d / f"{w}_{i}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p, "JPEG")
            xs.append(decoded(p))
            ys.append(c)
    train = (np.stack(xs), np.array(ys, dtype=np.int64))
    lines, xs, ys = [], [], []
    for i in range(val):
        c = i % len(wnids)
        p = top / "val" / "images" / f"val_{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(p, "JPEG")  # gray
        lines.append(f"val_{i}.JPEG\t{sorted(wnids)[c]}\t0\t0\t63\t63")
        xs.append(decoded(p))
        ys.append(c)
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"train": train, "test": (np.stack(xs), np.array(ys, dtype=np.int64))}


def write_imagenet64(
    folder: Path, batch_sizes: list[int], val: int, seed: int, side: int = 64
) -> dict:
    """Downsampled ImageNet npz: data (N, 3*S*S) uint8 channel-major, labels 1..1000, mean."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"train": ([], [])}
    for b, n in enumerate(batch_sizes, 1):
        x = rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % 1000) + 1
        save = np.savez_compressed if b % 2 == 0 else np.savez
        save(
            folder / f"train_data_batch_{b}.npz",
            data=x.reshape(n, -1),
            labels=list(y),
            mean=np.zeros(3 * side * side),
        )
        out["train"][0].append(x.transpose(0, 2, 3, 1))
        out["train"][1].append(y - 1)
    x = rng.integers(0, 256, (val, 3, side, side), dtype=np.uint8)
    y = rng.integers(1, 1001, val)
    np.savez(folder / "val_data.npz", data=x.reshape(val, -1), labels=list(y))
    out["train"] = (np.concatenate(out["train"][0]), np.concatenate(out["train"][1]))
    out["test"] = (x.transpose(0, 2, 3, 1), y - 1)
    return out
