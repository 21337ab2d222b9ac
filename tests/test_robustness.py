"""Issue 15: nothing lost, nothing hung, nothing silently wrong. Full disks (a real tmpfs where
this machine lets us mount one, and an injected ENOSPC in FFCV's writer processes everywhere),
a dead writer, folders replaced as a whole, one writer per folder (real concurrent processes),
provenance, exact readers, and one `error:` line for everything else.

Most cases run in this process (the data stack loads once); each ends in bounded time."""

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from formats import write_idx, write_imagefolder, write_imagenet64, write_svhn
from helpers import ROOT, TINY, sets, toy
from PIL import Image

from common import fsio, runlock
from common.errors import ConfigError, DataError, InUseError
from data_prep import beton
from data_prep.meta import load_meta
from data_prep.options import PrepOptions
from data_prep.prepare import prepare
from engine import checkpoint
from launch import cli

OPTS = PrepOptions(workers=1)


def main(capsys, *argv) -> tuple[int, list[str], str]:
    """cli.main in this process: (exit status, its `error:` lines, all of stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def refused(capsys, *argv, needles=()) -> str:
    code, errors, err = main(capsys, *argv)
    assert code != 0 and len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders under or beside folder."""
    found = [p.name for p in folder.parent.glob(f".{folder.name}{fsio.TMP_TAG}*")]
    if folder.is_dir():
        found += [p.name for p in folder.rglob(f"*{fsio.TMP_TAG}*")]
        found += [p.name for p in folder.rglob("*.tmp")]
    return found


# ---------------------------------------------------------------- full disk, dead writer (1)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a real tmpfs of that size, unmounted afterwards."""
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({r.stderr.strip()}); the injected-ENOSPC "
                "tests below cover the same code paths"
            )
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _split(n=300):
    from data_prep.splits import Segment, Split

    return Split([Segment(np.zeros((n, 4, 4, 1), np.uint8), np.zeros(n, np.int64), Path("x"))])


def test_enospc_on_the_writers_last_page_is_an_error_not_a_hang(tmp_path, monkeypatch):
    """FFCV's worker dies on its last flush after every sample was counted; the main process
    used to wait forever for its allocation table."""
    from ffcv.writer import MemoryAllocator

    def full(self, *exc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MemoryAllocator, "__exit__", full)  # inherited by the forked workers
    path = tmp_path / "t.beton"
    start = time.monotonic()
    with pytest.raises(DataError, match="no space left on device while writing the beton"):
        beton.write_beton(path, _split(), 2, "test")
    assert time.monotonic() - start < 30
    assert not path.exists()


