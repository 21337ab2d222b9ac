"""Rank-aware console output: only rank 0 logs and draws progress bars."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)
stdout_console = Console(highlight=False)


def rank() -> int:
    """This process's global rank from the launcher's environment (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    return rank() == 0


def log(message: str) -> None:
    """Print a status line on stderr, from rank 0 only."""
    if is_rank_zero():
        console.print(message)


def progress_bar(transient: bool = False) -> Progress:
    """A rich progress bar, silent on ranks other than 0."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not is_rank_zero(),
    )
