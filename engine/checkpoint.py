"""Checkpoints of the condensation loop: written atomically by rank 0 every `checkpoint_every`
steps and when the job is told to stop (SIGTERM from SLURM or torchrun, SIGUSR2 from SLURM's
--signal before a time limit). Every random draw of the loop is keyed by (seed, step, ...), so
the model, optimiser and scheduler states plus the step are all that resuming needs."""

from __future__ import annotations

import dataclasses
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import fsio
from common.errors import DataError, GencondError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1  # files without the key are version 0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Preempted(GencondError):
    """The run stopped on a signal after writing its checkpoint; re-run to resume."""

    def __init__(self, step: int, path: Path, signal_name: str):
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint {path} written, run the same "
            f"command again to resume"
        )
        self.step, self.path, self.signal_name = step, path, signal_name


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


@dataclass
class Checkpoint:
    """RUN/checkpoint.pt: the step reached, the wall time so far, the world size and config that
    wrote it, and the state of every module, optimiser and scheduler (Algorithm 1's loop)."""

    step: int
    seconds: float
    world_size: int
    config: dict[str, Any]
    modules: dict[str, Any]

    def save(self, path: Path) -> None:
        """torch.save to a temporary file beside `path`, then an atomic rename."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fsio.save_torch({**state, "format_version": CHECKPOINT_FORMAT}, path, "the checkpoint")

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        state = fsio.load_torch(path, "checkpoint")  # data only: never runs what it names
        keys = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in keys if k not in state] if isinstance(state, dict) else [""]
        if missing:
            what = f" (no {missing[0]!r} key)" if missing[0] else ""
            raise DataError(
                f"{path}: not a gencond condensation checkpoint{what}; delete it to start over"
            )
        version = state.get("format_version", 0)
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
            raise DataError(
                f"{path}: checkpoint format version {version}; this gencond reads up to "
                f"{CHECKPOINT_FORMAT} (upgrade gencond, or delete it to start over)"
            )
        return cls(**{k: state[k] for k in keys})


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
