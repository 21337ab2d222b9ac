"""`gencond submit` against a real single-node SLURM (launch/slurm_local.py starts it as root):
a 2-task distributed job, job arrays gathered into one JSON, a job requeued mid-run, and the
sbatch script of a 2-node x 8-GPU job against a reviewed golden file."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY, condense_args, params, rank_env, sets, single_rank_cli, torchrun

GOLDEN = Path(__file__).parent / "golden" / "sbatch_2x8gpu.txt"


@pytest.fixture(scope="module")
def slurm():
    from launch import slurm_local

    if not slurm_local.available():
        if os.geteuid() != 0:
            pytest.skip("no SLURM controller reachable and not root, so none can be started")
        slurm_local.start()
    before = set(slurm_local.queued_jobs())
    yield
    # leave no job of ours behind (a failed wait, a killed waiter); a cluster started by the
    # test command (scripts/test.sh) is stopped there
    ours = [job for job in slurm_local.queued_jobs() if job not in before]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, toy_stage):
    return tmp_path_factory.mktemp("slurm"), *toy_stage


def submit(root: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    try:
        return single_rank_cli(
            "submit",
            "--cluster",
            "slurm",
            "--cpus-per-task",
            "1",
            "--time",
            "30",
            "--log-dir",
            root / "jobs",
            *args,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        queue = subprocess.run(
            ["squeue", "-o", "%i %T %M %R %j"], capture_output=True, text=True
        ).stdout
        pytest.fail(f"`submit --wait` did not end within {timeout:.0f} s; the queue:\n{queue}")


def test_sbatch_script_for_two_nodes_of_eight_gpus(tmp_path):
    r = single_rank_cli(
        "submit",
        "--partition",
        "gpu",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--cpus-per-task",
        "10",
        "--mem-gb",
        "480",
        "--time",
        "720",
        "--account",
        "myproject",
        "--qos",
        "high",
        "--sbatch",
        "constraint=h100",
        "--log-dir",
        tmp_path / "LOGDIR",
        "--print-sbatch",
        "condense",
    )
    assert r.returncode == 0, r.stderr
    text = r.stdout.replace(str(tmp_path / "LOGDIR"), "LOGDIR")
    assert text.strip() == GOLDEN.read_text().strip()


def test_cluster_defaults_file(tmp_path):
    defaults = tmp_path / "clusters.toml"
    defaults.write_text('[slurm]\npartition = "a100"\naccount = "lab"\ntime_min = 90\n')
    r = single_rank_cli("submit", "--defaults", defaults, "--print-sbatch", "condense")
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --partition=a100" in r.stdout and "#SBATCH --account=lab" in r.stdout
    assert "#SBATCH --time=90" in r.stdout
    defaults.write_text('[slurm]\npartitoin = "a100"\n')
    r = single_rank_cli("submit", "--defaults", defaults, "--print-sbatch", "condense")
    assert r.returncode == 2 and "unknown key(s) partitoin" in r.stderr


def test_two_task_job_equals_two_local_ranks(slurm, toy_run):
    root, data, pre = toy_run
    local = root / "local2"
    r = torchrun(2, *condense_args(data, pre, local, "max_steps=8"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = root / "slurm2"
    r = submit(
        root, "--tasks-per-node", "2", "--wait", *condense_args(data, pre, out, "max_steps=8")
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "COMPLETED" in r.stderr
    mine, ref = params(out), params(local)
    for k in ref:
        torch.testing.assert_close(mine[k], ref[k], rtol=0, atol=1e-6, msg=k)


def test_evaluation_array_is_gathered(slurm, toy_run):
    root, data, pre = toy_run
    run = root / "for_eval"
    assert single_rank_cli(*condense_args(data, pre, run, "max_steps=4")).returncode == 0
    args = [
        "evaluate",
        run,
        "--data",
        data,
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--baselines",
        "random",
    ]
    r = submit(root, "--wait", *args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    arrayed = json.loads((run / "eval.json").read_text())
    assert arrayed["array_elements"] == 2
    assert sorted(p.name for p in (run / "eval_parts").iterdir()) == ["seed_0.json", "seed_1.json"]
    r = single_rank_cli(*args)  # the same evaluation in one process
    assert r.returncode == 0, r.stderr
    single = json.loads((run / "eval.json").read_text())
    assert arrayed["eval"] == single["eval"]  # the gathered file records the N-seed protocol
    for name in ("condensed", "random"):
        assert arrayed["results"][name]["convnet"]["accs"] == pytest.approx(
            single["results"][name]["convnet"]["accs"], abs=1e-9
        )


def test_sweep_array_gathers_one_json(slurm, toy_run):
    root, data, pre = toy_run
    out = root / "sweep"
    grid = ["--grid", "seed=0,1", "--grid", "condense.codebook=learned,truncated"]
    r = submit(
        root,
        "--wait",
        "sweep",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        out,
        "--pretrained",
        pre,
        *grid,
        "--set",
        "max_steps=2",
        *sets(*TINY),
        "--set",
        "condense.finetune_generator=true",  # truncated codes are not trained
        "--eval-seeds",
        "1",
        "--eval-epochs",
        "1",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["points"]) == 4
    points = {(row["seed"], row["condense.codebook"]) for row in sweep["rows"]}
    assert points == {("0", "learned"), ("0", "truncated"), ("1", "learned"), ("1", "truncated")}
    assert {row["set"] for row in sweep["rows"]} >= {"condensed", "random"}


@pytest.mark.parametrize("interrupt", ["scontrol-requeue", "time-limit-signal"])
def test_requeued_job_ends_like_an_uninterrupted_one(slurm, toy_run, interrupt):
    """Mid-run, either `scontrol requeue` (SIGTERM, SLURM requeues: a preemption) or SIGUSR2
    to the job's tasks (what --signal=USR2@T sends before the time limit; the job requeues
    itself). Both: checkpoint, stop, restart, resume, and end bit-identical to an
    uninterrupted run."""
    root, data, pre = toy_run
    longer = ["max_steps=40", "condense.outer_iterations=10"]
    ref = root / "uninterrupted"
    if not (ref / "condensed.pt").exists():
        assert single_rank_cli(*condense_args(data, pre, ref, *longer)).returncode == 0
    out, logs = root / f"requeued-{interrupt}", root / f"jobs-{interrupt}"
    waiter, job = _submit_until_steps(condense_args(data, pre, out, *longer), out, logs, steps=5)
    if interrupt == "scontrol-requeue":
        stop = ["scontrol", "requeue", job]
    else:
        stop = ["scancel", "--signal=USR2", job]
    done = subprocess.run(stop, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    _start_requeued_now(job)
    _, err = waiter.communicate(timeout=600)
    assert waiter.returncode == 0, err[-3000:]
    log = (logs / job / f"{job}_0_log.err").read_text()
    signal_name = "SIGTERM" if interrupt == "scontrol-requeue" else "SIGUSR2"
    assert f"stopped by {signal_name}" in log and "Resuming from" in log
    mine, theirs = params(out), params(ref)
    for k in theirs:
        assert torch.equal(mine[k], theirs[k]), k


def _submit_until_steps(args: list, out: Path, logs: Path, steps: int):
    """`submit --wait` in the background until the job logged `steps` steps: (waiter, job id)."""
    cmd = [
        sys.executable,
        "-m",
        "launch.cli",
        "submit",
        "--cluster",
        "slurm",
        "--cpus-per-task",
        "1",
        "--time",
        "30",
        "--log-dir",
        str(logs),
        "--wait",
        *map(str, args),
    ]
    pipe = subprocess.PIPE
    waiter = subprocess.Popen(cmd, cwd=ROOT, env=rank_env(), stdout=pipe, stderr=pipe, text=True)
    deadline = time.time() + 300
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= steps):
        assert time.time() < deadline and waiter.poll() is None, "the job made no progress"
        time.sleep(0.2)
    return waiter, next(p.name for p in logs.iterdir() if re.fullmatch(r"\d+", p.name))


def _start_requeued_now(job: str, timeout: float = 120) -> None:
    """SLURM holds a requeued job for about two minutes before it is eligible again; as the
    cluster's admin, make it eligible in 2 s (the test is about resuming, not waiting). Not at
    once: slurmd refuses a launch in the same second as the kill that revoked the job's
    credential ("Job credential revoked"), and the relaunch then fails without a result."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "PENDING":
            subprocess.run(
                ["scontrol", "update", f"JobId={job}", "StartTime=now+2"], capture_output=True
            )
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job} was not requeued (state {state!r})")


