"""Data fidelity: a beton read back in order equals the source pixels and labels exactly."""

from pathlib import Path

import numpy as np
import pytest
from formats import (
    write_cifar,
    write_idx,
    write_imagefolder,
    write_imagenet64,
    write_svhn,
    write_tiny_imagenet,
)
from helpers import FASHION_MNIST, SHARED

from data_prep.loaders import read_all
from data_prep.meta import load_class_index, load_meta
from data_prep.options import PrepOptions
from data_prep.prepare import prepare


def check_roundtrip(out: Path, expected: dict, num_classes: int) -> None:
    meta = load_meta(out)
    for split in ("train", "test"):
        images, labels = read_all(out, split)
        want_x, want_y = expected[split]
        assert images.shape == want_x.shape
        np.testing.assert_array_equal(images, want_x)
        np.testing.assert_array_equal(labels, want_y)
        counts = np.bincount(want_y, minlength=num_classes).tolist()
        assert getattr(meta, f"{split}_class_counts") == counts
        assert getattr(meta, f"{split}_count") == len(want_y)
    train_x, train_y = expected["train"]
    pixels = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64) / 255
    np.testing.assert_allclose(meta.mean, pixels.mean(0), atol=1e-9)
    np.testing.assert_allclose(meta.std, pixels.std(0), atol=1e-9)
    index, offsets = load_class_index(out, meta), meta.class_offsets
    for c in range(num_classes):
        members = index[offsets[c] : offsets[c + 1]]
        np.testing.assert_array_equal(members, np.flatnonzero(train_y == c))
    assert not list(out.glob(".gencond-tmp-*"))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_idx(tmp_path, dataset, gz):
    expected = write_idx(tmp_path / "src", 300, 100, seed=1, gz=gz)
    prepare(dataset, tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 10)
    assert load_meta(tmp_path / "out").image_shape == (28, 28, 1)


