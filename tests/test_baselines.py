"""Pixel baselines (benchmarks/baselines): losses on hand-computed tensors, one step improves
its own objective, TESLA's gradient equals MTT's where they must agree, DM on two gloo ranks
gives the one-process images."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ROOT

from benchmarks.baselines.base import NoisePool, SetShape, TensorPool, keyed_generator
from benchmarks.baselines.dm import DistributionMatching, DMConfig
from benchmarks.baselines.gradient_matching import (
    GradientMatching,
    GradientMatchingConfig,
    dc_loops,
    matching_distance,
)
from benchmarks.baselines.mtt import MTTConfig, TrajectoryMatching, random_trajectories
from benchmarks.baselines.presets import load_baseline_preset
from common.errors import ConfigError

SHAPE = SetShape(num_classes=3, ipc=2, channels=1, image_size=8)


def test_matching_distance_by_hand():
    real = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([5.0, 5.0])]
    syn = [torch.tensor([[2.0, 0.0], [1.0, 0.0]]), torch.tensor([-5.0, 1.0])]
    # unit 1: parallel (1 - 1 = 0); unit 2: orthogonal (1 - 0 = 1); the bias is skipped
    assert matching_distance(real, syn).item() == pytest.approx(1.0, abs=1e-5)
    opposite = [torch.tensor([[-1.0, 0.0], [0.0, -3.0]]), torch.tensor([0.0, 0.0])]
    assert matching_distance(real, opposite).item() == pytest.approx(4.0, abs=1e-5)


def test_dc_loops_follow_dc_table():
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(50) == (50, 10)
    assert dc_loops(7) == (10, 50)


def test_dm_class_loss_is_the_squared_distance_of_mean_embeddings():
    dm = DistributionMatching(SHAPE, DMConfig(batch_real=4, dsa_strategy="none", net_width=4))
    pool = NoisePool(1, 8)
    dm.init_from(pool, "noise")
    net = dm.fresh_net(0)
    real = pool.sample(1, 4, keyed_generator(0, 1, 0, 1))  # REAL_STREAM, iteration 0, class 1
    with torch.no_grad():
        expected = (net.embed(real).mean(0) - net.embed(dm.images[2:4]).mean(0)).square().sum()
        assert dm.class_loss(net, 0, 1, pool).item() == pytest.approx(expected.item(), rel=1e-5)


def _real_pool() -> TensorPool:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(10)
    images = torch.randn(30, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1).float()
    return TensorPool(images, labels)


def test_dm_step_lowers_its_loss_on_the_same_network():
    dm = DistributionMatching(SHAPE, DMConfig(batch_real=8, lr_img=0.1, net_width=4))
    pool = _real_pool()
    dm.init_from(pool, "noise")
    before = dm.images.detach().clone()
    net = dm.fresh_net(0)
    loss_before = sum(dm.class_loss(net, 0, c, pool).item() for c in range(3))
    record = dm.step(0, pool)
    assert record["loss"] == pytest.approx(loss_before, rel=1e-4)
    assert not torch.equal(before, dm.images.detach())
    assert sum(dm.class_loss(net, 0, c, pool).item() for c in range(3)) < loss_before


def test_dsa_match_lowers_the_matching_loss():
    cfg = GradientMatchingConfig(batch_real=8, lr_img=0.01, net_width=4, momentum=0.0)
    gm = GradientMatching(SHAPE, cfg)  # IPC 2 -> DC's (10, 50) loops
    pool = _real_pool()
    gm.init_from(pool, "noise")
    gm.net = gm.fresh_net(0)
    gm.net_opt = torch.optim.SGD(gm.net.parameters(), lr=0.01)
    before = sum(gm.class_loss(0, c, pool).item() for c in range(3))
    assert gm.match(0, pool, None) == pytest.approx(before, rel=1e-4)
    assert sum(gm.class_loss(0, c, pool).item() for c in range(3)) < before
    assert (
        gm.name == "dsa"
        and GradientMatching(SHAPE, GradientMatchingConfig(siamese_augment=False, net_width=4)).name
        == "dc"
    )


def _mtt(constant_memory: bool, syn_steps: int) -> TrajectoryMatching:
    cfg = MTTConfig(
        syn_steps=syn_steps,
        expert_epochs=1,
        max_start_epoch=2,
        batch_syn=4,
        net_width=4,
        constant_memory=constant_memory,
        lr_img=0.0,
        lr_lr=0.0,
        dsa_strategy="none",
    )
    mtt = TrajectoryMatching(SHAPE, cfg, random_trajectories(SHAPE, cfg))
    mtt.init_from(_real_pool(), "real")
    return mtt


def test_tesla_gradient_equals_mtt_for_one_student_step():
    a, b = _mtt(False, 1), _mtt(True, 1)
    ra, rb = a.step(0), b.step(0)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6)
    assert torch.allclose(a.images.grad, b.images.grad, rtol=1e-4, atol=1e-8)
    assert a.syn_lr.grad.item() == pytest.approx(b.syn_lr.grad.item(), rel=1e-4)
    assert a.images.grad.abs().sum() > 0


def test_mtt_several_steps_same_loss_and_close_gradient():
    a, b = _mtt(False, 3), _mtt(True, 3)
    assert a.step(0)["loss"] == pytest.approx(b.step(0)["loss"], rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(
        a.images.grad.flatten(), b.images.grad.flatten(), dim=0
    )
    assert cos > 0.5  # TESLA drops only the later steps' Hessian terms


def test_presets_name_their_source_and_refuse_bad_input():
    p = load_baseline_preset("mtt", "cifar10", 10)
    assert (p.config.syn_steps, p.config.max_start_epoch) == (30, 20) and "Table 6" in p.source
    assert "no mnist row" in load_baseline_preset("mtt", "mnist", 1).source
    assert load_baseline_preset("tesla", "imagenet64", 50).config.constant_memory
    with pytest.raises(ConfigError, match="unknown baseline"):
        load_baseline_preset("kip", "mnist", 1)
    with pytest.raises(ConfigError, match="ipc"):
        load_baseline_preset("dm", "mnist", 0)
    with pytest.raises(ConfigError, match="no setting"):
        load_baseline_preset("dm", "mnist", 1, overrides={"lr": 1})


SCRIPT = textwrap.dedent("""
    import sys, torch
    from engine import distributed
    from benchmarks.baselines.base import NoisePool, SetShape
    from benchmarks.baselines.dm import DistributionMatching, DMConfig
    env = distributed.init("cpu")
    dm = DistributionMatching(SetShape(5, 2, 1, 8), DMConfig(batch_real=6, net_width=4))
    pool = NoisePool(1, 8)
    dm.init_from(pool, "noise")
    losses = [dm.step(i, pool)["loss"] for i in range(3)]
    if env.rank == 0:
        torch.save({"images": dm.images.detach(), "losses": losses}, sys.argv[1])
    distributed.barrier()  # leave together: a peer closing early can abort gloo at teardown
    distributed.teardown()
    print(f"rank {env.rank} finished", flush=True)
