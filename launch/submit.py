"""`gencond submit`: the same commands as SLURM jobs (or local / in-process ones) via submitit.

One task per GPU; a multi-task job is one torch.distributed world (launch/tasks.py). Job arrays:
evaluating N seeds of a run is one array (plus a gather job that waits on it), and a sweep over
(dataset preset, IPC, seed, ablation switch) is one array of condense+evaluate jobs. Cluster
defaults (partition, account, ...) come from a TOML file with one table per cluster."""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from common.errors import ConfigError, GencondError

_HOME_DEFAULTS = Path.home() / ".config" / "gencond" / "clusters.toml"
DEFAULTS_FILE = Path(os.environ.get("GENCOND_CLUSTER_DEFAULTS", _HOME_DEFAULTS))


class JobFailed(GencondError):
    """A submitted job ended in another state than COMPLETED."""


@dataclass
class SubmitOptions:
    cluster: str = "slurm"  # slurm | local | debug
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 0  # 0: one per GPU (or 1 without GPUs)
    cpus_per_task: int = 2
    mem_gb: float = 0  # 0: the cluster's default
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint, requeue
    sbatch: dict[str, str] = field(default_factory=dict)  # extra #SBATCH key=value
    log_dir: str = "gencond-jobs"
    job_name: str = "gencond"

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    def check(self) -> None:
        if self.cluster not in ("slurm", "local", "debug"):
            raise ConfigError(f"--cluster must be slurm, local or debug, not {self.cluster!r}")
        for name in ("nodes", "cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.gpus_per_node < 0 or self.tasks_per_node < 0:
            raise ConfigError("--gpus-per-node and --tasks-per-node must not be negative")
        if self.cluster != "slurm" and self.nodes > 1:
            raise ConfigError(f"--cluster {self.cluster} runs on this machine: --nodes 1 only")


def load_defaults(cluster: str, path: Path = DEFAULTS_FILE) -> dict:
    """The [cluster] table of the defaults file (keys: SubmitOptions fields), or {}."""
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text()).get(cluster, {})
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    known = {f.name for f in fields(SubmitOptions)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path} [{cluster}]: unknown key(s) {', '.join(unknown)}")
    return table


def executor(opts: SubmitOptions):
    """A submitit executor with these options (sbatch parameters for SLURM)."""
    import submitit

    _quiet_submitit()
    opts.check()
    folder = Path(opts.log_dir) / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=opts.cluster)
    params = {
        "name": opts.job_name,
        "timeout_min": opts.time_min,
        "nodes": opts.nodes,
        "tasks_per_node": opts.tasks,
        "cpus_per_task": opts.cpus_per_task,
    }
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.cluster == "slurm":
        params.update(
            slurm_array_parallelism=opts.array_parallelism, slurm_signal_delay_s=opts.signal_delay_s
        )
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.account:
            params["slurm_account"] = opts.account
        if opts.qos:
            params["slurm_qos"] = opts.qos
        if opts.sbatch:
            params["slurm_additional_parameters"] = dict(opts.sbatch)
    ex.update_parameters(**params)
    return ex


def submit_array(ex, tasks: list) -> list:
    """The one job-array path: each task (a launch.tasks callable) one array element."""
    from launch.tasks import run_task

    return ex.map_array(run_task, tasks)


def sbatch_script(
    opts: SubmitOptions, command: str = "python -u -m submitit.core._submit DIR"
) -> str:
    """The #SBATCH script `executor(opts)` submits, built without needing SLURM here (submitit's
    executor refuses to start where srun is missing), for review and the golden test."""
    from submitit.slurm import slurm

    opts.check()
    extra = {"account": opts.account} if opts.account else {}
    if opts.mem_gb:  # submitit's own conversion of mem_gb
        whole = opts.mem_gb == int(opts.mem_gb)
        extra["mem"] = f"{int(opts.mem_gb)}GB" if whole else f"{int(opts.mem_gb * 1024)}MB"
    return slurm._make_sbatch_string(
        command=command,
        folder=Path(opts.log_dir).resolve() / "%j",
        job_name=opts.job_name,
        partition=opts.partition,
        time=opts.time_min,
        nodes=opts.nodes,
        ntasks_per_node=opts.tasks,
        cpus_per_task=opts.cpus_per_task,
        gpus_per_node=opts.gpus_per_node or None,
        qos=opts.qos,
        signal_delay_s=opts.signal_delay_s,
        array_parallelism=opts.array_parallelism,
        additional_parameters=dict(opts.sbatch) or None,
        **extra,
    )


