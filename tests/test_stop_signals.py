"""SIGTERM / SIGUSR2 on the commands other than condense (tests/test_distributed.py has its
signal test): the pretrain stage checkpoints its teacher and GAN phases and resumes bit for bit;
evaluate, synthesize and prep stop with one `stopped:` line, exit 3, leave nothing half-written
that looks complete, and a rerun finishes without redoing finished work.

The pretrain test signals a real `gencond pretrain` process from outside, as the condense test
does; the others send the signal to this very process from inside the command (os.kill from a
patched step), which places it exactly where the test wants it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from formats import write_idx
from helpers import ROOT, TINY, condense_args, rank_env, sets, single_rank_cli

from data_prep.meta import load_meta
from engine import checkpoint
from launch.cli import PREEMPTED_EXIT, main

# long enough phases for a signal to land in each: 60 teacher epochs of 7 steps, 60 GAN steps
PRETRAIN = [*TINY, "teacher.epochs=60", "gan.steps=60", "gan.checkpoint_every=10"]


def _tensors(obj, prefix=""):
    """Every tensor of a nested payload, by its path."""
    if torch.is_tensor(obj):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}.{k}"))
    return out


def _pretrain(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--preset", "mnist-smoke", "--data", data, "--out", out, *sets(*extra)]


def _wait_for_checkpoint(path: Path, phase: str, step: int, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()[1][-2000:]}")
        if path.is_file():
            saved = torch.load(path, weights_only=False)  # written atomically: never torn
            if saved["modules"]["phase"] == phase and saved["step"] >= step:
                return
        time.sleep(0.1)
    raise AssertionError(f"no {phase} checkpoint of step {step}")


@pytest.mark.subprocess
def test_pretrain_stopped_in_both_phases_resumes_bit_identically(toy_stage, tmp_path):
    """SIGTERM during the teacher's training, SIGUSR2 during the GAN's, then the same command
    to the end: every tensor of pretrained.pt equal to an uninterrupted run's."""
    data, _ = toy_stage
    ref = tmp_path / "uninterrupted"
    r = single_rank_cli(*_pretrain(data, ref, *PRETRAIN))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (ref / checkpoint.PRETRAIN_CHECKPOINT_FILE).exists()
    out = tmp_path / "stopped"
    ckpt = out / checkpoint.PRETRAIN_CHECKPOINT_FILE
    for sig, phase in ((signal.SIGTERM, "teacher"), (signal.SIGUSR2, "gan")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", *map(str, _pretrain(data, out, *PRETRAIN))],
            cwd=ROOT,
            env=rank_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        before = torch.load(ckpt, weights_only=False)["step"] if ckpt.exists() else 0
        _wait_for_checkpoint(ckpt, phase, 10 if phase == "teacher" else before + 10, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
        what = "teacher step" if phase == "teacher" else "GAN step"
        assert f"stopped by {sig.name} at {what}" in err and "checkpoint" in err, err[-2000:]
        assert not (out / "pretrained.pt").exists()
        saved = torch.load(ckpt, weights_only=False)
        assert saved["stage"] == "pretrain" and saved["modules"]["phase"] == phase
        if phase == "gan":
            assert "Resuming from" in err
    r = single_rank_cli(*_pretrain(data, out, *PRETRAIN))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming from" in r.stderr and "GAN step" in r.stderr
    assert not ckpt.exists()  # finished: nothing left to resume
    mine = torch.load(out / "pretrained.pt", weights_only=False)
    theirs = torch.load(ref / "pretrained.pt", weights_only=False)
    a, b = _tensors(mine), _tensors(theirs)
    assert a.keys() == b.keys() and len(a) > 20
    for k in b:
        assert torch.equal(a[k], b[k]), k
    assert mine["gan_log"] == theirs["gan_log"]
    assert mine["teacher_accuracy"] == theirs["teacher_accuracy"]


def test_pretrain_checkpoint_refuses_other_settings(tmp_path):
    """Resuming with another gan.* setting (or other data) is refused; gan.checkpoint_every
    and the device may change."""
    from common.errors import ConfigError, DataError
    from engine.presets import load_preset
    from engine.stages import _check_pretrain_resumable

    cfg = load_preset("mnist-smoke", TINY)
    saved = checkpoint.Checkpoint(3, 1.0, 1, cfg.to_dict(), {"data_identity": "abc"}, "pretrain")
    path = tmp_path / checkpoint.PRETRAIN_CHECKPOINT_FILE
    saved.save(path)
    saved = checkpoint.Checkpoint.read(path, stage="pretrain")
    _check_pretrain_resumable(
        saved, load_preset("mnist-smoke", [*TINY, "gan.checkpoint_every=7"]), "abc", path
    )
    with pytest.raises(ConfigError, match="gan.lr_g"):
        _check_pretrain_resumable(
            saved, load_preset("mnist-smoke", [*TINY, "gan.lr_g=0.1"]), "abc", path
        )
    with pytest.raises(DataError, match="other data"):
        _check_pretrain_resumable(saved, cfg, "xyz", path)
    with pytest.raises(DataError, match="not a gencond condensation checkpoint"):
        checkpoint.Checkpoint.read(path)  # a pretrain checkpoint is no condensation's


@pytest.fixture(scope="module")
def condensed(toy_stage, tmp_path_factory):
    data, pre = toy_stage
    run = tmp_path_factory.mktemp("stop") / "run"
    r = single_rank_cli(*condense_args(data, pre, run, "max_steps=2"))
    assert r.returncode == 0, r.stderr[-2000:]
    return data, run


def _stop_on_call(monkeypatch, module, name: str, call: int, sig=signal.SIGTERM) -> list:
    """Patch module.name to send `sig` to this process at its call number `call` (1-based),
    before doing its work."""
    original, calls = getattr(module, name), []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, patched)
    return calls


def _stopped_line(capfd) -> str:
    lines = [x for x in capfd.readouterr().err.splitlines() if x.startswith("stopped:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_evaluate_stopped_keeps_finished_trainings(condensed, monkeypatch, capfd):
    """Stopped before its third of four trainings: exit 3, no eval.json, two trainings kept;
    the rerun trains only the other two and writes what an uninterrupted evaluation writes."""
    import engine.evaluate

    data, run = condensed
    argv = ["evaluate", str(run), "--data", str(data), "--seeds", "2", "--epochs", "1"]
    argv += ["--baselines", "random"]
    assert main(argv) == 0
    reference = json.loads((run / "eval.json").read_text())["results"]
    (run / "eval.json").unlink()
    assert not (run / "eval_progress").exists()
    capfd.readouterr()

    with monkeypatch.context() as m:
        _stop_on_call(m, engine.evaluate, "train_and_test", 3, signal.SIGUSR2)
        assert main(argv) == PREEMPTED_EXIT
    line = _stopped_line(capfd)
    assert "stopped by SIGUSR2: run the same command again to finish" in line
    assert "2 of 4 trainings done" in line
    assert not (run / "eval.json").exists()
    assert len(list((run / "eval_progress").glob("*.json"))) == 2

    with monkeypatch.context() as m:
        calls = _stop_on_call(m, engine.evaluate, "train_and_test", 0)
        assert main(argv) == 0
    assert len(calls) == 2  # only the two unfinished trainings
    assert json.loads((run / "eval.json").read_text())["results"] == reference
    assert not (run / "eval_progress").exists()


def test_synthesize_stopped_leaves_the_folder_as_it_was(condensed, monkeypatch, capfd):
    import data_prep.beton

    _, run = condensed
    target = run / "synthetic"
    with monkeypatch.context() as m:  # first run stopped: no synthetic/ at all
        _stop_on_call(m, data_prep.beton, "write_beton", 1)
        assert main(["synthesize", str(run)]) == PREEMPTED_EXIT
    line = _stopped_line(capfd)
    assert "stopped by SIGTERM: run the same command again to finish" in line
    assert not target.exists() and not list(run.glob(".synthetic*"))
    assert main(["synthesize", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    assert {"images.pt", "labels.pt", "train.beton", "grid.png"} <= set(before)
    capfd.readouterr()
    with monkeypatch.context() as m:  # a later run stopped: the complete folder is kept
        _stop_on_call(m, data_prep.beton, "write_beton", 1, signal.SIGUSR2)
        assert main(["synthesize", str(run)]) == PREEMPTED_EXIT
    assert "stopped by SIGUSR2" in _stopped_line(capfd)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not list(run.glob(".synthetic*"))


def test_prep_stopped_leaves_nothing_that_looks_complete(tmp_path, monkeypatch, capfd):
    """Stopped while writing the test beton (the train beton done, in the folder built
    aside): exit 3, no DIR, no leftover; the rerun prepares it."""
    import data_prep.beton

    write_idx(tmp_path / "src", 40, 10, seed=0, gz=False)
    out = tmp_path / "out"
    argv = ["prep", "mnist", "--source", str(tmp_path / "src"), "--out", str(out)]
    with monkeypatch.context() as m:
        _stop_on_call(m, data_prep.beton, "write_beton", 2)
        assert main([*argv, "--workers", "1"]) == PREEMPTED_EXIT
    line = _stopped_line(capfd)
    assert "stopped by SIGTERM: run the same command again to finish" in line
    assert not (out / "meta.json").exists()
    assert not list(tmp_path.glob(".out.gencond-tmp-*"))
    assert main([*argv, "--workers", "1"]) == 0
    assert load_meta(out).train_count == 40


def test_stop_raises_restores_the_handlers():
    before = [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS]
    with pytest.raises(checkpoint.Stopped, match="stopped by SIGTERM: .* \\(why\\)"):
        with checkpoint.stop_raises("why"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS] == before


def test_pretrain_can_be_submitted_with_its_resolved_config(tmp_path):
    import argparse

    from engine.config import RunConfig
    from engine.presets import load_preset
    from launch.commands.jobs import SUBMITTABLE, condense_job_argv

    assert "pretrain" in SUBMITTABLE
    cfg = load_preset("mnist-smoke", TINY)
    parsed = argparse.Namespace(data=tmp_path / "d", out=tmp_path / "pre")
    argv = condense_job_argv(parsed, cfg, str(tmp_path / "logs"), "pretrain")
    assert argv[:2] == ["pretrain", "--config"] and "--pretrained" not in argv
    assert RunConfig.from_file(argv[2]).to_dict() == cfg.to_dict()
