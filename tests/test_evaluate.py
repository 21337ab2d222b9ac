"""Evaluation protocol: a ConvNet trained on a small coreset learns, runs are reproducible and
isolated from the global RNG, coresets and the diversity check select what they claim."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from data_prep.loaders import read_all, read_indices
from data_prep.options import PrepOptions
from data_prep.prepare import prepare_arrays
from data_prep.splits import RawDataset, Segment, Split
from engine.config import EvalConfig
from engine.evaluate import (
    diversity,
    evaluate_sets,
    herding,
    herding_indices,
    herding_select,
    random_real,
    summarize,
    train_and_test,
)
from engine.nets import build_net

CLASSES, SIZE, TRAIN_PER_CLASS, TEST_PER_CLASS = 4, 16, 40, 20
CFG = EvalConfig(seeds=2, epochs=30, width=16, batch_size=10, test_batch_size=64)


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey 16x16 images whose class is a pattern that survives DSA augmentation: horizontal
    stripes, vertical stripes, a checkerboard, or flat; random phase plus pixel noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((len(labels), SIZE, SIZE, 1))
    for i, c in enumerate(labels):
        p = rng.integers(0, 4)
        pattern = [
            ((yy + p) // 2) % 2,
            ((xx + p) // 2) % 2,
            ((yy + p) // 4 + (xx + p) // 4) % 2,
            np.full((SIZE, SIZE), 0.5),
        ][c]
        out[i, :, :, 0] = 128 + 144 * (pattern - 0.5) + rng.normal(0, 15, (SIZE, SIZE))
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets: one intra-op thread is as fast and does not thrash on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    train_y = rng.permutation(np.repeat(np.arange(CLASSES), TRAIN_PER_CLASS)).astype(np.int64)
    test_y = np.repeat(np.arange(CLASSES), TEST_PER_CLASS).astype(np.int64)
    raw = RawDataset(
        "toy",
        [f"c{c}" for c in range(CLASSES)],
        Split([Segment(_images(train_y, rng), train_y, Path("<generated>"))]),
        Split([Segment(_images(test_y, rng), test_y, Path("<generated>"))]),
        [],
    )
    out = tmp_path_factory.mktemp("evaldata")
    prepare_arrays(raw, out, PrepOptions(workers=1))
    return out


@pytest.fixture(scope="module")
def coreset(data):
    return random_real(data, ipc=5, seed=0)


@pytest.fixture(scope="module")
def feature_net():
    torch.manual_seed(0)
    return build_net("convnet", 1, CLASSES, SIZE, width=8)


def test_random_real_is_class_major_and_distinct(data, coreset):
    images, labels = coreset
    assert images.shape == (CLASSES * 5, 1, SIZE, SIZE) and images.dtype == torch.float32
    assert labels.tolist() == np.repeat(np.arange(CLASSES), 5).tolist()
    assert len({tuple(x.flatten().tolist()) for x in images}) == len(images)  # no repeats
    again, _ = random_real(data, ipc=5, seed=0)
    other, _ = random_real(data, ipc=5, seed=1)
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_training_on_coreset_beats_chance_and_is_deterministic(data, coreset):
    images, labels = coreset
    acc = train_and_test("convnet", images, labels, data, CFG, seed=0)
    assert acc > 50.0  # chance is 25 %
    assert train_and_test("convnet", images, labels, data, CFG, seed=0) == acc


def test_train_and_test_leaves_global_rng_alone(data, coreset):
    images, labels = coreset
    cfg = replace(CFG, epochs=2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = train_and_test("convnet", images, labels, data, cfg, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different caller state does not change the run
    assert train_and_test("convnet", images, labels, data, cfg, seed=4) == first


def test_soft_labels(data, coreset):
    images, labels = coreset
    soft = torch.nn.functional.one_hot(labels, CLASSES).float() * 0.9 + 0.1 / CLASSES
    acc = train_and_test("convnet", images, labels, data, CFG, seed=0, soft_labels=soft)
    assert acc > 50.0
    # the soft labels, not the hard ones, drive training: targets shifted by one class are learnt
    shifted = torch.nn.functional.one_hot((labels + 1) % CLASSES, CLASSES).float()
    assert train_and_test("convnet", images, labels, data, CFG, seed=0, soft_labels=shifted) < 25
    with pytest.raises(ConfigError):
        train_and_test("convnet", images, labels, data, CFG, seed=0, soft_labels=soft[:, :2])


def test_evaluate_sets_shape_and_statistics(data, coreset):
    cfg = replace(CFG, epochs=3, models=("convnet", "mlp"))
    sets = {"random": coreset, "half": (coreset[0][::2], coreset[1][::2])}
    results = evaluate_sets(sets, data, cfg, seed_offset=10)
    assert set(results) == {"random", "half"}
    for by_model in results.values():
        assert set(by_model) == {"convnet", "mlp"}
        for r in by_model.values():
            assert len(r["accs"]) == cfg.seeds
            assert r["mean"] == pytest.approx(np.mean(r["accs"]))
            assert r["std"] == pytest.approx(np.std(r["accs"]))
    # seed i is seed_offset + i
    single = train_and_test("mlp", *sets["half"], data, cfg, seed=11)
    assert results["half"]["mlp"]["accs"][1] == single
    rows = summarize(results)
    assert len(rows) == 4 and set(rows[0]) == {"set", "model", "mean", "std", "seeds"}
    assert {(r["set"], r["model"], r["seeds"]) for r in rows} == {
        (s, m, 2) for s in sets for m in ("convnet", "mlp")
    }


def test_herding_picks_distinct_indices_of_each_class(data, feature_net):
    _, train_labels = read_all(data, "train")
    idx = herding_indices(data, 3, feature_net)
    assert len(idx) == CLASSES * 3 and len(set(idx.tolist())) == len(idx)
    assert train_labels[idx].tolist() == np.repeat(np.arange(CLASSES), 3).tolist()
    np.testing.assert_array_equal(herding_indices(data, 3, feature_net), idx)
    images, labels = herding(data, 3, feature_net)
    expected, expected_labels = read_indices(data, idx)
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)
    assert feature_net.training  # mode restored


def test_herding_select_greedy():
    feats = torch.tensor([[0.0], [10.0], [4.0], [6.0], [-9.0]])  # mean 2.2
    # running means 4, 2, 3.33, 0.25, 2.2 track the mean 2.2 best at each step
    order = herding_select(feats, 5)
    assert order == [2, 0, 3, 4, 1]
    assert herding_select(feats, 2) == [2, 0]


def test_diversity(coreset, feature_net):
    images, labels = coreset
    spread = diversity(images, labels, feature_net)
    assert spread["within_class"] > 0 and spread["between_class"] > 0
    assert spread["ratio"] == pytest.approx(spread["within_class"] / spread["between_class"])
    collapsed = images[labels * 5]  # the first image of each class, repeated
    same = diversity(collapsed, labels, feature_net)
    assert same["within_class"] == pytest.approx(0.0, abs=1e-6) and same["between_class"] > 0
    one_each = diversity(images[::5], labels[::5], feature_net)
    assert one_each["within_class"] is None and one_each["ratio"] is None  # no spread to measure
    assert one_each["between_class"] > 0


def test_config_errors(data, coreset):
    with pytest.raises(ConfigError):
        random_real(data, ipc=0, seed=0)
    with pytest.raises(ConfigError):
        herding(data, 0, build_net("mlp", 1, CLASSES, SIZE, width=8))
    with pytest.raises(ConfigError):
        random_real(data, ipc=TRAIN_PER_CLASS + 1, seed=0)
    for bad in ({"seeds": 0}, {"epochs": 0}):
        with pytest.raises(ConfigError):
            replace(CFG, **bad)
    with pytest.raises(ConfigError):
        evaluate_sets({"random": coreset}, data, replace(CFG, models=("lenet",)))
