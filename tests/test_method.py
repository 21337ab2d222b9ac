"""The method through the real command on a tiny dataset: pretrain, condense, synthesize,
evaluate; artifact round trip; bad input refused with one line."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import TINY, assert_one_error, sets, toy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny condensation shared by the tests below (pretrain runs inside condense)."""
    from helpers import run_cli

    root = tmp_path_factory.mktemp("method")
    data = toy(root / "data")
    r = run_cli(
        "condense", "--preset", "mnist-smoke", "--data", data, "--out", root / "run", *sets(*TINY)
    )
    assert r.returncode == 0, r.stderr
    return root, data, root / "run", r


def test_condense_writes_the_contract_files(run):
    root, data, out, result = run
    payload = torch.load(out / "condensed.pt", weights_only=False)
    for key in ("generator", "codebook", "class_embeddings", "config", "meta", "version"):
        assert key in payload
    assert payload["codebook"].shape == (3, 8)
    assert payload["class_embeddings"].shape[0] == 4
    assert payload["meta"]["dataset"] == "mnist"
    assert payload["steps"] == 2 * 2 * 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 8
    assert (out / "pretrained" / "pretrained.pt").is_file()
    assert "artifact_bytes" in result.stdout and "pixel_set_bytes" in result.stdout


def test_condense_ends_with_loss_terms_and_set_spread(run):
    _, _, out, result = run
    report = json.loads((out / "diagnostics.json").read_text())
    terms = {r["term"]: r for r in report["terms"]}
    assert {"cls", "adv", "intra", "disc_acc", "feature", "inter"} <= set(terms)
    assert abs(terms["cls"]["chance"] - np.log(4)) < 1e-9
    assert abs(terms["intra"]["chance"] - np.log(3)) < 1e-9
    assert report["spread"]["within_class_real"] > 0
    assert 0 <= report["teacher_agreement"] <= 1
    assert 0 <= report["pixels"]["top"] <= 1 and 0 <= report["pixels"]["top_real"] <= 1
    assert all(t["per_phi"] is not None for t in report["terms"])  # outer iterations logged
    assert "Loss terms" in result.stdout and "within-class distance" in result.stdout
    assert "teacher agrees with the label" in result.stdout
    assert -1 <= report["conditions"]["mean_cosine"] <= report["conditions"]["max_cosine"] <= 1
    assert "cosine between class conditions" in result.stdout
    assert report["movement"]["teacher_features"] > 0  # G and the codes were trained
    assert "moved from the pretrained G's images" in result.stdout
    for line in report["warnings"]:
        assert "warning: " + line.split(" ")[0] in result.stderr.replace("\n", " ")


def test_an_ipc_1_run_warns_about_nothing_that_cannot_apply(run, cli, tmp_path):
    root, data, out, _ = run
    one = tmp_path / "ipc1"
    args = ("--data", data, "--out", one, "--pretrained", out / "pretrained")
    r = cli("condense", "--preset", "mnist-smoke", *args, *sets(*TINY, "ipc=1"))
    assert r.returncode == 0, r.stderr
    report = json.loads((one / "diagnostics.json").read_text())
    assert "intra" not in {t["term"] for t in report["terms"]}  # 0 by definition with K = 1
    assert report["spread"]["within_class"] is None and report["spread"]["collapsed_classes"] == []
    assert report["spread"]["within_class_real"] > 0  # measured on 10 real images a class
    text = " ".join(report["warnings"]) + r.stderr
    for cannot in ("intra", "collapsed", "hardly moved"):
        assert cannot not in text, text
    assert "none (one image a class)" in r.stdout
    r = cli("evaluate", one, "--data", data, "--seeds", "1", "--epochs", "2", "--baselines=random")
    assert r.returncode == 0, r.stderr
    assert "nearly identical" not in r.stdout + r.stderr  # no within-class spread to judge
    report = json.loads((one / "eval.json").read_text())
    spread = report["diagnostics"]["diversity_teacher_features"]
    assert spread["condensed"]["within_class"] is None and spread["condensed"]["ratio"] is None
    assert spread["random"]["between_class"] > 0


