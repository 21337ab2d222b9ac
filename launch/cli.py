"""The `gencond` command: a dispatcher over one module per command group (launch/commands/),
with the error contract every command shares: one `error:` line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rich.markup import escape

from common.console import console
from common.errors import GencondError
from launch import process
from launch.commands import bench, config, data, jobs, method

PREEMPTED_EXIT = 3  # stopped on SIGTERM / SIGUSR2 (after checkpointing); run again to finish
DEBUG_ENV = "GENCOND_DEBUG"


class Parser(argparse.ArgumentParser):
    """argparse with the error contract: a bad option is one `error:` line (naming the command
    and `--help`) and exit 2, not the usage block. Subcommand parsers inherit the class."""

    def error(self, message: str):
        _error(f"{self.prog}: {message} (see {self.prog} --help)")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gencond",
        description="Condense an image dataset into a codebook + class-conditional generator "
        "(Zhang et al., ICCV 2023). Start with `gencond prep`.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an error, print the full Python traceback after the one "
        f"`error:` line (or set {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in (data.add_prep, method.add, config.add, data.add_inspect, bench.add, jobs.add):
        add(sub)
    return parser


def _one_line(e: BaseException) -> tuple[str, int]:
    """(message, exit status) of an exception no gencond check turned into a GencondError."""
    from common.fsio import disk_error

    mapped = disk_error(e, getattr(e, "filename", None))
    if mapped is not None:  # a full disk, permission denied, not a folder, ...
        return str(mapped), 2
    text = " ".join(str(e).split()) or "(no message)"
    name = type(e).__name__
    if len(text) > 400:
        text = text[:400] + " ..."
    if name == "FailedJobError" or _raised_in(e, "submitit"):  # e.g. no SLURM controller
        return f"submit: the job could not be submitted ({name}: {text})", 2
    if isinstance(e, FloatingPointError):
        return f"{text} (a learning rate or loss weight too large, or a NaN in --set?)", 2
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({name}: {text}); lower ipc or condense.classes_per_step", 2
    return f"{name}: {text} (unexpected: run with --debug or {DEBUG_ENV}=1 for the trace)", 1


def _raised_in(e: BaseException, package: str) -> bool:
    """Whether the exception was raised inside that package's code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def job_entry():
    """`main` under its importable name, for jobs and sweeps. Run as `python -m launch.cli` it
    is `__main__.main`, which cloudpickle would pickle by value, console lock and all."""
    return importlib.import_module("launch.cli").main


def main(argv: list[str] | None = None) -> int:
    """Every failure ends as one `error:` line and a non-zero exit (2: refused or failed, 1:
    an unexpected error), the full traceback only with --debug or GENCOND_DEBUG=1; Ctrl-C at
    any moment ends as one `interrupted` line and exit 130 (launch/process.py)."""
    return process.run(lambda: _main(argv), _interrupted)


def _interrupted() -> int:
    console.print("[bold red]interrupted[/]")
    return process.INTERRUPTED_EXIT


def _main(argv: list[str] | None) -> int:
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        from engine.checkpoint import Stopped  # torch: seconds of imports, interruptible

        parser = build_parser()
        args = parser.parse_args(argv)
        args.parser, args.entry = parser, job_entry()  # for commands that run other commands
        debug = debug or args.debug
        return args.handler(args)
    except GencondError as e:
        if isinstance(e, Stopped):  # a checkpoint written, or nothing half-written
            os.environ["GENCOND_STOP_SIGNAL"] = e.signal_name  # for a submitit task's requeue
            console.print(f"[bold yellow]stopped:[/] {escape(str(e))}", soft_wrap=True)
            return PREEMPTED_EXIT
        _error(str(e))
        if debug:
            console.print_exception()
        return 2
    except Exception as e:  # noqa: BLE001  (the contract: one line, non-zero, no traceback)
        message, status = _one_line(e)
        _error(message)
        if debug:
            console.print_exception()
        return status


def entry() -> None:
    """The `gencond` command (and `python -m launch.cli`): main(), its output flushed, then an
    exit that skips the interpreter's teardown. Every file the command writes is complete by
    then (common/fsio.py); the teardown could only crash in native threads' destructors
    (one `terminate called without an active exception` abort after a finished run was seen
    under load)."""
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
