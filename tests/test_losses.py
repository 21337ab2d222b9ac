"""Each loss against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from engine import losses


def test_feature_matching_is_mean_squared_error_summed_over_layers():
    s1, t1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])  # MSE (1 + 4) / 2 = 2.5
    s2, t2 = torch.tensor([[[3.0]]]), torch.tensor([[[1.0]]])  # MSE 4
    assert losses.feature_matching([s1, s2], [t1, t2]).item() == 6.5


def test_feature_matching_sum_is_each_images_summed_squared_error_averaged_over_images():
    # two images; layer 1: (1 + 4) and (0 + 1); layer 2: 4 and 0 -> (5 + 1) / 2 + (4 + 0) / 2
    s1, t1 = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2, 2)
    s2, t2 = torch.tensor([[[3.0]], [[1.0]]]), torch.ones(2, 1, 1)
    assert losses.feature_matching([s1, s2], [t1, t2], "sum").item() == 5.0
    assert losses.feature_matching([s1, s2], [t1, t2]).item() == 3.5  # (6 / 4) + (4 / 2)


def test_intra_class_diversity_by_hand():
    # one class, K = 2, features already unit length; center along x
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    center = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0)
    tau = 0.5
    # image 0: <f0,c> = 1, <f0,f1> = 0 ; image 1: <f1,c> = 0, <f1,f0> = 0
    l0 = -math.log(math.exp(1 / tau) / (math.exp(0) + math.exp(1 / tau)))
    l1 = -math.log(math.exp(0) / (math.exp(0) + math.exp(0)))
    got = losses.intra_class_diversity(f, center, ipc=2, temperature=tau)
    assert abs(got.item() - (l0 + l1) / 2) < 1e-6


def test_intra_class_diversity_pushes_same_class_images_apart():
    f = torch.tensor([[1.0, 0.1], [1.0, -0.1]], requires_grad=True)
    loss = losses.intra_class_diversity(f, torch.tensor([[1.0, 0.0]]), ipc=2, temperature=0.1)
    loss.backward()
    # gradient descent moves the two y-components apart (not constant: the loss has a gradient)
    assert f.grad[0, 1] < 0 < f.grad[1, 1]


def test_inter_class_discrimination_by_hand():
    centers = torch.tensor([[0.0, 0.0], [0.3, 0.4], [3.0, 4.0]])  # distances 0.5, 5, 4.5
    # margin 1: pairs (0,1) and (1,0) give 0.5 each, the others 0; mean over 6 ordered pairs
    got = losses.inter_class_discrimination(centers, margin=1.0)
    assert abs(got.item() - 1.0 / 6) < 1e-6
    assert losses.inter_class_discrimination(centers[:1], 1.0).item() == 0.0


def test_class_centers_average_unit_features():
    f = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0], [0.0, -5.0]])
    got = losses.class_centers(f, ipc=2)
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.5], [0.0, -1.0]]))


def test_soft_cross_entropy_matches_hard_for_one_hot():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0]])
    target = torch.tensor([1, 2])
    one_hot = torch.nn.functional.one_hot(target, 3).float()
    torch.testing.assert_close(
        losses.soft_cross_entropy(logits, one_hot),
        torch.nn.functional.cross_entropy(logits, target),
    )


@pytest.mark.parametrize(("layers", "expected"), [("all", 6.5), ("last", 4.0)])
def test_feature_layers_picks_every_block_or_the_last_only(layers, expected):
    from engine.config import RunConfig
    from engine.step import _feature_loss

    cfg = RunConfig()
    cfg.condense.ipc, cfg.condense.feature_match = 1, "mean"
    cfg.condense.feature_layers = layers
    # one class, K = 1, one real image: the class means are the features themselves
    syn = [torch.tensor([[1.0, 2.0]]), torch.tensor([[[3.0]]])]
    real = [torch.tensor([[0.0, 0.0]]), torch.tensor([[[1.0]]])]
    assert _feature_loss(cfg=cfg, real=real, syn=syn, n_mine=1).item() == expected


def test_feature_layers_refuses_an_unknown_choice():
    from common.errors import ConfigError
    from engine.config import RunConfig

    cfg = RunConfig()
    cfg.condense.feature_layers = "first"
    with pytest.raises(ConfigError, match="feature_layers must be all or last"):
        cfg.validate()
