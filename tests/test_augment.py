"""Differentiable siamese augmentation: shapes, gradients, explicit RNG, siamese behaviour."""

import pytest
import torch

from common.errors import ConfigError
from engine.augment import DEFAULT_STRATEGY, OPS, DiffAugment, DSAParams, parse_strategy


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(1000 + seed))


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_preserved(size, channels):
    x = images(3, channels, size)
    for dtype in (torch.float32, torch.float64):
        y = DiffAugment()(x.to(dtype), gen(0))
        assert y.shape == x.shape
        assert y.dtype == dtype
        assert torch.isfinite(y).all()


def test_gradient_reaches_input():
    x = images(4, 3, 32).requires_grad_()
    DiffAugment()(x, gen(1)).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


def test_same_seed_same_output_different_seed_different():
    x = images()
    aug = DiffAugment()
    assert torch.equal(aug(x, gen(5)), aug(x, gen(5)))
    assert not torch.allclose(aug(x, gen(5)), aug(x, gen(6)))


def test_global_rng_untouched():
    state = torch.get_rng_state()
    DiffAugment()(images(), gen(2))
    DiffAugment(batch_mode=True)(images(), gen(3))
    assert torch.equal(torch.get_rng_state(), state)


def test_generator_advances():
    g = gen(4)
    x = images()
    aug = DiffAugment()
    assert not torch.allclose(aug(x, g), aug(x, g))


def test_batch_mode_shares_transform_across_rows():
    x = images(1, 3, 32).repeat(6, 1, 1, 1)
    y = DiffAugment(batch_mode=True, mode="all")(x, gen(7))
    assert all(torch.equal(y[0], y[i]) for i in range(1, 6))
    z = DiffAugment(batch_mode=False, mode="all")(x, gen(7))
    assert not any(torch.allclose(z[0], z[i]) for i in range(1, 6))


def test_siamese_two_batches_same_generator_state():
    x = images(5)
    for batch_mode in (False, True):
        aug = DiffAugment(batch_mode=batch_mode)
        g1 = gen(11)
        g2 = torch.Generator()
        g2.set_state(g1.get_state())
        assert torch.equal(aug(x, g1), aug(x.clone(), g2))


def test_siamese_batch_mode_independent_of_batch_size():
    # Real and synthetic batches of one class differ in size; the transform must not.
    real = images(1, 3, 32, seed=1).repeat(7, 1, 1, 1)
    syn = real[:2].clone()
    aug = DiffAugment(batch_mode=True)
    g1 = gen(12)
    g2 = torch.Generator()
    g2.set_state(g1.get_state())
    assert torch.equal(aug(real, g1)[:2], aug(syn, g2))


@pytest.mark.parametrize("op", OPS)
def test_single_op_runs_and_is_differentiable(op):
    x = images(3, 3, 28).requires_grad_()
    y = DiffAugment(op)(x, gen(8))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("strategy", ["none", "", "None"])
def test_none_is_identity(strategy):
    x = images()
    g = gen(9)
    before = g.get_state()
    assert DiffAugment(strategy)(x, g) is x
    assert torch.equal(g.get_state(), before)


def test_unknown_op_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match="blur"):
        DiffAugment("color_blur_flip")
    with pytest.raises(ConfigError):
        DiffAugment("crop__flip")


def test_default_strategy_applies_all_ops_in_order():
    assert parse_strategy(DEFAULT_STRATEGY) == (
        "color",
        "crop",
        "cutout",
        "flip",
        "scale",
        "rotate",
    )


def test_bad_params_raise_config_error():
    with pytest.raises(ConfigError, match="ratio_scale"):
        DSAParams(ratio_scale=0.5)
    with pytest.raises(ConfigError, match="prob_flip"):
        DSAParams(prob_flip=1.5)


def test_flip_always_and_never():
    x = images()
    assert torch.equal(DiffAugment("flip", DSAParams(prob_flip=1.0))(x, gen(0)), x.flip(3))
    assert torch.equal(DiffAugment("flip", DSAParams(prob_flip=0.0))(x, gen(0)), x)


def test_crop_is_integer_shift_with_zero_padding():
    x = images(8, 1, 16) + 1.0  # strictly positive so padding zeros are recognisable
    y = DiffAugment("crop")(x, gen(3))
    shift = int(16 * 0.125 + 0.5)
    for i in range(8):
        found = False
        for dy in range(-shift, shift + 1):
            for dx in range(-shift, shift + 1):
                ref = torch.zeros_like(x[i])
                src = x[i, :, max(dy, 0) : 16 + min(dy, 0), max(dx, 0) : 16 + min(dx, 0)]
                ref[:, max(-dy, 0) : 16 + min(-dy, 0), max(-dx, 0) : 16 + min(-dx, 0)] = src
                found = found or torch.equal(ref, y[i])
        assert found, f"row {i} is not a zero-padded integer shift"
    assert torch.equal(DiffAugment("crop", DSAParams(ratio_crop_pad=0.0))(x, gen(3)), x)