def test_job_cancelled_mid_run_ends_the_wait(slurm, toy_run):
    """A job killed before it writes a result (scancel here; a node refusing the launch in CI
    once) leaves submitit, without accounting, waiting forever: the wait must end, non-zero,
    naming the scheduler's state."""
    root, data, pre = toy_run
    out, logs = root / "cancelled", root / "jobs-cancelled"
    longer = ["max_steps=400", "condense.outer_iterations=100"]
    waiter, job = _submit_until_steps(condense_args(data, pre, out, *longer), out, logs, steps=2)
    assert subprocess.run(["scancel", job], capture_output=True).returncode == 0
    try:
        _, err = waiter.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        waiter.kill()
        raise AssertionError("`submit --wait` still waits for a cancelled job") from None
    assert waiter.returncode != 0
    assert f"job {job} ended (CANCELLED) without a result" in err, err[-2000:]


def test_failed_job_exits_non_zero(slurm, toy_run):
    root, data, pre = toy_run
    r = submit(
        root,
        "--wait",
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        root / "bad",
        "--pretrained",
        root / "missing-pre",
    )
    assert r.returncode != 0
    assert "failed" in r.stderr and "log:" in r.stderr


def test_sweep_refuses_an_impossible_point_before_submitting(tmp_path):
    r = single_rank_cli(
        "submit",
        "--log-dir",
        tmp_path / "jobs",
        "sweep",
        "--preset",
        "mnist-smoke",
        "--data",
        tmp_path,
        "--out",
        tmp_path / "s",
        "--grid",
        "condense.codebook=learned,fixed",
        "--set",
        "condense.finetune_generator=false",
    )  # G frozen: fixed codes learn nothing
    assert r.returncode == 2 and "nothing to learn" in r.stderr
    assert not (tmp_path / "jobs").exists()


def test_submit_refuses_bad_options_before_submitting(tmp_path):
    r = single_rank_cli(
        "submit",
        "--log-dir",
        tmp_path / "jobs",
        "condense",
        "--preset",
        "nope",
        "--data",
        tmp_path,
        "--out",
        tmp_path / "o",
    )
    assert r.returncode == 2
    assert "unknown preset" in r.stderr or "nope" in r.stderr
    assert not (tmp_path / "jobs").exists()


def test_local_cluster_runs_the_same_command(toy_run):
    """--cluster local (a subprocess on this machine, no SLURM) gives the direct run's result."""
    root, data, pre = toy_run
    direct, submitted = root / "direct", root / "local_cluster"
    assert single_rank_cli(*condense_args(data, pre, direct, "max_steps=4")).returncode == 0
    r = single_rank_cli(
        "submit",
        "--cluster",
        "local",
        "--log-dir",
        root / "local_jobs",
        "--wait",
        *condense_args(data, pre, submitted, "max_steps=4"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "COMPLETED" in r.stderr
    mine, ref = params(submitted), params(direct)
    for k in ref:
        assert torch.equal(mine[k], ref[k]), k
