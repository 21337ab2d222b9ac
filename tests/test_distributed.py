"""Condensation on several real processes (gloo, CPU): world-size invariance, torchrun across two
"nodes", exact resume, signals, a dead rank, and a world larger than a step's classes.

Tolerance for "the same parameters" across world sizes. Splitting a step over ranks changes only
the order of float32 sums (per-rank partial gradients, then an all-reduce): the first steps'
losses agree to ~1e-7. Unit-normalised features with a sharp temperature amplify rounding on
this tiny toy problem, so the test uses intra_temperature 1 (at 0.5 one process run with 1
instead of 2 intra-op threads, nothing else changed, already ends 6e-4 away; at 1, 2.4e-5,
measured). Parameters must agree within atol 5e-4 / rtol 1e-3 (20x that noise floor), the first
steps' logged losses within rel 1e-4 or abs 1e-4. A real bug is far outside: halving one loss
weight (what scaling a loss by the wrong rank share does) moves the parameters by more than
2.5e-3, checked below.
The same world size resumed from a checkpoint must match bit for bit."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    TINY,
    condense_args,
    free_port,
    params,
    rank_env,
    sets,
    single_rank_cli,
    torchrun,
    toy,
)

RTOL, ATOL = 1e-3, 5e-4
STEPS = 8  # 2 outer x 2 inner x 2 generator steps: two phi re-initialisations, four phi updates


def max_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def assert_close(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=RTOL, atol=ATOL, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_stage):
    """Toy data, one pretrain stage, one uninterrupted single-process run."""
    root = tmp_path_factory.mktemp("dist")
    data, pre = toy_stage
    one = root / "w1"
    r = single_rank_cli(*condense_args(data, pre, one, f"max_steps={STEPS}"))
    assert r.returncode == 0, r.stderr
    return root, data, pre, one


@pytest.mark.parametrize("world", [2, 4])
def test_world_size_invariance(setup, world):
    root, data, pre, one = setup
    out = root / f"w{world}"
    r = torchrun(world, *condense_args(data, pre, out, f"max_steps={STEPS}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_close(params(out), params(one))
    # the logged losses are the global ones, whatever the split
    mine = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert len(mine) == len(ref) == STEPS
    # before rounding is amplified; D's disc_steps updates a step compound it (measured: a 2e-5
    # relative gap in the loss by step 4 on 2 ranks, with the parameters well inside tolerance).
    # L_inter is a hinge residual near 0 (0.02-0.05 here), so its relative gap is large: on an
    # AMD EPYC, 4 ranks, 1.8e-6 at step 3 and 8.5e-5 at step 4, at the commit before this
    # tolerance too; hence abs 1e-4 for every term. A wrong rank share is off by 1/W or W.
    for a, b in zip(mine[:4], ref[:4], strict=True):
        for key in ("loss", "feature", "intra", "inter", "adv", "cls", "disc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
    print(f"world {world}: max parameter gap to 1 rank {max_gap(params(out), params(one)):.2e}")


def test_wrongly_scaled_run_would_be_caught(setup):
    """The tolerance is meaningful: halving one loss (a rank-share scaling bug) is far outside."""
    root, data, pre, one = setup
    other = root / "half_intra"
    r = single_rank_cli(
        *condense_args(data, pre, other, f"max_steps={STEPS}", "condense.weight_intra=0.5")
    )
    assert r.returncode == 0, r.stderr
    assert max_gap(params(other), params(one)) > 5 * ATOL


def test_two_torchrun_nodes_match_one_node(setup):
    root, data, pre, one = setup
    out, port = root / "two_nodes", free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=gencond-test",
    ]
    args = condense_args(data, pre, out, f"max_steps={STEPS}")
    nodes = [
        subprocess.Popen(
            [*cmd, f"--node-rank={i}", "-m", "launch.cli", *map(str, args)],
            cwd=ROOT,
            env=rank_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert_close(params(out), params(one))


def test_resume_is_exact(setup):
    """Stop at step 5 (max_steps), resume to 8: bit-identical to the uninterrupted run."""
    root, data, pre, one = setup
    out = root / "resumed"
    r = single_rank_cli(*condense_args(data, pre, out, "max_steps=5"))
    assert r.returncode == 0, r.stderr
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 5
    r = single_rank_cli(*condense_args(data, pre, out, f"max_steps={STEPS}"))
    assert r.returncode == 0, r.stderr
    assert "Resuming" in r.stderr and "step 5" in r.stderr
    mine, ref = params(out), params(one)
    for k in ref:
        assert torch.equal(mine[k], ref[k]), k
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))


def test_resume_on_another_world_size(setup):
    """Stopped on 1 rank, resumed on 2: the same result within the cross-world tolerance."""
    root, data, pre, one = setup
    out = root / "resumed_2"
    r = single_rank_cli(*condense_args(data, pre, out, "max_steps=3"))
    assert r.returncode == 0, r.stderr
    r = torchrun(2, *condense_args(data, pre, out, f"max_steps={STEPS}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_close(params(out), params(one))


def test_resume_refuses_another_config(setup):
    root, data, pre, one = setup
    out = root / "resumed_other"
    assert single_rank_cli(*condense_args(data, pre, out, "max_steps=3")).returncode == 0
    r = single_rank_cli(*condense_args(data, pre, out, "max_steps=6", "condense.lr_codebook=0.5"))
    assert r.returncode == 2
    assert "another config" in r.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3  # left as it was


def _wait_for_steps(path: Path, steps: int, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()[1][-2000:]}")
        if path.exists() and len(path.read_text().splitlines()) >= steps:
            return
        time.sleep(0.2)
    raise AssertionError("no progress")


def test_sigterm_checkpoints_and_resumes_exactly(setup):
    """SIGTERM (and SIGUSR2) mid-run: checkpoint at the next step boundary, exit 3, resume
    with the same command, end equal to an uninterrupted run."""
    root, data, pre, one = setup
    long = root / "long"  # uninterrupted reference: 40 steps
    args40 = ["max_steps=40", "condense.outer_iterations=5", "condense.inner_iterations=4"]
    assert single_rank_cli(*condense_args(data, pre, long, *args40)).returncode == 0
    out = root / "signalled"
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", *map(str, condense_args(data, pre, out, *args40))],
            cwd=ROOT,
            env=rank_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        done = len((out / "metrics.jsonl").read_text().splitlines()) if out.exists() else 0
        _wait_for_steps(out / "metrics.jsonl", done + 3, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal landed: nothing to test
            pytest.fail("the run finished before the signal; make it longer")
        assert proc.returncode == 3, err[-2000:]
        assert "stopped by" in err and "checkpoint" in err
        assert (out / "checkpoint.pt").exists() and not (out / "condensed.pt").exists()
    r = single_rank_cli(*condense_args(data, pre, out, *args40))
    assert r.returncode == 0, r.stderr
    assert not (out / "checkpoint.pt").exists()  # the schedule finished: nothing to resume
    mine, ref = params(out), params(long)
    for k in ref:
        assert torch.equal(mine[k], ref[k]), k


def test_dead_rank_stops_the_others(setup):
    """Rank 1 is killed mid-run; rank 0 exits with one clear error instead of hanging."""
    root, data, pre, one = setup
    out, port = root / "dead", free_port()
    args = condense_args(
        data, pre, out, "max_steps=200", "condense.outer_iterations=50", "collective_timeout_s=60"
    )
    procs = []
    for rank in range(2):
        env = {
            **rank_env(),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "launch.cli", *map(str, args)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    _wait_for_steps(out / "metrics.jsonl", 3, procs[0])
    procs[1].kill()
    started = time.time()
    _, err = procs[0].communicate(timeout=180)
    assert procs[0].returncode not in (0, None)
    assert time.time() - started < 120
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    assert "rank" in lines[0] and "failed" in lines[0]
    assert not (out / "condensed.pt").exists()


def test_more_ranks_than_classes_per_step(setup):
    root, data, pre, one = setup
    out = root / "too_many"
    r = torchrun(2, *condense_args(data, pre, out, "condense.classes_per_step=1"))
    assert r.returncode != 0
    assert "2 ranks but only 1 classes per step" in r.stderr
    assert not (out / "metrics.jsonl").exists()


def test_pretrain_is_world_size_invariant(setup):
    """Teacher (global batch split), class embeddings (dataset split) and the GAN (global
    BatchNorm statistics, codes drawn for the global batch) on 2 ranks = on 1."""
    root, data, pre, one = setup
    pre2 = root / "pre2"
    r = torchrun(
        2, "pretrain", "--preset", "mnist-smoke", "--data", data, "--out", pre2, *sets(*TINY)
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(pre / "pretrained.pt", weights_only=False)
    b = torch.load(pre2 / "pretrained.pt", weights_only=False)
    # Adam turns rounding-level gradients into lr-sized steps: one process run with 1 instead
    # of 2 threads ends up to 2.3e-3 away in the generator (median 2.7e-5, measured), so the
    # GAN gets atol 5e-3; the SGD-trained teacher agrees to 1e-7.
    for part, atol in (("teacher", 1e-6), ("generator", 5e-3)):
        for k, v in a[part].items():
            if v.is_floating_point():
                torch.testing.assert_close(b[part][k], v, rtol=0, atol=atol, msg=f"{part}.{k}")
    torch.testing.assert_close(b["class_embeddings"], a["class_embeddings"], rtol=1e-4, atol=1e-5)
    bn = [k for k in a["generator"] if k.endswith("running_var")]
    assert bn and all(
        not torch.equal(a["generator"][k], torch.ones_like(a["generator"][k])) for k in bn
    )


def test_evaluation_spreads_seeds_over_ranks(setup):
    root, data, pre, one = setup
    args = [
        "evaluate",
        one,
        "--data",
        data,
        "--seeds",
        "3",
        "--epochs",
        "2",
        "--baselines",
        "random,plain",
    ]
    r = single_rank_cli(*args)
    assert r.returncode == 0, r.stderr
    single = json.loads((one / "eval.json").read_text())
    r = torchrun(2, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    double = json.loads((one / "eval.json").read_text())
    assert double["ranks"] == 2 and single["ranks"] == 1
    for name in ("condensed", "plain_generator", "random"):
        assert double["results"][name]["convnet"]["accs"] == pytest.approx(
            single["results"][name]["convnet"]["accs"], abs=1e-9
        )


def test_step_cost_follows_classes_per_step_not_classes(tmp_path):
    """ImageNet-1K shape of the problem: 1000 classes (tiny 16 px images), 10 classes a step.
    Each step generates and reads the same number of images as with 100 classes; only the
    class table and the head grow with the number of classes."""
    counts = {}
    for classes in (100, 1000):
        data = toy(tmp_path / f"data{classes}", classes=classes, size=16, per_class=3)
        out = tmp_path / f"run{classes}"
        r = single_rank_cli(
            "condense",
            "--preset",
            "mnist-smoke",
            "--data",
            data,
            "--out",
            out,
            *sets(
                *TINY,
                "condense.classes_per_step=10",
                "max_steps=6",
                "condense.log_every=1",
                "teacher.batch_size=100",
            ),
        )
        assert r.returncode == 0, r.stderr[-2000:]
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        counts[classes] = {(x["synthetic_images"], x["real_images"]) for x in records}
        payload = torch.load(out / "condensed.pt", weights_only=False)
        assert payload["class_embeddings"].shape[0] == classes
    ipc, assoc = 3, 2  # TINY
    assert counts[100] == counts[1000] == {(10 * ipc, 10 * ipc * assoc)}


def test_coreset_start_is_world_size_invariant(setup):
    """condense.coreset_init=herding, refined by DM: the refinement and the fit before
    Algorithm 1 are split over ranks too."""
    root, data, pre, _ = setup
    start = (
        "condense.coreset_init=herding",
        "condense.coreset_fit_steps=10",
        "condense.coreset_refine_updates=3",
        "condense.coreset_refine_batch=4",
        "condense.coreset_refine_width=8",
        "max_steps=2",
    )
    one, two = root / "coreset_w1", root / "coreset_w2"
    r = single_rank_cli(*condense_args(data, pre, one, *start))
    assert r.returncode == 0, r.stderr
    assert "Refined the coreset with 3 DM updates" in r.stdout + r.stderr
    assert "Fitted to the herding coreset" in r.stdout + r.stderr
    r = torchrun(2, *condense_args(data, pre, two, *start))
    assert r.returncode == 0, r.stderr[-3000:]
    assert_close(params(two), params(one))
