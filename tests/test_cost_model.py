"""The analytic cost model against torch's own FLOP count of a real condensation step.

FlopCounterMode counts convolutions, linear layers and batched products (forward and backward,
input and weight gradients as autograd computes them): the model's `flops` counts the same
operations from the layer shapes, so the two must agree exactly (up to float rounding of the
sums). The model's other figures (elementwise FLOPs, bytes) are estimates and are only checked
for their direction here.
"""

import pytest
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import cost_model
from benchmarks.speed_bench import StepHarness
from benchmarks.speed_bench import tiny_config as small
from engine.presets import load_preset

CASES = {
    # 28 px, 1 channel: generated at 32 and cropped; head classifier, fine-tuned G
    "mnist-28px": ((1, 28, 4), {}),
    # 64 px, 3 channels, ConvNet-4: frozen teacher as L_c's classifier plus soft labels, frozen G
    "imagenet-64px": (
        (3, 64, 5),
        {"classifier": "teacher", "soft_labels": True, "finetune_generator": False},
    ),
    # fixed codebook (G only), class-mean matching, a class subset per step
    "cifar-32px-subset": (
        (3, 32, 6),
        {"codebook": "fixed", "feature_match": "class", "classes_per_step": 3},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_flops_match_torch_count_of_a_real_step(case):
    shape, condense = CASES[case]
    cfg = small(**condense)
    harness = StepHarness(cfg, *shape)
    with FlopCounterMode(display=False) as step_only:
        harness.step(0, phi=False)
    with FlopCounterMode(display=False) as with_phi:
        harness.step(1, phi=True)
    counted_step = step_only.get_total_flops()
    counted_phi = with_phi.get_total_flops() - counted_step
    cost = cost_model.condense_step_cost(cfg, *shape)
    phi = cost.part("phi_update").flops
    assert cost.flops - phi == pytest.approx(counted_step, rel=1e-9)
    assert phi * cfg.condense.gen_steps == pytest.approx(counted_phi, rel=1e-9)  # amortised
    assert cost.other_flops > 0 and cost.bytes > 0


def test_parts_follow_the_config():
    cfg = small()
    base = cost_model.condense_step_cost(cfg, 3, 32, 10)
    # a frozen G still back-propagates to the codebook, but computes no weight gradients
    cfg.condense.finetune_generator = False
    frozen = cost_model.condense_step_cost(cfg, 3, 32, 10)
    assert 0 < frozen.part("generator_bwd").flops < base.part("generator_bwd").flops
    assert frozen.part("generator_fwd").flops == base.part("generator_fwd").flops
    # phi's synthetic backward is input gradients only: as many FLOPs as its forward
    assert base.part("phi_syn_bwd").flops == base.part("phi_syn_fwd").flops
    # bf16 halves activation traffic, not the FLOPs
    cfg.condense.precision = "bf16"
    half = cost_model.condense_step_cost(cfg, 3, 32, 10)
    assert half.flops == frozen.flops and half.bytes < frozen.bytes
    assert sum(base.by_region().values()) == pytest.approx(base.flops)


def test_imagenet64_preset_by_hand():
    """ConvNet-4 width 128 on 3x64x64: the real-association forward of one step, by hand."""
    cfg = load_preset("imagenet64-ipc10")
    cost = cost_model.condense_step_cost(cfg, 3, 64, 1000)
    n_real = 100 * 10 * 4  # classes_per_step x ipc x assoc_per_image
    macs = 9 * (3 * 128 * 64**2 + 128 * 128 * (32**2 + 16**2 + 8**2))
    assert cost.part("phi_real_fwd").flops == 2 * n_real * macs
    assert cost_model.steps_per_sweep(cfg, 1000) == 10