def paths(job) -> dict:
    return {
        "job": str(job.job_id),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
    }


def _quiet_submitit() -> None:
    """Without accounting (a local SLURM) every state query logs an sacct warning."""
    import logging

    logging.getLogger("submitit").setLevel(logging.ERROR)


# squeue's states of a job that will not run again (a requeued job shows PENDING or REQUEUED)
ENDED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "GONE",
}


def scheduler_state(job) -> str:
    """The job's state from squeue, which keeps a finished job for MinJobAge (300 s by default):
    what a cluster without accounting (no sacct, so submitit says UNKNOWN) still knows. GONE:
    squeue no longer knows the job id; UNKNOWN: squeue did not answer."""
    done = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", str(job.job_id), "-o", "%T"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return "GONE" if "Invalid job id" in done.stderr else "UNKNOWN"
    states = done.stdout.split()
    return states[0] if states else "UNKNOWN"


def _is_slurm(job) -> bool:
    from submitit.slurm.slurm import SlurmJob

    return isinstance(job, SlurmJob)


def has_ended(job) -> bool:
    """Finished with a result, or ended without one (killed before it could write it, e.g.
    cancelled or refused by the node): submitit alone would wait for that forever."""
    if job.done():
        return True
    return _is_slurm(job) and _state(job) == "UNKNOWN" and scheduler_state(job) in ENDED_STATES


def final_state(job) -> str:
    """COMPLETED or FAILED from the job's result files (squeue forgets finished jobs and a
    cluster without accounting has no sacct), the scheduler's state of a job that ended
    without a result, else the scheduler's current state."""
    if _is_slurm(job) and not job.paths.result_pickle.exists():
        state = _state(job)
        return scheduler_state(job) if state == "UNKNOWN" else state
    if not job.done():
        return _state(job)
    try:
        job.results()
        return "COMPLETED"
    except Exception:  # noqa: BLE001 - submitit re-raises the job's own error
        return "FAILED"


def wait(jobs: list, poll_s: float = 2.0) -> list[str]:
    """Live rich table of the jobs' states until all finish; their final states."""
    from rich.live import Live
    from rich.table import Table

    from common.console import console

    _quiet_submitit()

    def table() -> Table:
        t = Table(title="gencond jobs")
        for col in ("job", "state", "log"):
            t.add_column(col)
        for j in jobs:
            t.add_row(str(j.job_id), final_state(j), str(j.paths.stderr))
        return t

    with Live(table(), console=console, refresh_per_second=2) as live:
        while not all(has_ended(j) for j in jobs):
            time.sleep(poll_s)
            live.update(table())
        live.update(table())
    return [final_state(j) for j in jobs]


def _state(job) -> str:
    try:
        state = job.state
    except Exception:  # noqa: BLE001 - a state query that fails says nothing about the job
        return "UNKNOWN"
    return state.split()[0] if state else "UNKNOWN"


def _result_appears(job, grace_s: float = 10.0) -> bool:
    """A shared filesystem may show the result file a moment after the job ended."""
    deadline = time.time() + grace_s
    while not job.paths.result_pickle.exists():
        if time.time() > deadline:
            return False
        time.sleep(0.5)
    return True


def check_results(jobs: list) -> None:
    """Raise JobFailed naming the first failed job and its log."""
    for j in jobs:
        if _is_slurm(j) and not _result_appears(j):  # local/debug jobs: submitit knows
            raise JobFailed(
                f"job {j.job_id} ended ({final_state(j)}) without a result; log: {j.paths.stderr}"
            )
        try:
            j.results()
        except Exception as e:  # noqa: BLE001 - submitit re-raises the job's own error
            lines = [x for x in str(e).strip().splitlines() if x.strip()] or ["failed"]
            raise JobFailed(
                f"job {j.job_id} failed ({lines[-1][:200]}); log: {j.paths.stderr}"
            ) from None