def test_a_coreset_start_is_fitted_once_for_runs_that_share_it(run, cli, tmp_path):
    root, data, out, _ = run
    cache = tmp_path / "fit-cache"
    start = ("condense.coreset_init=herding", "condense.coreset_fit_steps=5")
    first, second = tmp_path / "a", tmp_path / "b"
    common = ("--pretrained", out / "pretrained", "--fit-cache", cache)
    stopped = sets(*TINY, *start, "max_steps=2")
    args = ("condense", "--preset", "mnist-smoke", "--data", data)
    r = cli(*args, "--out", first, *common, *stopped)
    assert r.returncode == 0, r.stderr
    assert "Fitted to the herding coreset" in r.stderr and "Reusing" not in r.stderr
    assert (first / "coreset_fit.pt").is_file() and len(list(cache.glob("*.pt"))) == 1
    r = cli("condense", "--preset", "mnist-smoke", "--data", data, "--out", second, *common,
            *sets(*TINY, *start, "condense.weight_intra=0.5"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Reusing the fitted start" in r.stderr and "Fitted to" not in r.stderr
    assert not (second / "coreset_fit.pt").exists()  # finished: nothing left to resume
    r = cli("condense", "--preset", "mnist-smoke", "--data", data, "--out", first, *common,
            *sets(*TINY, *start))  # fmt: skip
    assert r.returncode == 0, r.stderr  # resumed from the checkpoint: no fit, no reuse
    assert "Resuming" in r.stderr and "Fitted to" not in r.stderr and "Reusing" not in r.stderr


def test_truncated_codes_stay_fixed(run):
    root, data, _, _ = run
    from helpers import run_cli

    out = root / "truncated"
    extra = sets(*TINY, "condense.codebook=truncated", "condense.finetune_generator=true")
    pre = root / "run" / "pretrained"
    args = ["--preset", "mnist-smoke", "--data", data, "--out", out, "--pretrained", pre]
    r = run_cli("condense", *args, *extra)
    assert r.returncode == 0, r.stderr
    from engine.generator import init_codebook

    codes = torch.load(out / "condensed.pt", weights_only=False)["codebook"]
    assert torch.equal(codes, init_codebook(3, 8, "truncated", 0.5, 0))
    assert codes.abs().max() <= 0.5


def test_synthesize_round_trip(run, cli):
    from engine.stages import load_condensed, synthetic_set

    root, data, out, _ = run
    r = cli("synthesize", out)
    assert r.returncode == 0, r.stderr
    images = torch.load(out / "synthetic" / "images.pt")
    labels = torch.load(out / "synthetic" / "labels.pt")
    assert images.shape == (12, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    again, _ = synthetic_set(load_condensed(out))  # the artifact regenerates the same set
    torch.testing.assert_close(again, images)
    assert (out / "synthetic" / "grid.png").is_file()
    from ffcv.loader import Loader, OrderOption

    from data_prep.loaders import Normalizer
    from data_prep.meta import DatasetMeta

    beton = Loader(
        str(out / "synthetic" / "train.beton"), batch_size=12, seed=0, order=OrderOption.SEQUENTIAL
    )
    (stored, stored_labels), *rest = list(beton)
    assert not rest  # one batch: all 12 images
    meta = DatasetMeta(**load_condensed(out).meta)
    pixels = Normalizer(meta.mean, meta.std).denormalize(images).permute(0, 2, 3, 1)
    assert torch.equal(torch.as_tensor(stored), pixels)  # the uint8 images, in class order
    assert torch.as_tensor(stored_labels).flatten().tolist() == labels.tolist()


def test_evaluate_writes_eval_json(run, cli):
    root, data, out, _ = run
    r = cli("evaluate", out, "--data", data, "--seeds", "2", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "eval.json").read_text())
    assert report["ipc"] == 3 and report["epochs"] == 2
    for name in ("condensed", "plain_generator", "random", "herding"):
        entry = report["results"][name]["convnet"]
        assert len(entry["accs"]) == 2
        assert entry["mean"] == pytest.approx(np.mean(entry["accs"]))
        assert entry["std"] == pytest.approx(np.std(entry["accs"]))
    div = report["diagnostics"]["diversity_teacher_features"]["condensed"]
    assert div["within_class"] > 0  # not collapsed
    assert "condensed" in r.stdout and "random" in r.stdout


def test_a_moved_run_folder_still_synthesizes_and_evaluates(run, cli, tmp_path):
    """condensed.pt records its pretrain folder relative to the run: a copy of the run folder
    elsewhere, with the original gone, works as the original did."""
    import shutil

    root, data, out, _ = run
    assert torch.load(out / "condensed.pt", weights_only=False)["pretrained"] == "pretrained"
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, moved)
    away = root / "run-away"
    out.rename(away)  # the original path no longer exists
    try:
        r = cli("synthesize", moved)
        assert r.returncode == 0, r.stderr
        assert (moved / "synthetic" / "grid.png").is_file()
        r = cli("evaluate", moved, "--data", data, "--seeds", "1", "--epochs", "1")
        assert r.returncode == 0, r.stderr
        assert json.loads((moved / "eval.json").read_text())["results"]["condensed"]
    finally:
        away.rename(out)


def test_artifacts_of_a_newer_format_are_refused(run, cli, tmp_path):
    from engine.artifact import FORMAT_VERSION

    root, data, out, _ = run
    payload = torch.load(out / "condensed.pt", weights_only=False)
    assert payload["format_version"] == FORMAT_VERSION
    newer = tmp_path / "newer"
    newer.mkdir()
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer / "condensed.pt")
    assert_one_error(cli("synthesize", newer), f"format version {FORMAT_VERSION + 1}")
    stage = torch.load(out / "pretrained" / "pretrained.pt", weights_only=False)
    assert stage["format_version"] == FORMAT_VERSION and "sha256" not in stage


