"""Checkpoints of the training loops, and what every command does on a stop signal.

The condensation loop (RUN/checkpoint.pt) and the pretrain stage (PRE/pretrain_checkpoint.pt:
the teacher's SGD steps, then the GAN's steps) are written atomically by rank 0 every
`condense.checkpoint_every` / `gan.checkpoint_every` steps and when the job is told to stop
(SIGTERM from SLURM or torchrun, SIGUSR2 from SLURM's --signal before a time limit), then the
command exits 3 (Preempted) and the same command resumes. Every random draw of the condensation
loop is keyed by (seed, step, ...), so its model, optimiser and scheduler states plus the step
are all it needs; the pretrain stage also keeps its code generator's state, torch's / numpy's /
Python's global RNG states and the data order's (epoch, batch) position.

Commands without a loop to checkpoint (evaluate, synthesize, prep) stop at once on those
signals (stop_raises): the exception unwinds through the atomic writers of common/fsio.py, so
nothing half-written is left, and the command exits 3 with one line saying so."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import fsio
from common.errors import DataError, GencondError
from engine import distributed

CHECKPOINT_FILE = "checkpoint.pt"
PRETRAIN_CHECKPOINT_FILE = "pretrain_checkpoint.pt"
CHECKPOINT_FORMAT = 1  # files without the key are version 0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Stopped(GencondError):
    """A command stopped on SIGTERM / SIGUSR2 with nothing half-written; run it again to
    finish. The command line exits 3 on it (a submitit job then requeues itself)."""

    def __init__(self, signal_name: str, message: str):
        super().__init__(message)
        self.signal_name = signal_name


class Preempted(Stopped):
    """The run stopped on a signal after writing its checkpoint; re-run to resume."""

    def __init__(self, step: int, path: Path, signal_name: str, what: str = "step"):
        super().__init__(
            signal_name,
            f"stopped by {signal_name} at {what} {step}; checkpoint {path} written, run the "
            f"same command again to resume",
        )
        self.step, self.path = step, path


class StopSignal(BaseException):
    """Raised by stop_raises' handler. A BaseException (as KeyboardInterrupt) so that no
    `except Exception` on the way turns it into another error."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextmanager
