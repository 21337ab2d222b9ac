"""Presets and --set overrides."""

import pytest

from common.errors import ConfigError
from engine.config import RunConfig
from engine.presets import PRESETS, load_preset


def test_every_dataset_has_its_presets():
    for dataset in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet"):
        for ipc in (1, 10, 50):
            assert load_preset(f"{dataset}-ipc{ipc}").condense.ipc == ipc
    for ipc in (1, 2, 10, 50):
        cfg = load_preset(f"imagenet64-ipc{ipc}")
        assert cfg.condense.soft_labels and cfg.condense.classes_per_step == 100
    assert load_preset("fashion-mnist-smoke").condense.ipc == 10
    assert "mnist-smoke" in PRESETS


def test_paper_learning_rates_are_the_defaults():
    c = load_preset("cifar10-ipc10").condense
    assert (c.lr_codebook, c.lr_generator, c.lr_phi) == (0.01, 0.001, 0.01)
    assert (c.weight_gan, c.weight_feature, c.weight_intra, c.weight_inter) == (0.03, 1, 1, 1)


def test_overrides_and_their_types():
    cfg = load_preset(
        "fashion-mnist-smoke",
        [
            "ipc=5",
            "seed=3",
            "max_steps=7",
            "device=cpu",
            "condense.lr_codebook=0.02",
            "condense.finetune_generator=false",
            "eval.models=convnet,mlp",
        ],
    )
    assert cfg.condense.ipc == 5 and cfg.seed == 3 and cfg.max_steps == 7
    assert cfg.condense.lr_codebook == 0.02 and cfg.condense.finetune_generator is False
    assert cfg.eval.models == ("convnet", "mlp")
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("ipc=0", "ipc must be at least 1"),
        ("ipc=ten", "expected a int"),
        ("nokey=1", "unknown key 'nokey'"),
        ("condense.codebook=weird", "codebook must be learned, fixed or truncated"),
        ("gan.condition=label", "gan.condition must be"),
        ("gan.condition_norm=whitened", "gan.condition_norm must be raw, centred or"),
        ("condense.feature_reduction=l1", "feature_reduction must be mean or sum"),
        ("device=tpu", "device must be cpu or cuda"),
        ("condense.classifier=phi", "classifier must be head or teacher"),
        ("condense.checkpoint_every=-1", "condense.checkpoint_every=-1 is out of range"),
        ("gan.checkpoint_every=-1", "gan.checkpoint_every=-1 is out of range"),
        ("collective_timeout_s=0", "collective_timeout_s must be positive"),
        ("justtext", "expected key=value"),
    ],
)
def test_bad_overrides(assignment, message):
    with pytest.raises(ConfigError, match=message):
        load_preset("mnist-smoke", [assignment])


def test_checks_over_several_keys_do_not_depend_on_their_order():
    both = ["condense.codebook=fixed", "condense.finetune_generator=false"]
    for order in (both, both[::-1]):
        with pytest.raises(ConfigError, match="nothing to learn"):
            load_preset("mnist-smoke", order)
    assert load_preset("mnist-smoke", both[:1]).condense.codebook == "fixed"
    assert not load_preset("mnist-smoke", both[1:]).condense.finetune_generator


def test_condition_norm_is_refused_with_online_features():
    both = ["gan.condition=online_feature", "gan.condition_norm=standardised"]
    for order in (both, both[::-1]):
        with pytest.raises(ConfigError, match="online_feature conditions are the current phi"):
            load_preset("mnist-smoke", order)
    assert load_preset("mnist-smoke", both[1:]).gan.condition_norm == "standardised"
    with pytest.raises(ConfigError, match="needs gan.condition_norm=raw"):
        load_preset("mnist-smoke", both[:1])  # the smoke presets standardise
    raw = load_preset("mnist-smoke", [both[0], "gan.condition_norm=raw"])
    assert raw.gan.condition == "online_feature"