def test_ipc_zero_is_refused(run, cli, tmp_path):
    _, data, _, _ = run
    r = cli(
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        tmp_path / "x",
        "--set",
        "ipc=0",
    )
    assert_one_error(r, "ipc must be at least 1")
    assert not (tmp_path / "x").exists()


def test_unknown_preset_and_key(run, cli, tmp_path):
    _, data, _, _ = run
    r = cli("condense", "--preset", "mnist-ipc7", "--data", data, "--out", tmp_path / "x")
    assert_one_error(r, "unknown preset 'mnist-ipc7'")
    r = cli(
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        tmp_path / "x",
        "--set",
        "condense.lr_codbook=1",
    )
    assert_one_error(r, "unknown key 'lr_codbook'", "lr_codebook")


def test_preset_for_another_dataset(run, cli, tmp_path):
    _, data, _, _ = run
    r = cli("condense", "--preset", "cifar10-ipc10", "--data", data, "--out", tmp_path / "x")
    assert_one_error(r, "preset cifar10-ipc10 is for cifar10", "holds mnist", "mnist-ipc10")


def test_artifact_data_mismatch(run, cli, tmp_path):
    _, _, out, _ = run
    other = toy(tmp_path / "other", classes=5)
    r = cli("evaluate", out, "--data", other, "--seeds", "1", "--epochs", "1")
    assert_one_error(r, "condensed.pt", "num_classes 4", "num_classes 5")


def test_missing_teacher(run, cli, tmp_path):
    _, data, _, _ = run
    (tmp_path / "pre").mkdir()
    r = cli(
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        tmp_path / "x",
        "--pretrained",
        tmp_path / "pre",
    )
    assert_one_error(r, str(tmp_path / "pre" / "pretrained.pt"), "gencond pretrain")


def test_missing_artifact(cli, tmp_path):
    r = cli("synthesize", tmp_path)
    assert_one_error(r, str(tmp_path / "condensed.pt"))


def test_changed_pretrain_settings_are_not_silently_reused(run, cli, tmp_path):
    _, data, out, _ = run
    tiny = [a for a in TINY if not a.startswith("gan.steps")] + ["gan.steps=7"]
    # a finished run with other settings: refused as a whole
    r = cli("condense", "--preset", "mnist-smoke", "--data", data, "--out", out, *sets(*tiny))
    assert_one_error(r, str(out / "condensed.pt"), "gan.steps differs", "--force")
    # a folder holding only its pretrain stage (stopped before the loop): the stage is not reused
    fresh = tmp_path / "run"
    shutil.copytree(out / "pretrained", fresh / "pretrained")
    r = cli("condense", "--preset", "mnist-smoke", "--data", data, "--out", fresh, *sets(*tiny))
    assert_one_error(r, str(fresh / "pretrained"), "gan.steps=6", "asks for 7")


def test_gan_terms_learn_against_the_current_phi(run):
    # D and the head start afresh with every phi (steps 1 and 5 of this run) and take
    # disc_steps updates a step: on the later steps of each phi, D separates the fresh real
    # and synthetic batches it has not yet seen
    _, _, out, _ = run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    later = [r["disc_acc"] for r in records if r["step"] not in (1, 5)]
    assert np.mean(later) > 0.7, later


def test_condense_from_a_config_file_is_the_same_run(run, cli, tmp_path):
    """`condense --config FILE` (what a submitted job runs) with the run's own resolved config
    ends bit-identical to the run made from --preset and --set."""
    from helpers import params

    from engine.config import RunConfig

    root, data, out, _ = run
    config = tmp_path / "config.json"
    RunConfig.from_dict(torch.load(out / "condensed.pt", weights_only=False)["config"]).to_file(
        config
    )
    again = tmp_path / "again"
    args = ["--data", data, "--out", again, "--pretrained", out / "pretrained"]
    r = cli("condense", "--config", config, *args)
    assert r.returncode == 0, r.stderr
    mine, theirs = params(again), params(out)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert_one_error(
        cli("condense", "--config", config, "--preset", "mnist-smoke", *args),
        "--config FILE is the whole config",
    )
    config.write_text(config.read_text().replace('"ipc"', '"ipcs"'))
    assert_one_error(cli("condense", "--config", config, *args), "unknown key 'condense.ipcs'")
    assert_one_error(cli("condense", *args), "give --preset NAME")


