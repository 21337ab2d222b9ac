"""Recipes: a named set of departures applied to any preset, each departure removable."""

from __future__ import annotations

import json
import warnings

import pytest
from helpers import TINY, run_cli

from common.errors import ConfigError
from engine.config import RunConfig
from engine.presets import PRESETS, load_preset
from engine.recipes import HERDING_DM, HERDING_DM_REFINED, RECIPES


def _flat(cfg: RunConfig) -> dict:
    out = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif key not in ("recipe", "recipe_without"):
            out[key] = value
    return out


def test_paper_recipe_is_the_preset_itself():
    for name in ("fashion-mnist-smoke", "tiny-imagenet-smoke", "imagenet64-ipc10"):
        assert _flat(load_preset(name, ["recipe=paper"])) == _flat(load_preset(name))


@pytest.mark.parametrize("recipe", [HERDING_DM, HERDING_DM_REFINED], ids=lambda r: r.name)
@pytest.mark.parametrize("preset", ["fashion-mnist-smoke", "tiny-imagenet-smoke", "cifar10-ipc1"])
def test_each_departure_changes_only_its_keys_and_can_be_left_out(preset, recipe):
    """The recipe minus one departure differs from the whole recipe in that departure's keys
    only, and there it holds the preset's values: an ablation changes exactly one thing."""
    base = load_preset(preset)
    whole = _flat(load_preset(preset, [f"recipe={recipe.name}"]))
    assert whole != _flat(base)
    for departure in recipe.departures:
        keys = set(departure.settings(base))
        assert keys, departure.name
        minus = _flat(
            load_preset(preset, [f"recipe={recipe.name}", f"recipe_without={departure.name}"])
        )
        differ = {k for k in whole if whole[k] != minus[k]}
        # the loop's shape depends on two departures at once (fresh net, doubled steps), and
        # a refinement needs the coreset start it refines
        shared = {"condense.outer_iterations", "condense.coreset_refine_updates"}
        assert differ <= keys | shared, departure.name
        assert differ, departure.name
        for key in differ - {"condense.outer_iterations"}:
            assert minus[key] == _flat(base)[key]


def test_recipe_runs_as_many_steps_with_or_without_the_fresh_net():
    """Leaving out fresh-net-every-step keeps the step budget (it only reshapes the loop)."""
    whole = load_preset("fashion-mnist-smoke", ["recipe=herding-dm"]).condense
    minus = load_preset(
        "fashion-mnist-smoke", ["recipe=herding-dm", "recipe_without=fresh-net-every-step"]
    ).condense
    assert (
        whole.total_steps
        == minus.total_steps
        == 2 * load_preset("fashion-mnist-smoke").condense.total_steps
    )
    assert (whole.inner_iterations, whole.gen_steps, whole.lr_phi) == (1, 1, 0.0)


def test_user_settings_win_over_the_recipe_whatever_their_order():
    for sets in (
        ["condense.lr_generator=1e-4", "recipe=herding-dm"],
        ["recipe=herding-dm", "condense.lr_generator=1e-4"],
    ):
        cfg = load_preset("fashion-mnist-smoke", sets)
        assert cfg.recipe == "herding-dm" and cfg.condense.lr_generator == 1e-4
        assert cfg.condense.coreset_init == "herding"


def test_every_recipe_applies_to_every_preset():
    for recipe in RECIPES:
        for preset in PRESETS:
            load_preset(preset, [f"recipe={recipe}"])  # validates


def test_unknown_recipe_or_departure_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown recipe 'dm' \\(choose from: paper, herding-dm"):
        load_preset("fashion-mnist-smoke", ["recipe=dm"])
    with pytest.raises(ConfigError, match="recipe 'herding-dm' has no departure 'fit'"):
        load_preset("fashion-mnist-smoke", ["recipe=herding-dm", "recipe_without=fit"])
    with pytest.raises(ConfigError, match="recipe 'paper' has no departure 'herding-start'"):
        load_preset("fashion-mnist-smoke", ["recipe_without=herding-start"])


def test_resolved_config_records_the_recipe_and_round_trips(tmp_path):
    cfg = load_preset("fashion-mnist-smoke", ["recipe=herding-dm", "recipe_without=double-steps"])
    cfg.to_file(tmp_path / "c.json")
    back = RunConfig.from_file(tmp_path / "c.json")
    assert back.to_dict() == cfg.to_dict()
    assert back.recipe == "herding-dm" and back.recipe_without == ("double-steps",)


def test_cli_recipe_flag(tmp_path):
    out = tmp_path / "resolved.json"
    r = run_cli(
        "config",
        "--preset",
        "fashion-mnist-smoke",
        "--recipe",
        "herding-dm",
        "--changed",
        "--json",
        out,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["recipe"] == "herding-dm" and data["condense"]["feature_match"] == "mean"
    assert "recipe herding-dm" in r.stdout
    r = run_cli("config", "--config", str(out), "--recipe", "herding-dm")
    assert r.returncode != 0 and "without --set, --recipe or --preset" in r.stderr
    r = run_cli("config", "--preset", "fashion-mnist-smoke", "--recipe", "nope")
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith(
        "error: unknown recipe"
    )


def test_sweep_grid_ablates_departures(tmp_path):
    from launch.sweep import SweepPlan

    plan = SweepPlan(
        preset="fashion-mnist-smoke",
        data=tmp_path,
        out=tmp_path / "sweep",
        grid=["recipe_without=none,herding-start"],
        overrides=["recipe=herding-dm"],
    )
    whole, minus = (plan.config(p) for p in plan.points)
    assert whole.condense.coreset_init == "herding" and minus.condense.coreset_init == "none"
    assert minus.recipe_without == ("herding-start",)


def test_recipes_doc_table_is_built_from_the_registry():
    """docs/recipes.md's departure table is what `python -m engine.config_table` writes."""
    from pathlib import Path

    from engine.recipes import markdown_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    assert markdown_table(HERDING_DM, load_preset("fashion-mnist-smoke")) in doc


def test_phi_is_not_updated_at_rate_zero_and_such_an_update_changed_nothing(toy_stage, tmp_path):
    """fresh-net-every-step sets phi's rate to 0: the loop skips phi's update (a third of a
    step), which at rate 0 left phi as it was."""
    import torch

    from engine import condense as loop
    from engine.nets import ConvNet
    from engine.presets import load_preset
    from engine.stages import run_condense
    from engine.step import StepModules, phi_update

    data, pre = toy_stage
    loop_keys = ("condense.outer_iterations", "condense.inner_iterations", "condense.gen_steps")
    tiny = [item for item in TINY if not item.startswith(loop_keys)]  # the recipe's loop
    cfg = load_preset("mnist-smoke", [*tiny, "recipe=herding-dm", "condense.coreset_init=none"])
    assert cfg.condense.inner_iterations == cfg.condense.gen_steps == 1
    cfg.max_steps = 3
    calls = []
    original = loop.phi_update
    loop.phi_update = lambda *a, **k: calls.append(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_condense(cfg, data, tmp_path / "run", pre)
    finally:
        loop.phi_update = original
    assert calls == [] and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # phi's is not stepped

    m = StepModules.__new__(StepModules)
    m.phi = m.phi_logits = ConvNet(1, 4, 16, width=8)
    m.opt_phi = torch.optim.SGD(m.phi.parameters(), 0.0, momentum=0.9)
    before = [p.detach().clone() for p in m.phi.parameters()]
    for _ in range(3):
        phi_update(cfg, m, torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,)))
    assert all(torch.equal(a, b) for a, b in zip(before, m.phi.parameters(), strict=True))
