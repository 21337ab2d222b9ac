"""`gencond sweep` here: named variants from a TOML file, a rerun that skips every finished
condensation and evaluation seed, a changed variant under a finished point refused; and the
pixel-space adversary (Table 8's l_real) the ablation's variants use."""

import json

import pytest
from helpers import TINY, assert_one_error, sets, toy

from engine.config import load_variants
from launch.sweep import SweepPlan, point_name, sweep_points

VARIANTS = """
[paper]

[it-gan]
"condense.finetune_generator" = false
"condense.weight_intra" = 0
"condense.weight_inter" = 0

[l-real]
"condense.adversary" = "pixel"
"""


def test_variants_form_the_first_axis(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text(VARIANTS)
    variants = load_variants(path)
    assert variants["it-gan"] == [
        "condense.finetune_generator=false",
        "condense.weight_intra=0",
        "condense.weight_inter=0",
    ]
    points = sweep_points(["seed=0,1"], variants)
    assert [point_name(p) for p in points][:3] == [
        "variant-paper_seed-0",
        "variant-paper_seed-1",
        "variant-it-gan_seed-0",
    ]
    plan = SweepPlan("mnist-smoke", tmp_path, tmp_path, grid=["seed=0,1"], variants=variants)
    cfg = plan.config(points[2])
    assert not cfg.condense.finetune_generator and cfg.condense.weight_intra == 0
    assert cfg.seed == 0 and plan.config(points[5]).condense.adversary == "pixel"


@pytest.mark.parametrize(
    "text, needle",
    [("[a]\nx = [", "not valid TOML"), ("x = 1\n", "not a [table]"), ("", "no [variant]")],
)
def test_bad_variants_file(tmp_path, text, needle):
    from common.errors import ConfigError

    path = tmp_path / "v.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_variants(path)


def test_sweep_skips_what_is_finished_and_refuses_a_changed_point(tmp_path, cli):
    data = toy(tmp_path / "data")
    pre = tmp_path / "pre"
    assert (
        cli(
            "pretrain", "--preset", "mnist-smoke", "--data", data, "--out", pre, *sets(*TINY)
        ).returncode
        == 0
    )
    variants = tmp_path / "v.toml"
    variants.write_text(VARIANTS)
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        out,
        "--pretrained",
        pre,
        "--variants",
        variants,
        *sets(*TINY, "eval.epochs=2"),
        "--eval-seeds",
        "2",
        "--baselines",
        "random",
    ]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep = json.loads((out / "sweep.json").read_text())
    assert {row["variant"] for row in sweep["rows"]} == {"paper", "it-gan", "l-real"}
    assert {row["set"] for row in sweep["rows"]} == {"condensed", "random"}
    assert all(row["seeds"] == 2 for row in sweep["rows"])
    # l_real: D on the images, no L_c; L_adv still moves
    metrics = (out / "variant-l-real" / "metrics.jsonl").read_text()
    lines = [json.loads(x) for x in metrics.splitlines()]
    assert all(rec["cls"] == 0 for rec in lines)
    assert len({round(rec["adv"], 6) for rec in lines}) > 1
    paper = json.loads((out / "variant-paper" / "metrics.jsonl").read_text().splitlines()[-1])
    assert paper["cls"] > 0

    # a rerun redoes nothing: condensed.pt and every seed's part stay as they were
    stamps = {
        p: p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.name == "condensed.pt" or p.parent.name == "eval_parts"
    }
    (out / "variant-it-gan" / "eval_parts" / "seed_1.json").unlink()  # one unfinished seed
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping its condensation" in r.stdout + r.stderr
    for path, stamp in stamps.items():
        if path.name != "seed_1.json" or "it-gan" not in str(path):
            assert path.stat().st_mtime_ns == stamp, path
    assert (out / "variant-it-gan" / "eval_parts" / "seed_1.json").is_file()

    # the variants file changed under a finished point: refused, naming the point
    variants.write_text(VARIANTS.replace('"pixel"', '"feature"'))
    r = cli(*args)
    assert_one_error(r, "variant-l-real", "another config")