""")

# torch's gloo backend rarely (about 1 launch in 100 on a loaded 2-core machine) aborts a process
# at interpreter exit, after destroy_process_group, with this line (gloo threads at interpreter
# finalisation; cf. pytorch/pytorch#179291).
# It is the one failure tolerated here, and only once both ranks printed that they finished.
GLOO_EXIT_ABORT = "terminate called without an active exception"


def _finished_cleanly_or_aborted_at_exit(run: subprocess.CompletedProcess, ranks: int) -> bool:
    finished = all(f"rank {r} finished" in run.stdout for r in range(ranks))
    if run.returncode == 0:
        return finished
    return finished and GLOO_EXIT_ABORT in run.stderr and "exitcode  : -6" in run.stderr


def test_dm_on_two_ranks_gives_the_one_process_images(tmp_path):
    script = tmp_path / "dm_ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    one = subprocess.run(
        [sys.executable, script, tmp_path / "one.pt"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            script,
            tmp_path / "two.pt",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert _finished_cleanly_or_aborted_at_exit(two, 2), two.stdout + two.stderr
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    # 5 classes over 2 ranks (3 + 2); each image row gets its gradient from one rank only
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-6)
    assert torch.allclose(a["images"], b["images"], atol=1e-6)
    assert not torch.allclose(a["images"], torch.zeros_like(a["images"]))