def test_dead_writer_is_named(tmp_path, monkeypatch):
    from ffcv import writer

    def killed(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(writer, "handle_sample", killed)
    with pytest.raises(DataError, match="a writer process died .killed by SIGKILL"):
        beton.write_beton(tmp_path / "t.beton", _split(), 1, "test")
    assert not (tmp_path / "t.beton").exists()


def test_enospc_while_saving_a_tensor(tmp_path, monkeypatch):
    """torch.save on a full disk raises `RuntimeError: unexpected pos`; ours names the path."""
    real_write = fsio.write_file

    def full_disk_write(path, write, need=None, what=""):
        def failing(f):
            write(f)
            raise OSError(errno.ENOSPC, "No space left on device")

        real_write(path, failing, None, what)

    monkeypatch.setattr(fsio, "write_file", full_disk_write)
    with pytest.raises(DataError, match=r"images.pt: No space left on device while writing"):
        fsio.save_torch(torch.zeros(1000), tmp_path / "images.pt")
    assert list(tmp_path.iterdir()) == []


def test_real_full_disk(tmpfs, tmp_path):
    disk, small = tmpfs("40m"), tmpfs("100k")
    with pytest.raises(DataError, match=r"not enough free space for a.pt: needs about 1\.\d MB"):
        fsio.save_torch(torch.zeros(250_000), small / "a.pt")
    # without the upfront estimate: the real ENOSPC in the middle of torch.save
    with pytest.raises(DataError, match=r"b.pt: No space left on device while writing"):
        fsio.write_file(small / "b.pt", lambda f: torch.save(torch.zeros(250_000), f))
    assert list(small.iterdir()) == []
    good = toy(disk / "data")  # two 16.8 MB betons (FFCV writes whole 8 MiB pages)
    before = (good / "meta.json").read_text()
    write_idx(tmp_path / "src", 200, 50, seed=0, gz=False)
    with pytest.raises(DataError, match=r"not enough free space for train.beton: needs about"):
        prepare("mnist", tmp_path / "src", good, PrepOptions(workers=1, force=True))
    assert (good / "meta.json").read_text() == before and load_meta(good).train_count == 120
    assert leftovers(good) == []


# ---------------------------------------------------------------- folders as a whole (2)


def test_prep_force_with_a_broken_source_keeps_the_dataset(tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=True)
    out = tmp_path / "out"
    prepare("mnist", tmp_path / "src", out, OPTS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "src" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(DataError, match="t10k-labels"):
        prepare("mnist", tmp_path / "src", out, PrepOptions(workers=1, force=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out) == []
    (tmp_path / "notes.txt").write_text("mine")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="prep did not write .notes.txt"):
        prepare("mnist", tmp_path / "src", out, PrepOptions(workers=1, force=True))


def test_a_killed_folder_build_leaves_the_old_folder_whole(tmp_path):
    target = tmp_path / "synthetic"
    target.mkdir()
    (target / "images.pt").write_text("old")
    (target / "grid.png").write_text("old")
    code = (
        f"from common import fsio; import time\nwith fsio.build_dir({str(target)!r}) as d:\n"
        "    (d / 'images.pt').write_text('new')\n"
        "    print('half', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "half"
    proc.kill()
    proc.wait()
    assert {p.name: p.read_text() for p in target.iterdir()} == {
        "images.pt": "old",
        "grid.png": "old",
    }
    assert leftovers(target)  # the half-built folder, hidden beside ...
    fsio.remove_leftovers(target)  # ... removed by the next writer (under the lock)
    assert leftovers(target) == []
    with fsio.build_dir(target) as d:
        (d / "images.pt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["images.pt"]


# ---------------------------------------------------------------- a condensed run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tiny data, a pretrain stage and a condensation stopped at step 4 of 8 (checkpoint kept),
    all in this process."""
    root = tmp_path_factory.mktemp("robust")
    data = toy(root / "data")
    out = root / "run"
    args = [
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        out,
        *sets(*TINY, "condense.log_every=1", "max_steps=4"),
    ]
    assert cli.main([str(a) for a in args]) == 0
    return root, data, out, args


def test_provenance_recorded(run):
    root, data, out, _ = run
    prov = json.loads((out / "provenance.json").read_text())
    payload = torch.load(out / "condensed.pt", weights_only=False)
    assert payload["provenance"] == prov
    assert prov["pretrained_sha256"] == fsio.sha256_file(out / "pretrained" / "pretrained.pt")


def test_evaluate_with_other_data_is_refused(run, capsys):
    root, data, out, _ = run
    other = toy(root / "other", per_class=31)  # same shape, other images
    refused(
        capsys,
        "evaluate",
        out,
        "--data",
        other,
        "--seeds",
        1,
        "--epochs",
        1,
        needles=("made from other mnist data", "--allow-mismatch"),
    )
    assert not (out / "eval.json").exists()


def test_pretrained_from_another_dataset_is_refused(run, capsys):
    root, data, out, args = run
    fashion = toy(root / "fashion", name="fashion-mnist")
    refused(
        capsys,
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        root / "other-run",
        "--pretrained",
        root / "fashion-pre-missing",
        needles=("no pretrained stage",),
    )
    pre = root / "fashion-pre"
    assert (
        cli.main(
            [
                str(a)
                for a in [
                    "pretrain",
                    "--preset",
                    "fashion-mnist-smoke",
                    "--data",
                    fashion,
                    "--out",
                    pre,
                    *sets(*TINY),
                ]
            ]
        )
        == 0
    )
    refused(
        capsys,
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        root / "other-run",
        "--pretrained",
        pre,
        *sets(*TINY),
        needles=("made from fashion-mnist, but the data is mnist",),
    )


def test_resume_with_other_data_is_refused(run, capsys):
    root, data, out, args = run
    other = toy(root / "other2", per_class=32)
    argv = [other if a == data else a for a in args]
    refused(capsys, *argv, needles=("made with another dataset",))


def test_max_steps_below_the_checkpoint_is_refused(run, capsys):
    root, data, out, args = run
    before = (out / "condensed.pt").read_bytes()
    refused(capsys, *args[:-1], "max_steps=2", needles=("max_steps=2 is below", "(4)"))
    assert (out / "condensed.pt").read_bytes() == before


def test_metrics_are_truncated_to_the_checkpoint_on_resume(run):
    root, data, out, args = run
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    extra = dict(json.loads(lines[-1]), step=5)  # logged after the checkpoint, then a kill
    path.write_text("\n".join(lines) + "\n" + json.dumps(extra) + '\n{"loss": 1.0, "st')
    with checkpoint.open_metrics(path, 4) as f:
        f.write(json.dumps(extra) + "\n")
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_ipc_and_memory_beyond_the_data_are_refused_before_any_work(run, capsys):
    root, data, out, _ = run
    fresh = root / "big"
    refused(
        capsys,
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        fresh,
        "--set",
        "ipc=100000",
        needles=("ipc=100000 is more than the 30 training images",),
    )
    refused(
        capsys,
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        fresh,
        "--set",
        "ipc=30",
        "--set",
        "condense.phi_width=10000000",
        needles=("memory per step",),
    )
    assert not fresh.exists()  # refused before --out is even created


# ---------------------------------------------------------------- one writer per folder (3)


def _holder(folder: Path, command: str) -> subprocess.Popen:
    code = (
        f"import time; from common.runlock import hold\nwith hold({str(folder)!r}, "
        f"{command!r}):\n    print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_a_killed_holder_does_not_block(run, capsys):
    root, data, out, args = run
    holder = _holder(out, "condense")
    try:
        for argv in (
            args,
            ["synthesize", out],
            ["evaluate", out, "--data", data, "--seeds", 1, "--epochs", 1],
        ):
            start = time.monotonic()
            line = refused(
                capsys, *argv, needles=("in use by `gencond condense`", f"pid {holder.pid}", "on ")
            )
            assert time.monotonic() - start < 20, line
    finally:
        holder.kill()  # kill -9: the kernel drops the flock
        holder.wait()
    with runlock.hold(out, "test"):  # at once, not after a timeout
        pass


def test_two_real_processes_race_for_one_folder(tmp_path):
    """Two processes started together: exactly one gets the lock, the other is refused."""
    folder = tmp_path / "run"
    code = (
        "import sys, time; from common.runlock import hold\ntry:\n"
        f"    with hold({str(folder)!r}, 'condense'):\n        time.sleep(2)\n"
        "except Exception as e:\n    print(type(e).__name__, e); sys.exit(2)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=60), p.stdout.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert "InUseError" in "".join(out for _, out in results)


def test_lock_of_the_same_folder_in_one_process_is_refused_for_others(tmp_path):
    with runlock.hold(tmp_path, "a"):
        holder = json.loads((tmp_path / (runlock.RUN_LOCK + ".json")).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "a"
    assert not (tmp_path / (runlock.RUN_LOCK + ".json")).exists()


def test_synthesize_replaces_the_folder_as_a_whole(run, capsys):
    root, data, out, _ = run
    assert main(capsys, "synthesize", out)[0] == 0
    first = {p.name for p in (out / "synthetic").iterdir()}
    assert first == {"images.pt", "labels.pt", "train.beton", "grid.png"}
    (out / "synthetic" / "stale.txt").write_text("x")
    assert main(capsys, "synthesize", out)[0] == 0
    assert {p.name for p in (out / "synthetic").iterdir()} == first
    assert leftovers(out / "synthetic") == []


# ---------------------------------------------------------------- exact readers (5)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.full(10, 1.5), "label 1.5 (row 0) is not an integer"),
        (np.array([1.0] * 9 + [np.nan]), "label nan (row 9) is not an integer"),
        (np.ones((5, 2), np.int64), "labels of shape (5, 2), expected (10,)"),
    ],
)
def test_npz_labels_must_be_exact(tmp_path, labels, message):
    write_imagenet64(tmp_path / "src", [1000], val=10, seed=0, side=8)
    path = tmp_path / "src" / "val_data.npz"
    np.savez(path, data=np.zeros((10, 192), np.uint8), labels=labels)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare("imagenet64", tmp_path / "src", tmp_path / "out", OPTS)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        (1.5, "label 1.5 (row 3) is not an integer"),
        (float("nan"), "label nan (row 3) is not an integer"),
    ],
)
def test_svhn_labels_must_be_exact(tmp_path, bad, message):
    import scipy.io

    write_svhn(tmp_path / "src", 20, 10, seed=0)
    path = tmp_path / "src" / "test_32x32.mat"
    mat = scipy.io.loadmat(path)
    y = mat["y"].astype(np.float64)
    y[3, 0] = bad  # torchvision's own reader would cast 1.5 to 1 without a word
    scipy.io.savemat(path, {"X": mat["X"], "y": y})
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare("svhn", tmp_path / "src", tmp_path / "out", OPTS)
    assert not (tmp_path / "out").exists()


def test_idx_headers(tmp_path):
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=True)
    path = tmp_path / "src" / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty or too short for an idx images file"):
        prepare("mnist", tmp_path / "src", tmp_path / "out", OPTS)
    write_idx(tmp_path / "src2", 20, 10, seed=0, gz=False)
    path = tmp_path / "src2" / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x803) + path.read_bytes()[4:])
    with pytest.raises(DataError, match=r"not an idx labels file \(magic 0x00000803"):
        prepare("mnist", tmp_path / "src2", tmp_path / "out", OPTS)


def test_symlink_loops_and_second_paths_are_refused(tmp_path):
    write_imagefolder(tmp_path / "src", ["a", "b"], 4, 8, seed=0)
    train = tmp_path / "src" / "train"
    (train / "a" / "loop").symlink_to(train / "a")
    with pytest.raises(DataError, match="loop: leads to .*already read"):
        prepare("imagefolder", tmp_path / "src", tmp_path / "out", OPTS)
    (train / "a" / "loop").unlink()
    (train / "b" / "up").symlink_to(train)
    with pytest.raises(DataError, match="up: leads to .*train, which is already read"):
        prepare("imagefolder", tmp_path / "src", tmp_path / "out", OPTS)
    (train / "b" / "up").unlink()
    # a class folder that is a link to images elsewhere is read once, as that class
    (tmp_path / "elsewhere").mkdir()
    for f in (train / "b").iterdir():
        f.rename(tmp_path / "elsewhere" / f.name)
    (train / "b").rmdir()
    (train / "b").symlink_to(tmp_path / "elsewhere")
    info = prepare("imagefolder", tmp_path / "src", tmp_path / "out", OPTS)
    assert info.train_class_counts == [4, 4]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height (PIL checks the size before decoding anything)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_decompression_bomb_is_one_line(tmp_path, capsys):
    write_imagefolder(tmp_path / "src", ["a", "b"], 2, 8, seed=0)
    bomb = tmp_path / "src" / "val" / "b" / "img_001.png"
    _png_header_only(bomb, 20000, 20000)
    refused(
        capsys,
        "prep",
        "imagefolder",
        "--source",
        tmp_path / "src",
        "--out",
        tmp_path / "o",
        needles=(str(bomb), "too large to decode safely", "decompression bomb"),
    )
    assert Image.MAX_IMAGE_PIXELS  # the limit was not switched off on the way


# ---------------------------------------------------------------- one line for the rest (6)


def test_bad_outputs_and_settings_are_one_line(tmp_path, capsys, run):
    root, data, out, _ = run
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["condense", "--preset", "mnist-smoke", "--data", data]
    refused(capsys, *base, "--out", afile, needles=(str(afile), "not a folder"))
    refused(capsys, *base, "--out", afile / "sub", needles=(str(afile / "sub"),))
    refused(
        capsys,
        *base,
        "--out",
        tmp_path / "r",
        "--set",
        "condense=3",
        needles=("condense is a section",),
    )
    refused(
        capsys,
        *base,
        "--out",
        tmp_path / "r",
        "--set",
        "condense.lr_codebook=nan",
        needles=("expected a finite number",),
    )
    write_idx(tmp_path / "src", 20, 10, seed=0, gz=False)
    refused(
        capsys,
        "prep",
        "mnist",
        "--source",
        tmp_path / "src",
        "--out",
        afile,
        needles=("not a folder",),
    )


def test_other_exception_classes_are_one_line():
    from submitit.core.utils import FailedJobError

    cases = [
        (PermissionError(errno.EACCES, "Permission denied", "/x/run"), "/x/run: Permission"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/run"), "/f/run: Not a dir"),
        (OSError(errno.ENOSPC, "No space left on device", "/d/a.pt"), "No space left"),
        (FloatingPointError("condensation loss nan at step 1"), "loss nan at step 1"),
        (FailedJobError("sbatch error\nUnable to contact slurm controller"), "could not be sub"),
        (KeyError("config"), "KeyError: 'config' (unexpected"),
    ]
    for error, needle in cases:
        message, code = cli._one_line(error)
        assert needle in message and "\n" not in message and code in (1, 2), message


def test_truncated_beton_and_checkpoint_without_config(run, tmp_path):
    root, data, out, _ = run
    cut = tmp_path / "cut"
    cut.mkdir()
    for p in data.iterdir():
        (cut / p.name).write_bytes(p.read_bytes())
    (cut / "test.beton").write_bytes((data / "test.beton").read_bytes()[:5000])
    with pytest.raises(DataError, match="test.beton: 5000 bytes, but meta.json says"):
        load_meta(cut)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    del state["config"]
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="no 'config' key"):
        checkpoint.Checkpoint.read(tmp_path / "checkpoint.pt")
    state["config"], state["format_version"] = {}, checkpoint.CHECKPOINT_FORMAT + 1
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="format version 2; .*upgrade gencond"):
        checkpoint.Checkpoint.read(tmp_path / "checkpoint.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_inspect_on_cuda_without_cuda(run, capsys):
    refused(capsys, "inspect", run[1], "--device", "cuda", needles=("no CUDA device",))


def test_debug_shows_the_trace(run, capsys, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    code, errors, err = main(capsys, "synthesize", run[0] / "nowhere")
    assert code == 2 and len(errors) == 1 and "Traceback" in err


def test_config_errors_are_config_errors():
    from engine.config import RunConfig

    with pytest.raises(ConfigError):
        RunConfig().override("gan=1")
    with pytest.raises(ConfigError):
        RunConfig().override("condense.lr_phi=inf")
    assert issubclass(InUseError, Exception)


# ---------------------------------------------------------------- help (7)


def _options(parser, path=("gencond",)):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif action.option_strings and "-h" not in action.option_strings:
            yield " ".join(path), action.option_strings[-1], action.help or ""


def test_every_option_is_explained():
    import re

    vague = [
        (cmd, opt)
        for cmd, opt, text in _options(cli.build_parser())
        if len(re.sub(r"\(default:[^)]*\)", "", text).split()) < 2
    ]
    assert vague == []


def test_condense_and_pretrain_help(capsys):
    for argv in (["condense", "--help"], ["pretrain", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "condense":
            assert "resumes from it" in text and "3 stopped by SIGTERM / SIGUSR2" in text
        else:
            assert "ipc, max_steps and condense.* are accepted but ignored" in text
            assert "keys every preset honours" not in text