def test_cutout_zeros_at_most_a_half_size_square():
    x = images(6, 3, 32) + 1.0
    y = DiffAugment("cutout")(x, gen(4))
    zeroed = (y == 0).all(dim=1)  # (n, h, w)
    for i in range(6):
        count = int(zeroed[i].sum())
        assert 0 < count <= 16 * 16
        rows = zeroed[i].any(dim=1).nonzero().flatten()
        cols = zeroed[i].any(dim=0).nonzero().flatten()
        assert count == len(rows) * len(cols)  # a (clipped) rectangle
    assert torch.equal(y[~zeroed.unsqueeze(1).expand_as(y)], x[~zeroed.unsqueeze(1).expand_as(x)])


def test_saturation_is_identity_on_one_channel():
    x = images(4, 1, 32)
    assert torch.equal(DiffAugment("color")._saturation(x, gen(0)), x)


def test_identity_settings_of_scale_and_rotate():
    x = images(3, 3, 32)
    y = DiffAugment("scale", DSAParams(ratio_scale=1.0))(x, gen(0))
    assert torch.allclose(y, x, atol=1e-5)
    y = DiffAugment("rotate", DSAParams(ratio_rotate=0.0))(x, gen(0))
    assert torch.allclose(y, x, atol=1e-5)


def test_rejects_non_image_input():
    with pytest.raises(ValueError):
        DiffAugment()(torch.rand(3, 32, 32), gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = images(4, 3, 32)
    aug = DiffAugment()
    cpu_state = torch.cuda.get_rng_state()
    y_gpu = aug(x.cuda(), gen(13))
    assert torch.equal(torch.cuda.get_rng_state(), cpu_state)
    assert y_gpu.device.type == "cuda"
    assert torch.allclose(y_gpu.cpu(), aug(x, gen(13)), atol=1e-4)


# ---- the field's single-op mode (ParamDiffAug.aug_mode = 'S') ------------------------------


def _after_pick(g: torch.Generator, n_ops: int) -> torch.Generator:
    """A copy of g advanced past single mode's op draw."""
    copy = torch.Generator()
    copy.set_state(g.get_state())
    torch.randint(n_ops, (1,), generator=copy)
    return copy


@pytest.mark.parametrize("batch_mode", [False, True])
def test_single_mode_applies_exactly_one_op_per_call(batch_mode):
    x = images(4, 3, 32)
    aug = DiffAugment(batch_mode=batch_mode)  # default mode: single
    assert aug.mode == "single"
    seen = set()
    for seed in range(40):
        op = aug.chosen_op(gen(seed))
        seen.add(op)
        alone = DiffAugment(op, batch_mode=batch_mode, mode="all")
        expected = alone(x, _after_pick(gen(seed), len(OPS)))
        assert torch.equal(aug(x, gen(seed)), expected), op
    assert seen == set(OPS)  # every op of the strategy gets picked


def test_single_mode_op_is_one_for_the_whole_batch():
    # a strategy of two ops with disjoint effects: each call's rows all show the same one
    x = images(8, 3, 16) + 1.0
    aug = DiffAugment("flip_cutout", DSAParams(prob_flip=1.0))
    for seed in range(10):
        y = aug(x, gen(seed))
        flipped = [torch.equal(y[i], x[i].flip(2)) for i in range(8)]
        zeroed = [bool((y[i] == 0).any()) for i in range(8)]
        assert all(flipped) != all(zeroed)
        assert all(flipped) or not any(flipped)


def test_siamese_real_and_synthetic_share_op_and_parameters():
    # condensation: batch-mode draws, the two generators in one state; batches of other sizes
    real = images(1, 3, 32, seed=2).repeat(9, 1, 1, 1)
    syn = real[:3].clone()
    aug = DiffAugment(batch_mode=True)
    for seed in range(12):
        g_real = gen(100 + seed)
        g_syn = torch.Generator()
        g_syn.set_state(g_real.get_state())
        y_real, y_syn = aug(real, g_real), aug(syn, g_syn)
        assert all(torch.equal(y_real[0], y_real[i]) for i in range(9))  # one draw per batch
        assert torch.equal(y_real[:3], y_syn)


@pytest.mark.parametrize("strategy", ["scale", "rotate", "crop_scale_rotate"])
def test_evaluation_draws_parameters_per_image(strategy):
    x = images(1, 3, 32).repeat(6, 1, 1, 1)
    y = DiffAugment(strategy, batch_mode=False)(x, gen(21))
    assert not any(torch.allclose(y[0], y[i]) for i in range(1, 6))


def test_all_mode_composes_every_op_in_order():
    x = images(3, 3, 32)
    aug = DiffAugment("flip_rotate", DSAParams(prob_flip=1.0), mode="all")
    expected = DiffAugment("rotate", mode="all")(x.flip(3), _skip_flip_draw(gen(3), 3))
    assert torch.allclose(aug(x, gen(3)), expected)


def _skip_flip_draw(g: torch.Generator, n: int) -> torch.Generator:
    torch.rand(n, generator=g)
    return g


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="single"):
        DiffAugment(mode="M")