def test_a_submitted_condensation_carries_its_resolved_config(run, tmp_path):
    import argparse

    from engine.config import RunConfig
    from engine.presets import load_preset
    from launch.commands.jobs import condense_job_argv

    _, data, out, _ = run
    cfg = load_preset("mnist-smoke", TINY)
    parsed = argparse.Namespace(data=data, out=out, pretrained=None, allow_mismatch=False)
    argv = condense_job_argv(parsed, cfg, str(tmp_path / "logs"))
    assert argv[:2] == ["condense", "--config"] and "--preset" not in argv and "--set" not in argv
    assert RunConfig.from_file(argv[2]).to_dict() == cfg.to_dict()


def test_a_standardised_condition_is_what_the_stage_stores_and_condense_uses(cli, tmp_path):
    """gan.condition_norm=standardised: the stage keeps the raw class embeddings and stores the
    standardised table G was pretrained with; pretrain.json's cosine is that table's, and the
    condensed artifact carries the same table."""
    data = toy(tmp_path / "data")
    pre, out = tmp_path / "pre", tmp_path / "run"
    norm = ["gan.condition_norm=standardised"]
    r = cli(
        "pretrain", "--preset", "mnist-smoke", "--data", data, "--out", pre, *sets(*TINY, *norm)
    )
    assert r.returncode == 0, r.stderr
    stage = torch.load(pre / "pretrained.pt", weights_only=False)
    raw, table = stage["class_embeddings"].double(), stage["conditions"].double()
    assert not torch.allclose(raw, table)
    assert torch.allclose(
        table.mean(0), torch.zeros(table.shape[1], dtype=torch.float64), atol=1e-5
    )
    live = raw.std(0, correction=0) > 1e-6
    expected = (raw[:, live] - raw[:, live].mean(0)) / raw[:, live].std(0, correction=0)
    assert torch.allclose(table[:, live], expected, atol=1e-4)
    summary = json.loads((pre / "pretrain.json").read_text())
    cos = torch.nn.functional.cosine_similarity(table[:, None], table[None], dim=-1)
    off = cos[~torch.eye(len(table), dtype=torch.bool)]
    assert summary["condition_cosine_mean"] == pytest.approx(float(off.mean()), abs=1e-4)
    r = cli(
        "condense", "--preset", "mnist-smoke", "--data", data, "--out", out, "--pretrained", pre,
        *sets(*TINY, *norm),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    payload = torch.load(out / "condensed.pt", weights_only=False)
    assert torch.equal(payload["class_embeddings"], stage["conditions"])


def _tiny_modules(cfg):
    from benchmarks.speed_bench import fake_meta
    from engine.gan import build_generator
    from engine.step import StepModules

    meta = fake_meta(1, 28, 4)
    G = build_generator(meta, cfg.gan, cfg.teacher.width)
    return StepModules(cfg, meta, G, torch.randn(4, cfg.teacher.width), torch.device("cpu"))


def test_phi_rate_is_scheduled_per_outer_iteration_and_old_checkpoints_resume():
    """phi's rate: lr_phi x the linear decay at its outer iteration's first step, set by a torch
    scheduler stepped once per outer iteration. A checkpoint written before that scheduler
    existed (no sched_phi) places it at the saved step: mid outer iteration, and at its end."""
    from engine.presets import load_preset

    cfg = load_preset("mnist-smoke", [*TINY, "condense.outer_iterations=3"])
    c = cfg.condense
    per_outer = c.inner_iterations * c.gen_steps
    m = _tiny_modules(cfg)
    rates = []
    for _ in range(c.outer_iterations):
        rates.append(m.opt_phi.param_groups[0]["lr"])
        m.opt_phi.step()  # as the loop: phi's updates, then the scheduler
        m.sched_phi.step()
    decay = [max(0.0, 1.0 - o * per_outer / c.total_steps) for o in range(c.outer_iterations)]
    assert rates == [c.lr_phi * d for d in decay]
    for step in (per_outer + 1, 2 * per_outer):  # mid outer 1; the end of outer 1
        old = _tiny_modules(cfg).state_dict()
        del old["sched_phi"]
        old["opt_phi"]["param_groups"][0]["lr"] = c.lr_phi * decay[(step - 1) // per_outer]
        old["opt_phi"]["param_groups"][0].pop("initial_lr")
        resumed = _tiny_modules(cfg)
        resumed.load_state_dict(old, step)
        assert resumed.sched_phi.last_epoch == step // per_outer
        assert resumed.opt_phi.param_groups[0]["lr"] == c.lr_phi * decay[step // per_outer]
