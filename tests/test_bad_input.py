"""Bad input: one `error:` line naming the problem and the file, a non-zero exit, and nothing
left in the output folder that looks complete."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from formats import write_idx, write_imagefolder, write_imagenet64
from helpers import ROOT

from common.errors import DataError
from data_prep.meta import load_meta


def assert_refused(result, out: Path, *needles: str) -> None:
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out.exists():
        leftovers = sorted(p.name for p in out.iterdir())
        assert "meta.json" not in leftovers and not any(n.endswith(".beton") for n in leftovers)
        assert not any(n.startswith(".gencond-tmp") for n in leftovers), leftovers
    beside = sorted(p.name for p in out.parent.glob(f".{out.name}.gencond-tmp-*"))
    assert not beside, beside  # the folder built aside is removed on failure


def test_unknown_dataset(cli, tmp_path):
    r = cli("prep", "imagenet1k", "--source", tmp_path, "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", "unknown dataset 'imagenet1k'", "imagenet64")


def test_missing_source(cli, tmp_path):
    r = cli("prep", "mnist", "--source", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(tmp_path / "nowhere"), "no such file")


def test_missing_file(cli, tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=True)
    (tmp_path / "src" / "t10k-labels-idx1-ubyte.gz").unlink()
    r = cli("prep", "mnist", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(tmp_path / "src"), "t10k-labels-idx1-ubyte")


def test_truncated_gzip(cli, tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=True)
    path = tmp_path / "src" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    r = cli("prep", "mnist", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(path))


def test_idx_label_out_of_range(cli, tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=False)
    path = tmp_path / "src" / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[8 + 3] = 10  # the fourth label
    path.write_bytes(bytes(data))
    r = cli("prep", "mnist", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", "label 10 out of range", "train-labels-idx1-ubyte")


def test_truncated_npz(cli, tmp_path):
    write_imagenet64(tmp_path / "src", [1000, 1000], val=10, seed=0, side=8)
    path = tmp_path / "src" / "train_data_batch_2.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    r = cli("prep", "imagenet64", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(path), "truncated or corrupt")


def test_npz_wrong_shape(cli, tmp_path):
    write_imagenet64(tmp_path / "src", [1000], val=10, seed=0, side=8)
    path = tmp_path / "src" / "val_data.npz"
    np.savez(path, data=np.zeros((10, 12287), np.uint8), labels=np.ones(10, np.int64))
    r = cli("prep", "imagenet64", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(path), "(10, 12287)")


def test_npz_label_out_of_range(cli, tmp_path):
    write_imagenet64(tmp_path / "src", [1000], val=10, seed=0, side=8)
    path = tmp_path / "src" / "val_data.npz"
    labels = np.ones(10, np.int64)
    labels[4] = 1001
    np.savez(path, data=np.zeros((10, 192), np.uint8), labels=labels)
    r = cli("prep", "imagenet64", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(path), "label 1001 out of range", "1..1000")


def test_empty_class(cli, tmp_path):
    write_imagefolder(tmp_path / "src", ["a", "b", "c"], 2, 8, seed=0)
    for f in (tmp_path / "src" / "train" / "b").iterdir():
        f.unlink()
    r = cli("prep", "imagefolder", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", "class 1 ('b') has no training images", "train")


def test_corrupt_image(cli, tmp_path):
    write_imagefolder(tmp_path / "src", ["a", "b"], 3, 8, seed=0)
    bad = tmp_path / "src" / "val" / "b" / "img_001.png"
    bad.write_bytes(b"not a png")
    r = cli("prep", "imagefolder", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert_refused(r, tmp_path / "out", str(bad), "not a readable image")


def test_existing_output_is_kept_without_force(cli, tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=False)
    assert (
        cli("prep", "mnist", "--source", tmp_path / "src", "--out", tmp_path / "out").returncode
        == 0
    )
    before = (tmp_path / "out" / "meta.json").read_text()
    r = cli("prep", "mnist", "--source", tmp_path / "src", "--out", tmp_path / "out")
    assert r.returncode != 0 and "--force" in r.stderr
    assert (tmp_path / "out" / "meta.json").read_text() == before


def test_interrupted_prep_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL in the middle of a conversion: no meta.json, loaders refuse, a re-run works."""
    write_imagenet64(tmp_path / "src", [3000] * 4, val=500, seed=0)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "launch.cli",
        "prep",
        "imagenet64",
        "--source",
        str(tmp_path / "src"),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    building = f".{out.name}.gencond-tmp-*"  # the new folder is built beside out
    while not list(tmp_path.glob(f"{building}/.scratch/*.npy")) and time.time() < deadline:
        assert proc.poll() is None, "prep finished before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists()
    assert not list(out.glob("*.beton"))
    with pytest.raises(DataError, match="no meta.json"):
        load_meta(out)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_meta(out).train_count == 12000
    assert not list(tmp_path.glob(building)), "the killed run's folder is removed"
