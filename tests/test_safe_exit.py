"""Nothing hangs, nothing runs a stranger's code. Real `gencond` processes: pinned to
one CPU, interrupted while they start, fed crafted pickles, FIFOs and odd output paths."""

import json
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from formats import write_cifar, write_idx, write_imagefolder
from helpers import ROOT, run_cli, toy

from common import fsio
from common.errors import DataError

pytestmark = pytest.mark.subprocess

ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def gencond(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, env=ENV, **kw)


def one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one `error:` line on stderr holding every needle (beside rank 0's
    status lines), no traceback."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_a_writer_pinned_to_one_cpu_exits(tmp_path):
    """numba's TBB layer waited forever at interpreter exit on one CPU (the files were all
    written, the process never ended): launch/process.py puts TBB last."""
    write_idx(tmp_path / "src", 60, 20, seed=0, gz=True)
    one_cpu = {sorted(os.sched_getaffinity(0))[0]}
    r = gencond(
        "prep",
        "mnist",
        "--source",
        tmp_path / "src",
        "--out",
        tmp_path / "out",
        "--workers",
        1,
        timeout=150,
        preexec_fn=lambda: os.sched_setaffinity(0, one_cpu),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "meta.json").is_file()


def _interrupt(cmd: list, after: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("after", [1.0, 2.0])
def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, after):
    """While torch / FFCV import and kernels compile, a SIGINT gave a traceback (and exit -2,
    or was dropped and the run went on to exit 0)."""
    write_idx(tmp_path / "src", 60, 20, seed=0, gz=True)
    cmd = [sys.executable, "-m", "launch.cli", "prep", "mnist", "--source", str(tmp_path / "src")]
    r = _interrupt([*cmd, "--out", str(tmp_path / "out")], after)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()][-1] == "interrupted"


def test_a_dropped_interrupt_still_ends_the_command():
    """The KeyboardInterrupt raised inside a ctypes callback (llvmlite's, while numba compiles)
    is printed as 'Exception ignored' and dropped, and the command went on to exit 0."""
    code = textwrap.dedent(
        """
        import argparse, ctypes, os, signal, sys, time
        from launch import cli

        def work(args):
            callback = ctypes.CFUNCTYPE(None)(lambda: os.kill(os.getpid(), signal.SIGINT))
            callback()  # KeyboardInterrupt raised inside the callback: ctypes drops it
            for _ in range(100):
                time.sleep(0.1)
            return 0

        parser = argparse.ArgumentParser()
        parser.set_defaults(handler=work, debug=False)
        cli.build_parser = lambda: parser
        sys.exit(cli.main([]))
        """
    )
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.strip() == "interrupted"
    assert time.monotonic() - start < 9  # not the 10 s of work


class _RunsCode:
    """Pickled, it runs `touch MARKER` when loaded by an unrestricted unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_run(tmp_path: Path) -> tuple[Path, Path]:
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    run.mkdir()
    payload = {"generator": _RunsCode(marker), "format_version": 1, "config": {}, "meta": {}}
    torch.save(payload, run / "condensed.pt")
    return run, marker


def test_a_crafted_condensed_pt_is_refused_not_run(tmp_path):
    run, marker = _crafted_run(tmp_path)
    data = toy(tmp_path / "data", classes=2, per_class=6)
    for args in (["synthesize", run], ["evaluate", run, "--data", data]):
        r = gencond(*args)
        one_error(r, str(run / "condensed.pt"), "refused", "posix.system")
        assert not marker.exists(), args


def test_a_crafted_cifar_batch_is_refused_not_run(tmp_path):
    write_cifar(tmp_path / "src", hundred=False, per_batch=50, seed=0)
    batch, marker = tmp_path / "src" / "cifar-10-batches-py" / "data_batch_3", tmp_path / "MARKER"
    with open(batch, "wb") as f:
        pickle.dump({"data": _RunsCode(marker), "labels": [0]}, f, protocol=2)
    r = gencond("prep", "cifar10", "--source", tmp_path / "src", "--out", tmp_path / "out")
    one_error(r, str(batch), "refused", "posix.system")
    assert not marker.exists()


def _odd_outputs(tmp_path: Path) -> dict[str, Path]:
    """An output path of each kind that is not a regular file."""
    odd = tmp_path / "odd"
    odd.mkdir()
    os.mkfifo(odd / "fifo.png")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(odd / "sock.png"))
    return {"FIFO": odd / "fifo.png", "socket": odd / "sock.png", "device": Path("/dev/null")}


def test_odd_output_paths_are_refused_in_the_shared_writer(tmp_path):
    """A FIFO, socket or device node as an output was replaced by a regular file (or, for a
    device, a rename over /dev/null was tried): refused in one line, left as it was."""
    for kind, path in _odd_outputs(tmp_path).items():
        before = os.stat(path).st_mode
        for write in (
            lambda p: fsio.write_json(p, {"a": 1}),
            lambda p: fsio.save_torch({"a": torch.zeros(2)}, p),
        ):
            with pytest.raises(DataError, match=f"{path}: is a"):
                write(path)
        assert os.stat(path).st_mode == before, kind


def test_grid_onto_a_fifo_is_one_line_and_a_symlink_is_written_through(tmp_path):
    data = toy(tmp_path / "data", classes=2, per_class=6)
    fifo = _odd_outputs(tmp_path)["FIFO"]
    r = gencond("inspect", data, "--grid", fifo, timeout=120)
    one_error(r, str(fifo), "FIFO")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    target, link = tmp_path / "real.png", tmp_path / "link.png"
    target.write_bytes(b"old")
    link.symlink_to(target)
    r = gencond("inspect", data, "--grid", link, timeout=120)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and target.read_bytes()[:4] == b"\x89PNG"


def test_a_symlinked_output_is_written_through_by_every_writer(tmp_path):
    """One rule for every writer: the link stays, the file it leads to is replaced atomically
    (dangling: created where it points); a symlinked folder is rebuilt where it leads."""
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    fsio.write_json(link, {"a": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"a": 1}
    dangling = tmp_path / "dangling.pt"
    dangling.symlink_to(tmp_path / "made.pt")
    fsio.save_torch({"a": 1}, dangling)
    assert dangling.is_symlink() and (tmp_path / "made.pt").is_file()
    real_dir, dir_link = tmp_path / "real_dir", tmp_path / "dir_link"
    real_dir.mkdir()
    dir_link.symlink_to(real_dir)
    with fsio.build_dir(dir_link) as work:
        (work / "x").write_text("new")
    assert dir_link.is_symlink() and (real_dir / "x").read_text() == "new"


def test_a_fifo_in_an_image_folder_is_one_line_not_a_hang(tmp_path):
    """Opening a FIFO named like an image waited forever for a writer."""
    write_imagefolder(tmp_path / "src", ["a", "b"], per_class=3, size=8, seed=0)
    fifo = tmp_path / "src" / "train" / "b" / "zz.png"
    os.mkfifo(fifo)
    r = gencond("prep", "imagefolder", "--source", tmp_path / "src", "--out", tmp_path / "out")
    one_error(r, str(fifo), "FIFO")
    assert not (tmp_path / "out" / "meta.json").exists()
