"""One writer per output folder: an exclusive lock (filelock's FileLock, i.e. flock(2) on
Linux) held for the whole command. The kernel drops a flock when its process dies, so a lock
left by a killed process (kill -9, OOM, a lost node's processes) never blocks the next run.
Beside the lock a small JSON file names the holder (pid, host, command) for the refusal."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from common import fsio
from common.errors import InUseError

RUN_LOCK = ".gencond.lock"


def run_lock_path(folder: Path, name: str = RUN_LOCK) -> Path:
    """The lock of a run folder (RUN, PRE): a hidden file inside it."""
    return Path(folder) / name


def sibling_lock_path(folder: Path) -> Path:
    """The lock of a folder that is replaced as a whole (a prepared dataset): beside it."""
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.gencond-lock")


def _owner_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".json")


def _holder(lock: Path) -> str:
    try:
        owner = json.loads(_owner_path(lock).read_text())
        return (
            f"`gencond {owner['command']}` (pid {owner['pid']} on {owner['host']}, "
            f"since {owner['started']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another gencond process"


@contextmanager
def hold(folder: Path, command: str, lock: Path | None = None) -> Iterator[None]:
    """Hold folder's lock for the body, or raise InUseError naming the holder at once."""
    folder = Path(folder)
    lock = lock or run_lock_path(folder)
    fsio.make_dir(lock.parent)
    flock = FileLock(str(lock))
    try:
        flock.acquire(blocking=False)
    except Timeout:
        raise InUseError(
            f"{folder}: in use by {_holder(lock)}; one writer per folder: wait for it to end "
            f"or use another folder"
        ) from None
    try:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "argv": sys.argv[1:],
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        fsio.write_json(_owner_path(lock), owner)
        yield
    finally:
        _owner_path(lock).unlink(missing_ok=True)
        flock.release()
