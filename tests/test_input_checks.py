"""Inputs that load but are wrong, and results that get lost. Each
case ends in one `error:` line naming its cause (or a recorded warning), a non-zero exit where
refused, and nothing half-written or stale left beside the result.

Most cases run in this process on one tiny condensation stopped at step 4 of 8."""

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from formats import write_imagefolder
from helpers import TINY, sets, toy
from PIL import Image

from common import fsio
from common.errors import ConfigError, DataError
from data_prep.meta import load_meta
from engine import config as config_mod
from engine import preflight, stages
from engine.class_plan import ClassPlan
from engine.config import RunConfig
from engine.presets import load_preset
from launch import cli
from launch.sweep import sweep_points


def main(capsys, *argv) -> tuple[int, list[str], str]:
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    err = captured.err + captured.out
    return code, [line for line in err.splitlines() if line.startswith("error:")], err


def refused(capsys, *argv, needles=()) -> str:
    code, errors, err = main(capsys, *argv)
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(root, data, out, argv): tiny data and a condensation stopped at step 4 of 8."""
    root = tmp_path_factory.mktemp("checks")
    data = toy(root / "data")
    out = root / "run"
    argv = ["condense", "--preset", "mnist-smoke", "--data", data, "--out", out]
    argv += sets(*TINY, "max_steps=4")
    assert cli.main([str(a) for a in argv]) == 0
    return root, data, out, argv


def copy_run(run, name: str) -> Path:
    root, _, out, _ = run
    target = root / name
    shutil.copytree(out, target)
    return target


# ------------------------------------------------ 5: a finished run or stage is not replaced


def test_condense_with_another_config_into_a_finished_run(run, capsys):
    root, data, _, argv = run
    out = copy_run(run, "finished")
    (out / "checkpoint.pt").unlink()  # as a finished run leaves it
    (out / "synthetic").mkdir()
    (out / "synthetic" / "images.pt").write_text("old")
    (out / "eval.json").write_text("{}")
    before = (out / "condensed.pt").read_bytes()
    other = [out if a == run[2] else a for a in argv] + sets("condense.lr_codebook=0.02")
    refused(capsys, *other, needles=(str(out / "condensed.pt"), "condense.lr_codebook", "--force"))
    assert (out / "condensed.pt").read_bytes() == before
    assert (out / "eval.json").exists()  # nothing touched
    code, errors, err = main(capsys, *other, "--force")
    assert code == 0, err
    assert not (out / "synthetic").exists() and not (out / "eval.json").exists()
    made = torch.load(out / "condensed.pt", weights_only=False)["config"]
    assert made["condense"]["lr_codebook"] == 0.02


def test_pretrain_into_an_existing_stage(run, capsys):
    root, data, _, _ = run
    pre = root / "pre-existing"
    shutil.copytree(run[2] / "pretrained", pre)
    (pre / "pretrain.json").write_text(json.dumps({"teacher_accuracy": 1.0}))
    sha = fsio.sha256_file(pre / "pretrained.pt")
    argv = ["pretrain", "--preset", "mnist-smoke", "--data", data, "--out", pre, *sets(*TINY)]
    code, errors, err = main(capsys, *argv)  # the same settings: reused, not rewritten
    assert code == 0 and not errors, err
    assert fsio.sha256_file(pre / "pretrained.pt") == sha
    refused(capsys, *argv, *sets("gan.steps=7"), needles=("gan.steps differs", "--force"))
    assert fsio.sha256_file(pre / "pretrained.pt") == sha
    code, errors, err = main(capsys, *argv, *sets("gan.steps=7"), "--force")
    assert code == 0, err
    assert torch.load(pre / "pretrained.pt", weights_only=False)["config"]["gan"]["steps"] == 7


# ------------------------------------------------ 6: gather merges only parts of one evaluation


def test_gather_refuses_parts_that_do_not_belong_together(run, capsys):
    root, data, _, _ = run
    out = copy_run(run, "gather")
    argv = ["evaluate", out, "--data", data, "--seeds", 2, "--epochs", 1, "--baselines", ""]
    code, errors, err = main(capsys, *argv, "--seed-index", 0)
    assert code == 0, err
    parts = out / "eval_parts"
    first = json.loads((parts / "seed_0.json").read_text())
    assert first["condensed_sha256"] == fsio.sha256_file(out / "condensed.pt")
    second = dict(first, seed_index=1, epochs=3, eval=dict(first["eval"], epochs=3))
    (parts / "seed_1.json").write_text(json.dumps(second))
    gather = ["evaluate", out, "--data", data, "--seeds", 2, "--gather"]
    refused(capsys, *gather, needles=("seed_0.json and eval_parts/seed_1.json", "epochs"))
    assert not (out / "eval.json").exists()
    (parts / "seed_1.json").write_text(json.dumps(dict(first, seed_index=1)))
    assert main(capsys, *gather)[0] == 0  # one evaluation's parts merge
    assert json.loads((out / "eval.json").read_text())["eval"]["seeds"] == 2  # not a part's 1
    (out / "eval.json").unlink()
    payload = torch.load(out / "condensed.pt", weights_only=False)
    payload["steps"] = 5  # another condensed.pt than the parts were made from
    torch.save(payload, out / "condensed.pt")
    refused(capsys, *gather, needles=("eval_parts/seed_0.json", "condensed.pt"))
    (parts / "seed_1.json").write_text('{"seed_index": 1, "res')
    with pytest.raises(DataError, match="seed_1.json: not a readable evaluation part"):
        fsio.read_json(parts / "seed_1.json", "evaluation part")
    assert not (out / "eval.json").exists()


# ------------------------------------------------ 7: checkpoints and artifacts that cannot be


def test_checkpoint_beyond_the_end_is_refused(run, capsys):
    root, data, _, argv = run
    out = copy_run(run, "beyond")
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    state["step"] = 100  # the run has 8 steps
    torch.save(state, out / "checkpoint.pt")
    before = (out / "condensed.pt").read_bytes()
    other = [out if a == run[2] else ("max_steps=0" if a == "max_steps=4" else a) for a in argv]
    refused(capsys, *other, needles=("checkpoint.pt", "step 100", "0..8"))
    assert (out / "condensed.pt").read_bytes() == before


def test_non_finite_artifact_is_refused_at_load(run, capsys):
    out = copy_run(run, "nan")
    payload = torch.load(out / "condensed.pt", weights_only=False)
    payload["codebook"][0, 0] = float("nan")
    torch.save(payload, out / "condensed.pt")
    refused(capsys, "synthesize", out, needles=("condensed.pt", "codebook", "NaN"))
    assert not (out / "synthetic").exists()
    pre = out / "pretrained" / "pretrained.pt"
    stage = torch.load(pre, weights_only=False)
    name = next(iter(stage["generator"]))
    stage["generator"][name].view(-1)[0] = float("inf")
    torch.save(stage, pre)
    with pytest.raises(DataError, match=f"generator\\['{name}'\\] holds NaN or inf"):
        stages.artifact.PretrainedStage.read(pre)


# ------------------------------------------------ 8: inputs that load but are wrong


def test_prepared_files_that_do_not_belong_together(run, tmp_path):
    _, data, _, _ = run
    mixed = tmp_path / "mixed"
    shutil.copytree(data, mixed)
    blob = bytearray((mixed / "train.beton").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, other content (another prep's, or damaged)
    (mixed / "train.beton").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="train.beton: its content is not what meta.json records"):
        load_meta(mixed)
    shutil.copy(data / "train.beton", mixed / "train.beton")
    load_meta(mixed)
    meta = json.loads((mixed / "meta.json").read_text())
    meta["test_count"] += 1
    meta["digests"] = {}  # a meta.json of an older gencond: the header count still checks
    (mixed / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"test.beton: holds \d+ images, but meta.json says"):
        load_meta(mixed)


def test_sixteen_bit_images_are_refused(capsys, tmp_path):
    write_imagefolder(tmp_path / "src", ["a", "b"], 3, 8, seed=0)
    wide = tmp_path / "src" / "train" / "b" / "img_001.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(wide)
    assert Image.open(wide).mode.startswith("I")
    out = tmp_path / "out"
    argv = ["prep", "imagefolder", "--source", tmp_path / "src", "--out", out]
    refused(capsys, *argv, needles=(str(wide), "16-bit", "8 bits"))
    assert not (out / "meta.json").exists()


@pytest.mark.parametrize(
    "assignment, needle",
    [
        ("condense.lr_codebook=-0.1", "condense.lr_codebook=-0.1 is out of range: it must be >= 0"),
        ("condense.classes_per_step=-2", "condense.classes_per_step=-2 is out of range"),
        ("teacher.lr=0", "teacher.lr=0.0 is out of range: it must be > 0"),
        ("gan.betas=0.5,1.5", "gan.betas=0.5,1.5 is out of range: it must be in [0, 1)"),
        ("condense.momentum=1", "condense.momentum=1.0 is out of range: it must be in [0, 1)"),
        ("seed=-1", "seed=-1 is out of range: it must be >= 0"),
    ],
)
def test_set_values_out_of_range_name_the_key_and_range(capsys, tmp_path, assignment, needle):
    with pytest.raises(ConfigError) as e:
        load_preset("mnist-smoke", [assignment])
    assert needle in str(e.value)
    argv = ["condense", "--preset", "mnist-smoke", "--data", tmp_path, "--out", tmp_path / "o"]
    refused(capsys, *argv, "--set", assignment, needles=(needle,))
    assert not (tmp_path / "o").exists()


def test_every_numeric_key_has_a_declared_range():
    for cls in (
        config_mod.RunConfig,
        config_mod.TeacherConfig,
        config_mod.GanConfig,
        config_mod.CondenseConfig,
        config_mod.EvalConfig,
    ):
        for f in dataclasses.fields(cls):
            numeric = isinstance(f.default, int | float) and not isinstance(f.default, bool)
            floats = isinstance(f.default, tuple) and f.default and isinstance(f.default[0], float)
            if numeric or floats:
                assert f.name in cls.LIMITS, f"{cls.__name__}.{f.name} has no declared range"


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"condense": {"ipc": "10"}}, 'condense.ipc must be an integer, got "10"'),
        ({"condense": {"lr_phi": -1}}, "condense.lr_phi=-1 is out of range"),
        ({"eval": {"models": [1]}}, "eval.models must be a list of strings"),
        ({"teacher": 3}, "teacher must be an object of teacher.* keys"),
        ({"condense": {"finetune_generator": "no"}}, "finetune_generator must be a boolean"),
    ],
)
def test_config_file_types_and_ranges_name_key_and_file(capsys, tmp_path, content, needle):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    argv = ["condense", "--config", path, "--data", tmp_path, "--out", tmp_path / "o"]
    refused(capsys, *argv, needles=(str(path), needle))


def test_settings_a_pretrained_stage_makes_moot_are_warned_and_recorded(run, capsys):
    root, data, out, _ = run
    target = root / "moot"
    argv = ["condense", "--preset", "mnist-smoke", "--data", data, "--out", target]
    argv += ["--pretrained", out / "pretrained", *sets(*TINY, "max_steps=2", "gan.steps=7")]
    code, errors, err = main(capsys, *argv)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "did not apply" in line]
    assert len(warnings) == 1 and "gan.steps=7 (stage: 6)" in warnings[0], err
    recorded = json.loads((target / "provenance.json").read_text())["not_applied"]
    assert recorded == {"gan.steps": {"asked": 7, "stage": 6}}
    payload = torch.load(target / "condensed.pt", weights_only=False)
    assert payload["provenance"]["not_applied"] == recorded


@pytest.mark.parametrize(
    "grid, variants, needle",
    [
        (["ipc=1,2", "condense.ipc=3"], None, "sets condense.ipc again"),
        (["ipc=1,1"], None, "would share the folder ipc-1"),
        ([], {"it gan": [], "it-gan": []}, "would share the folder variant-it-gan"),
        (["variant=a"], {"a": []}, "sets variant again"),
    ],
)
def test_sweep_axes_and_variants_that_collide_are_refused(grid, variants, needle):
    with pytest.raises(ConfigError, match=needle):
        sweep_points(grid, variants)


# ------------------------------------------------ 11: errors that name their cause


def test_argparse_errors_are_one_line(capsys):
    for argv in (["condense", "--bogus"], ["evaluate", "x", "--data", "y", "--seeds", "0"], []):
        code, errors, err = main(capsys, *argv)
        assert code == 2 and len(errors) == 1 and "usage:" not in err, err
        assert "--help" in errors[0]


def test_full_disk_names_the_file_and_its_own_filesystem(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(fsio, "free_bytes", lambda p: asked.append(Path(p)) or 12345)
    where = tmp_path / "deep" / "images.pt"
    inner = OSError(errno.ENOSPC, "No space left on device", str(where))
    try:
        raise RuntimeError("PytorchStreamWriter failed writing file") from inner
    except RuntimeError as e:
        message, status = cli._one_line(e)
    assert status == 2 and str(where) in message and "12.3 kB free" in message, message
    assert asked == [where.parent]
    mapped = fsio.disk_error(OSError(errno.ENOSPC, "No space left on device"), None)
    assert "did not name" in str(mapped) and "?" not in str(mapped)


def test_memory_preflight_uses_available_memory_and_the_batch(monkeypatch, run):
    import psutil

    _, data, _, _ = run
    meta = load_meta(data)
    cfg = load_preset("mnist-smoke", TINY)

    class Memory:
        total, available = 1 << 40, 1 << 20  # a big machine, nearly all of it in use

    plan = ClassPlan.of(cfg.condense, meta.num_classes, cfg.seed)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    with pytest.raises(ConfigError, match="memory per step.*available"):
        preflight.check_condense(cfg, meta, plan)
    monkeypatch.undo()
    cfg.condense.phi_batch = 10**9  # a real batch no machine holds
    with pytest.raises(ConfigError, match="memory per step"):
        preflight.check_condense(cfg, meta, plan)


def test_recorded_config_round_trips(tmp_path):
    cfg = load_preset("mnist-smoke", TINY)
    cfg.to_file(tmp_path / "c.json")
    assert RunConfig.from_file(tmp_path / "c.json") == cfg