def stop_raises(unfinished: str = "") -> Iterator[None]:
    """Within the block, SIGTERM / SIGUSR2 raise StopSignal at once (the first one; later ones
    are ignored so that cleanup runs). The writers of common/fsio.py remove their temporaries
    on it. A StopSignal leaving the block becomes one Stopped line ending with `unfinished`.
    Forked child processes (FFCV's writers) keep dying of the signal as before."""
    pid, previous, fired = os.getpid(), {}, []

    def handle(signum, frame) -> None:
        if os.getpid() != pid:  # a forked child inherited this handler: die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not fired:
            fired.append(signum)
            raise StopSignal(signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handle)
        except ValueError:  # not the main thread: nothing to install
            pass
    try:
        yield
    except StopSignal as e:
        detail = f" ({unfinished})" if unfinished else ""
        raise Stopped(
            e.signal_name,
            f"stopped by {e.signal_name}: run the same command again to finish{detail}",
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopFlag:
    """Records SIGTERM / SIGUSR2 instead of dying, so the loop can checkpoint at a step
    boundary. Restores the previous handlers on close."""

    def __init__(self) -> None:
        self.signal_name = ""
        self._previous = {}
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: nothing to install
                pass

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def raised(self) -> bool:
        return bool(self.signal_name)

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def rng_states() -> dict[str, Any]:
    """torch's (CPU, and the current CUDA device's once CUDA is in use), numpy's and Python's
    global random states."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _numpy_state() -> dict[str, Any]:
    """numpy's global MT19937 state as tensors and numbers (a checkpoint is read as data only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["cached"]))


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    _set_numpy_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def loader_position(step: int, per_epoch: int) -> dict[str, int]:
    """Where a loop that takes one batch a step stands in a TrainLoader whose order is keyed by
    (seed, epoch): the epoch and the batches of it already taken."""
    epoch, batch = divmod(step, max(1, per_epoch))
    return {"epoch": epoch, "batch": batch}


@dataclass
class Checkpoint:
    """RUN/checkpoint.pt (stage "condense"): the step reached, the wall time so far, the world
    size and config that wrote it, and the state of every module, optimiser and scheduler
    (Algorithm 1's loop). PRE/pretrain_checkpoint.pt (stage "pretrain"): the same fields, the
    step being the teacher's or the GAN's (modules["phase"])."""

    step: int
    seconds: float
    world_size: int
    config: dict[str, Any]
    modules: dict[str, Any]
    stage: str = "condense"

    def save(self, path: Path) -> None:
        """torch.save to a temporary file beside `path`, then an atomic rename."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fsio.save_torch({**state, "format_version": CHECKPOINT_FORMAT}, path, "the checkpoint")

    @classmethod
    def read(cls, path: Path, stage: str = "condense") -> Checkpoint:
        state = fsio.load_torch(path, "checkpoint")  # data only: never runs what it names
        keys = [f.name for f in dataclasses.fields(cls) if f.name != "stage"]
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else [""]
        if not missing and state.get("stage", "condense") != stage:
            missing = [""]
        if missing:
            what = f" (no {missing[0]!r} key)" if missing[0] else ""
            kind = "condensation" if stage == "condense" else stage
            raise DataError(
                f"{path}: not a gencond {kind} checkpoint{what}; delete it to start over"
            )
        version = state.get("format_version", 0)
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
            raise DataError(
                f"{path}: checkpoint format version {version}; this gencond reads up to "
                f"{CHECKPOINT_FORMAT} (upgrade gencond, or delete it to start over)"
            )
        return cls(**{k: state[k] for k in keys}, stage=stage)


class Checkpointer:
    """The pretrain stage's loops' checkpoints: a stop flag, a save by rank 0 every `every`
    steps, and on a stop signal (agreed on by every rank at the same step boundary) a save and
    Preempted. `state()` is called only when a save is due."""

    def __init__(
        self,
        path: Path,
        every: int,
        stage: str,
        config: dict[str, Any],
        device: torch.device,
        seconds: float = 0.0,
    ):
        self.path, self.every, self.stage, self.config = path, every, stage, config
        self.device = device
        self.rank, self.world_size = distributed.world()
        self.began = time.perf_counter() - seconds
        self.stop = StopFlag()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.began

    def save(self, step: int, modules: dict[str, Any]) -> None:
        if self.rank == 0:
            Checkpoint(
                step=step,
                seconds=self.seconds,
                world_size=self.world_size,
                config=self.config,
                modules=modules,
                stage=self.stage,
            ).save(self.path)
        distributed.barrier()

    def stop_agreed(self) -> bool:
        """Whether any rank was signalled (one tiny all-reduce a step under several ranks)."""
        if self.world_size == 1:
            return self.stop.raised
        flag = torch.tensor([float(self.stop.raised)], device=self.device)
        return bool(distributed.all_sum(flag).item() > 0)

    def step_done(self, done: int, state: Callable[[], dict], what: str = "step") -> None:
        """After step `done`: save and raise Preempted on a stop signal, else save every
        `every` steps."""
        if self.stop_agreed():
            self.save(done, state())
            raise Preempted(done, self.path, self.stop.signal_name or "a signal", what)
        if self.every and done % self.every == 0:
            self.save(done, state())

    def close(self) -> None:
        self.stop.close()


def open_metrics(path: Path, start: int):
    """RUN/metrics.jsonl opened for appending at step `start`: a fresh file at 0, else the lines
    up to the checkpoint's step (later ones, logged after the checkpoint by the run that
    stopped, and a torn last line are dropped, so a resumed run logs each step once)."""
    if not start or not path.is_file():
        return open(path, "w")
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    fsio.write_text(path, "".join(kept))
    return open(path, "a")
