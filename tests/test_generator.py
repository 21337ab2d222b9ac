"""Generator and codebook: shapes for every resolution and channel count, batch independence,
codebook kinds, and a collapsed generator being caught by the diversity diagnostic."""

import pytest
import torch

from engine.evaluate import diversity
from engine.generator import Generator, condition_table, generate, init_codebook
from engine.nets import ConvNet


def make(size: int, channels: int, width: int = 4, z_dim: int = 8) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim, 6, 4, channels, size, width, [0.5] * channels, [0.25] * channels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size, blocks", [(28, 3), (32, 3), (64, 4)])
def test_shapes(size, blocks, channels):
    g = make(size, channels).eval()
    x = g(torch.randn(5, 8), torch.randn(5, 6))
    assert x.shape == (5, channels, size, size)
    assert len(g.blocks) == blocks
    # output is tanh mapped to [0, 1], then normalised with mean 0.5, std 0.25
    assert x.min() >= -2 - 1e-5 and x.max() <= 2 + 1e-5


def test_image_depends_only_on_its_code_and_class_in_eval_mode():
    g = make(32, 3).eval()
    codebook = torch.randn(4, 8)
    conditions = torch.randn(10, 6)
    alone, _ = generate(g, codebook, conditions, [3])
    together, labels = generate(g, codebook, conditions, [1, 3, 7])
    torch.testing.assert_close(together[4:8], alone)
    assert labels.tolist() == [1] * 4 + [3] * 4 + [7] * 4


def test_codebook_kinds():
    learned = init_codebook(10, 16, "learned", 0.5, seed=1)
    assert torch.equal(learned, init_codebook(10, 16, "learned", 0.5, seed=1))
    assert not torch.equal(learned, init_codebook(10, 16, "learned", 0.5, seed=2))
    truncated = init_codebook(10, 16, "truncated", 0.5, seed=1)
    assert truncated.abs().max() <= 0.5
    assert condition_table("one_hot", torch.randn(5, 3)).equal(torch.eye(5))


def test_condition_norms_spread_classes_that_share_one_vector():
    """Class features that are one shared vector plus small class offsets (what the teacher's
    pooled post-ReLU features are: cosine 0.99 between classes) keep their offsets under every
    norm; centred removes the shared part, standardised gives each channel unit spread over the
    classes, and a channel constant over the classes becomes 0 rather than NaN."""
    gen = torch.Generator().manual_seed(0)
    shared = 5.0 + torch.rand(8, generator=gen)
    offsets = 0.05 * torch.randn(6, 8, generator=gen)
    table = shared + offsets
    table[:, 3] = 2.0  # a channel that does not depend on the class
    raw = condition_table("class_feature", table, "raw")
    assert raw.equal(table)
    cos = torch.nn.functional.cosine_similarity(raw[:, None], raw[None], dim=-1)
    assert cos.min() > 0.99
    centred = condition_table("class_feature", table, "centred")
    assert torch.allclose(centred.mean(0), torch.zeros(8), atol=1e-6)
    assert torch.allclose(centred[:, 0], offsets[:, 0] - offsets[:, 0].mean(), atol=1e-5)
    std = condition_table("class_feature", table, "standardised")
    assert torch.isfinite(std).all()
    assert std[:, 3].eq(0).all()
    others = [i for i in range(8) if i != 3]
    assert torch.allclose(std[:, others].std(0, correction=0), torch.ones(7), atol=1e-5)
    off = torch.nn.functional.cosine_similarity(std[:, None], std[None], dim=-1)
    assert off[~torch.eye(6, dtype=torch.bool)].mean() < 0.0  # centred rows average to zero
    assert condition_table("one_hot", table, "standardised").equal(torch.eye(6))
    with pytest.raises(ValueError, match="condition norm"):
        condition_table("class_feature", table, "whitened")


def test_collapsed_generator_is_caught_by_diversity():
    """A generator that ignores its code gives K identical images per class: within-class
    distance 0, which the evaluation report's diagnostic shows."""
    g = make(28, 1).eval()
    net = ConvNet(1, 3, 28, width=8).eval()
    codebook, conditions = torch.randn(5, 8), torch.randn(3, 6)
    with torch.no_grad():
        healthy = diversity(*generate(g, codebook, conditions, [0, 1, 2]), net)
        g.fc.weight[:, : g.z_dim] = 0  # the code no longer reaches the image
        collapsed = diversity(*generate(g, codebook, conditions, [0, 1, 2]), net)
    assert collapsed["within_class"] < 1e-4 * collapsed["between_class"]
    assert healthy["within_class"] > 1e3 * collapsed["within_class"]