def test_idx_torchvision_layout(tmp_path):
    expected = write_idx(tmp_path / "root" / "FashionMNIST" / "raw", 50, 20, seed=2, gz=True)
    prepare("fashion-mnist", tmp_path / "root", tmp_path / "out", PrepOptions(workers=1))
    check_roundtrip(tmp_path / "out", expected, 10)


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar(tmp_path, hundred):
    expected = write_cifar(tmp_path / "src", hundred, per_batch=200, seed=3)
    name = "cifar100" if hundred else "cifar10"
    prepare(name, tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    classes = 100 if hundred else 10
    check_roundtrip(tmp_path / "out", expected, classes)
    meta = load_meta(tmp_path / "out")
    assert meta.class_names == [f"c{i}" for i in range(classes)]
    assert len(meta.sources) == (3 if hundred else 7)


def test_svhn(tmp_path):
    expected = write_svhn(tmp_path / "src", 120, 40, seed=4)
    prepare("svhn", tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 10)


@pytest.mark.parametrize("test_dir", ["val", "test"])
def test_imagefolder(tmp_path, test_dir):
    classes = ["zebra", "apple", "mango"]
    expected = write_imagefolder(tmp_path / "src", classes, 7, 24, seed=5, test_dir=test_dir)
    # classes are numbered in sorted order: apple 0, mango 1, zebra 2
    remap = np.array([2, 0, 1])
    expected = {k: (x, remap[y]) for k, (x, y) in expected.items()}
    order = {k: np.argsort(y, kind="stable") for k, (_, y) in expected.items()}
    expected = {k: (x[order[k]], y[order[k]]) for k, (x, y) in expected.items()}
    prepare("imagefolder", tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 3)
    assert load_meta(tmp_path / "out").class_names == sorted(classes)


@pytest.mark.parametrize("dataset", ["tiny-imagenet", "imagefolder"])
def test_a_class_subset_keeps_only_those_classes(tmp_path, dataset):
    from common.errors import DataError

    wnids = ["n03", "n01", "n02", "n04"]
    expected = write_tiny_imagenet(tmp_path / "src", wnids, per_class=4, val=12, seed=7)
    opts = PrepOptions(workers=1, classes=("n04", "n02"))
    if dataset == "imagefolder":  # the same images as train/<class>/ and val/<class>/
        write_imagefolder(tmp_path / "src_if", wnids, 3, 8, seed=1)
        prepare(dataset, tmp_path / "src_if", tmp_path / "out", opts)
        meta = load_meta(tmp_path / "out")
        assert meta.class_names == ["n02", "n04"] and meta.train_class_counts == [3, 3]
    else:
        prepare(dataset, tmp_path / "src", tmp_path / "out", opts)
        keep = {
            k: (x[np.isin(y, [1, 3])], y[np.isin(y, [1, 3])] // 2) for k, (x, y) in expected.items()
        }  # sorted wnids n01..n04 -> 0..3; kept n02, n04 -> 0, 1
        check_roundtrip(tmp_path / "out", keep, 2)
        assert load_meta(tmp_path / "out").class_ids == ["n02", "n04"]
    with pytest.raises(DataError, match="--classes: 'n09' is not a class of"):
        prepare(
            dataset,
            tmp_path / ("src" if dataset == "tiny-imagenet" else "src_if"),
            tmp_path / "out2",
            PrepOptions(workers=1, classes=("n01", "n09")),
        )


def test_imagefolder_resizes_to_requested_size(tmp_path):
    write_imagefolder(tmp_path / "src", ["a", "b"], 3, 40, seed=6)
    prepare("imagefolder", tmp_path / "src", tmp_path / "out", PrepOptions(image_size=16))
    images, _ = read_all(tmp_path / "out", "train")
    assert images.shape == (6, 16, 16, 3)
    assert load_meta(tmp_path / "out").image_size == 16


def test_tiny_imagenet_layout_and_zip(tmp_path):
    wnids = ["n03", "n01", "n02"]
    expected = write_tiny_imagenet(tmp_path / "src", wnids, per_class=4, val=9, seed=7)
    prepare("tiny-imagenet", tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 3)
    meta = load_meta(tmp_path / "out")
    assert meta.class_ids == sorted(wnids)
    assert meta.class_names == [f"thing {w}" for w in sorted(wnids)]

    import shutil

    archive = shutil.make_archive(str(tmp_path / "tiny"), "zip", tmp_path / "src")
    prepare("tiny-imagenet", Path(archive), tmp_path / "out_zip", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out_zip", expected, 3)
    assert load_meta(tmp_path / "out_zip").sources[0]["path"] == archive


def test_imagenet64_two_batches(tmp_path):
    expected = write_imagenet64(tmp_path / "src", [1100, 1000], val=300, seed=8)
    prepare("imagenet64", tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 1000)
    meta = load_meta(tmp_path / "out")
    assert (meta.num_classes, meta.image_size, meta.channels) == (1000, 64, 3)
    assert [Path(s["path"]).name for s in meta.sources] == [
        "train_data_batch_1.npz",
        "train_data_batch_2.npz",
        "val_data.npz",
    ]


def test_imagenet64_batches_in_numeric_order(tmp_path):
    """train_data_batch_10 comes after _2 (not in string order)."""
    sizes = [1000] * 2 + [0] * 7 + [1000]
    sizes = [s if s else 1 for s in sizes]
    expected = write_imagenet64(tmp_path / "src", sizes, val=10, seed=9, side=8)
    prepare("imagenet64", tmp_path / "src", tmp_path / "out", PrepOptions(workers=2))
    check_roundtrip(tmp_path / "out", expected, 1000)


# Real datasets: present on the developers' and CI machines, skipped elsewhere.

MNIST_DIR = SHARED / "mnist"


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"real MNIST not present at {MNIST_DIR}")
def test_real_mnist(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    meta = prepare("mnist", MNIST_DIR, tmp_path / "out", PrepOptions(workers=2))
    assert (meta.train_count, meta.test_count) == (60000, 10000)
    assert round(meta.mean[0], 4) == 0.1307 and round(meta.std[0], 4) == 0.3081
    import gzip
    import hashlib

    for split, stem in (("train", "train"), ("test", "t10k")):
        raw = {}
        for kind in ("images-idx3", "labels-idx1"):
            path = tmp_path / f"{stem}-{kind}"
            path.write_bytes(gzip.decompress((MNIST_DIR / f"{stem}-{kind}-ubyte.gz").read_bytes()))
            raw[kind] = path
        images, labels = read_all(tmp_path / "out", split)
        np.testing.assert_array_equal(images[..., 0], read_image_file(str(raw["images-idx3"])))
        np.testing.assert_array_equal(labels, read_label_file(str(raw["labels-idx1"])))
    digest = hashlib.md5(raw["labels-idx1"].read_bytes()).hexdigest()
    assert digest == "27ae3e4e09519cfbb04c329615203637"  # the published t10k labels


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(),
    reason=f"real Fashion-MNIST not present at {FASHION_MNIST} (apt-get install "
    "dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path):
    meta = prepare("fashion-mnist", FASHION_MNIST, tmp_path / "out", PrepOptions(workers=2))
    assert (meta.train_count, meta.test_count) == (60000, 10000)
    assert meta.train_class_counts == [6000] * 10 and meta.test_class_counts == [1000] * 10
    assert round(meta.mean[0], 4) == 0.2860 and round(meta.std[0], 4) == 0.3530
    assert meta.class_names[0] == "T-shirt/top"


TINY_ZIP = SHARED / "tiny-imagenet-200-sub100.zip"


@pytest.mark.skipif(not TINY_ZIP.is_file(), reason=f"Tiny-ImageNet subset not at {TINY_ZIP}")
def test_real_tiny_imagenet_subset(tmp_path):
    import zipfile

    from PIL import Image

    meta = prepare("tiny-imagenet", TINY_ZIP, tmp_path / "out", PrepOptions(workers=2))
    assert (meta.num_classes, meta.train_count, meta.test_count) == (200, 20000, 10000)
    assert meta.train_class_counts == [100] * 200 and meta.test_class_counts == [50] * 200
    images, labels = read_all(tmp_path / "out", "test")
    with zipfile.ZipFile(TINY_ZIP) as zf:
        notes = zf.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines()
        first_file, first_wnid = notes[0].split("\t")[:2]
        with zf.open(f"tiny-imagenet-200/val/images/{first_file}") as f:
            want = np.asarray(Image.open(f).convert("RGB"))
    np.testing.assert_array_equal(images[0], want)
    assert labels[0] == meta.class_ids.index(first_wnid)
