"""condense.coreset_refine_updates: DM's pixel updates on the coreset before the fit."""

import pytest
import torch

from common.errors import ConfigError
from data_prep.loaders import read_all
from data_prep.meta import load_meta
from engine import coreset_refine
from engine.config import RunConfig
from engine.coreset_init import fitted_start
from engine.coreset_refine import refine_coreset
from engine.generator import generate, init_codebook
from tests.helpers import toy
from tests.test_coreset_init import _fit_cfg, tiny_generator


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return toy(tmp_path_factory.mktemp("refine") / "toy", classes=3, size=16, per_class=20)


def _cfg(updates: int) -> RunConfig:
    cfg = RunConfig()
    c = cfg.condense
    c.ipc, c.coreset_init, c.coreset_refine_updates = 2, "random", updates
    c.coreset_refine_batch, c.coreset_refine_width = 8, 8
    return cfg


def _real_and_start(data):
    """The toy set's training images (normalised) and a start: the first 2 images of each class
    flipped upside down, so the class means differ from the real ones."""
    meta = load_meta(data)
    images, labels = read_all(data, "train")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = (x - meta.mean[0]) / meta.std[0]
    labels = torch.from_numpy(labels).long()
    start = torch.cat([x[labels == c][:2].flip(2) for c in range(3)])
    return meta, x, labels, start


def _mean_embedding_gap(meta, x, labels, images, nets=8) -> float:
    """DM's loss through fresh nets it was not refined with (keys past the refinement's)."""
    total = 0.0
    for key in range(1000, 1000 + nets):
        net = coreset_refine._fresh_net(meta, 8, 0, key, "cpu")
        with torch.no_grad():
            for c in range(3):
                real = net.embed(x[labels == c]).mean(0)
                gap = real - net.embed(images[2 * c : 2 * c + 2]).mean(0)
                total += float(gap.square().sum())
    return total / nets


def test_refinement_moves_each_class_mean_towards_the_real_one(data):
    meta, x, labels, start = _real_and_start(data)
    before = _mean_embedding_gap(meta, x, labels, start)
    refined = refine_coreset(start, cfg=_cfg(40), meta=meta, data_dir=data, mine=[0, 1, 2])
    after = _mean_embedding_gap(meta, x, labels, refined)
    assert after < 0.7 * before, (before, after)  # measured: 6.8 -> 3.9
    again = refine_coreset(start, cfg=_cfg(40), meta=meta, data_dir=data, mine=[0, 1, 2])
    assert torch.equal(again, refined)  # keyed draws: the same refinement twice


def test_no_update_keeps_the_coreset_and_a_rank_touches_only_its_classes(data):
    meta, _, _, start = _real_and_start(data)
    same = refine_coreset(start, cfg=_cfg(0), meta=meta, data_dir=data, mine=[0, 1, 2])
    assert torch.equal(same, start)
    part = refine_coreset(start, cfg=_cfg(3), meta=meta, data_dir=data, mine=[1])
    assert torch.equal(part[:2], start[:2]) and torch.equal(part[4:], start[4:])
    assert not torch.equal(part[2:4], start[2:4])
    whole = refine_coreset(start, cfg=_cfg(3), meta=meta, data_dir=data, mine=[0, 1, 2])
    torch.testing.assert_close(part[2:4], whole[2:4])  # a class's rows: its own loss alone


def test_refinement_without_a_coreset_is_refused():
    cfg = RunConfig()
    cfg.override("condense.coreset_refine_updates=5")
    with pytest.raises(ConfigError, match="coreset_refine_updates refines a coreset"):
        cfg.validate()
    cfg.override("condense.coreset_init=random")
    cfg.validate()
    cfg.override("condense.coreset_refine_batch=0")
    with pytest.raises(ConfigError, match="coreset_refine_batch"):
        cfg.validate()


def test_the_fit_targets_the_refined_coreset_and_a_saved_start_is_not_refined_again(tmp_path):
    targets = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    calls = []

    def refine(images):
        calls.append(1)
        return -images

    def start(cfg):
        G, codebook = tiny_generator(), torch.nn.Parameter(init_codebook(2, 8, "learned", 0, 0))
        fitted_start(
            G=G, codebook=codebook, conditions=torch.eye(3, 4), images=targets, mine=[0, 1, 2],
            num_classes=3, cfg=cfg, run_dir=tmp_path / "run", refine=refine,
        )  # fmt: skip
        with torch.no_grad():
            return generate(G, codebook, torch.eye(3, 4), [0, 1, 2])[0]

    cfg = _fit_cfg(150)
    cfg.condense.coreset_refine_updates = 1
    made = start(cfg)
    assert len(calls) == 1
    assert float((made + targets).square().mean()) < float((made - targets).square().mean())
    start(cfg)
    assert len(calls) == 1  # reused from RUN/coreset_fit.pt
    cfg.condense.coreset_refine_updates = 2  # another refinement: another key, refined again
    start(cfg)
    assert len(calls) == 2
