"""What a submitit job runs: a `gencond` command, in-process, on every task of the job.
The command's entry (launch.cli.main) is handed in by the submitting side, so this module
stays below the CLI.

Kept apart from submission (launch/submit.py), as DINOv2's Trainer is from its run/submit.py:
the callable sets the torch.distributed variables from submitit's SLURM environment, runs the
command, and knows how to come back (`checkpoint()`), nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from common import fsio

PREEMPTED_EXIT = 3  # launch.cli's exit status after a signal and a checkpoint


def run_task(task):
    """map_array's function: call the task."""
    return task()


def _job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


class CommandTask:
    """`gencond <argv>` on every task of a job. Multi-task jobs become one torch.distributed
    world (one task per GPU) through submitit's TorchDistributedEnvironment."""

    def __init__(self, argv: list[str], entry: Callable[[list[str]], int]):
        self.argv = [str(a) for a in argv]
        self.entry = entry  # a module-level function: submitit pickles it by reference

    def __call__(self) -> dict:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        os.environ.setdefault("COLUMNS", "160")
        code = self.entry(self.argv)
        if code == PREEMPTED_EXIT:  # checkpointed on a signal: leave no result, come back
            self._requeue_after_time_limit(env.global_rank)
            sys.exit(PREEMPTED_EXIT)  # SystemExit: submitit writes no result for this attempt
        if code != 0:
            raise RuntimeError(f"gencond {' '.join(self.argv)} exited with status {code}")
        return {"argv": self.argv, "rank": env.global_rank, "job": str(env.job_id)}

    @staticmethod
    def _requeue_after_time_limit(rank: int) -> None:
        """SIGUSR2 (SLURM's --signal before the time limit) needs an explicit requeue; after a
        SIGTERM from preemption or `scontrol requeue` SLURM requeues the job itself."""
        if rank == 0 and os.environ.get("GENCOND_STOP_SIGNAL") == "SIGUSR2" and _job_id():
            subprocess.run(["scontrol", "requeue", _job_id()], capture_output=True)

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on its own timeout signal: run the same command again; the
        command resumes from RUN/checkpoint.pt."""
        import submitit

        return submitit.helpers.DelayedSubmission(CommandTask(self.argv, self.entry))

    def __repr__(self) -> str:
        return f"gencond {' '.join(self.argv)}"


class SequenceTask(CommandTask):
    """Several `gencond` commands one after the other (a sweep point: condense, then evaluate).
    A command whose `done` file exists is skipped, so a requeued job redoes only the rest."""

    def __init__(self, argvs: list[list[str]], done: list[str], entry: Callable[[list[str]], int]):
        self.argvs = [[str(a) for a in argv] for argv in argvs]
        self.done = [str(d) for d in done]
        super().__init__(self.argvs[-1], entry)

    def __call__(self) -> dict:
        from pathlib import Path

        results = []
        for argv, done in zip(self.argvs, self.done, strict=True):
            if Path(done).exists():
                continue
            self.argv = argv
            results.append(CommandTask.__call__(self))
        return {"ran": results}

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(SequenceTask(self.argvs, self.done, self.entry))

    def __repr__(self) -> str:
        return " && ".join(f"gencond {' '.join(a)}" for a in self.argvs)


class GatherSweepTask:
    """Runs after a sweep's array (afterok): ROOT/sweep.json from every point's eval.json."""

    def __init__(self, root: str):
        self.root = str(root)

    def __call__(self) -> dict:
        from pathlib import Path

        from launch.sweep import gather_sweep

        root = Path(self.root)
        points = fsio.read_json(root / "sweep_points.json", "sweep point list")
        return gather_sweep(root, points)