def test_smoke_presets_run_the_papers_method():
    """The smoke presets are Algorithm 1 with the paper's rates and weights (recipe `paper`);
    the herding-dm recipe is another axis (tests/test_recipes.py)."""
    for name in ("mnist-smoke", "fashion-mnist-smoke", "tiny-imagenet-smoke"):
        cfg = load_preset(name)
        c = cfg.condense
        assert (c.feature_match, c.classifier, c.coreset_init, c.codebook) == (
            "image",
            "head",
            "none",
            "learned",
        )
        assert c.finetune_generator and c.adversary == "feature"
        assert (c.lr_codebook, c.lr_generator, c.lr_phi) == (0.01, 0.001, 0.01)
        assert (c.weight_gan, c.weight_cls, c.weight_feature) == (0.03, 1, 1)  # L_GAN: swept
        assert (c.weight_intra, c.weight_inter) == (1, 1)
        assert cfg.recipe == "paper" and cfg.recipe_without == ()


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'mnist-ipc3'"):
        load_preset("mnist-ipc3")


@pytest.mark.parametrize("num_classes,per_step", [(10, 4), (10, 3), (1000, 100), (7, 7), (7, 0)])
def test_every_class_is_visited_once_per_sweep(num_classes, per_step):
    """The engine's schedule, the cost model and the throughput bench share one rule; a class
    count that does not divide leaves no class out (10 classes, 4 a step: blocks of 4, 3, 3)."""
    from benchmarks.cost_model import steps_per_sweep
    from engine.class_plan import ClassPlan

    cfg = RunConfig()
    cfg.condense.classes_per_step = per_step
    plan = ClassPlan.of(cfg.condense, num_classes, seed=3)
    steps = plan.sweep_steps
    assert steps == steps_per_sweep(cfg, num_classes)
    schedule = lambda step: plan.at(step).classes  # noqa: E731
    largest, smallest = plan.largest, plan.smallest
    for sweep in range(2):
        blocks = [schedule(sweep * steps + i) for i in range(steps)]
        assert sorted(k for b in blocks for k in b) == list(range(num_classes))
        assert {len(b) for b in blocks} <= {largest, smallest}
        assert largest <= (per_step if 0 < per_step < num_classes else num_classes)
    assert schedule(0) != schedule(steps) or steps == 1  # a fresh permutation every sweep


def test_config_reference_table_is_built_from_the_dataclasses():
    """docs/config_reference.md's key table is what `python -m engine.config_table` writes
    from the dataclasses' `#:` comments: every key once, each with its meaning."""
    from pathlib import Path

    from engine.config_table import rows, table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config_reference.md").read_text()
    assert table() in doc, "run `python -m engine.config_table` to refresh the table"
    keys = [k for k, _, _ in rows()]
    assert len(keys) == len(set(keys)) and "`condense.ipc`" in keys and "`eval.dsa_mode`" in keys
    assert all(meaning for _, _, meaning in rows()), [k for k, _, m in rows() if not m]


def test_an_ipc_override_renames_the_ipc_preset():
    """`cifar10-ipc10 --set ipc=50` is cifar10-ipc50 and the run records that name."""
    from engine.presets import load_preset

    cfg = load_preset("cifar10-ipc10", ["ipc=50"])
    assert cfg.preset == "cifar10-ipc50"
    assert cfg.to_dict() == load_preset("cifar10-ipc50").to_dict()
    assert load_preset("fashion-mnist-smoke", ["ipc=5"]).preset == "fashion-mnist-smoke"


def test_image_folders_have_presets():
    from engine.presets import PRESETS, load_preset

    assert {"imagefolder-ipc1", "imagefolder-ipc10", "imagefolder-ipc50"} <= set(PRESETS)
    assert load_preset("imagefolder-ipc10").dataset == "imagefolder"


def test_a_config_recorded_before_a_key_existed_equals_todays_at_its_default():
    """A run written before `recipe` existed is the same run as today's config with
    recipe=paper (it resumes and a sweep skips it), and not the same as another recipe's."""
    from engine.config import with_defaults

    cfg = load_preset("fashion-mnist-smoke")
    old = cfg.to_dict()
    del old["recipe"], old["recipe_without"], old["condense"]["weight_inter"]
    assert with_defaults(old) == cfg.to_dict()
    other = load_preset("fashion-mnist-smoke", ["recipe=herding-dm"]).to_dict()
    assert with_defaults(old) != other
