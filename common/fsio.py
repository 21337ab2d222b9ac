"""Every file and folder gencond writes goes through here: a unique temporary name beside the
target, an atomic rename on success, the temporary removed on any failure, and a full disk (or
any other OSError) turned into one DataError line naming the path and the space needed.

Folders are built aside (a hidden sibling) and swapped in as a whole only once complete: with
renameat2(RENAME_EXCHANGE) where the filesystem has it (one atomic step), else two renames."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from common.errors import DataError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TMP_TAG = ".gencond-tmp-"
OLD_TAG = ".gencond-old-"


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_bytes(path: Path) -> int:
    """Free space (for an unprivileged writer) on the filesystem holding path or its nearest
    existing ancestor."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def shown(path: Path) -> Path:
    """The path a user knows: a file inside a folder being built aside (.NAME.gencond-tmp-*/,
    its .scratch/) is shown at the folder's final place."""
    parts = []
    for part in Path(path).parts:
        if part == ".scratch" and parts:
            continue
        if part.startswith(".") and TMP_TAG in part:
            part = part[1:].split(TMP_TAG)[0]
        parts.append(part)
    return Path(*parts) if parts else Path(path)


def check_space(path: Path, need: int, what: str) -> None:
    """Refuse before writing when the filesystem holding path cannot take `need` bytes."""
    free = free_bytes(path)
    if need > free:
        raise DataError(
            f"{shown(path)}: not enough free space for {what}: needs about {human(need)}, "
            f"{human(free)} free"
        )


def _full_disk(error: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT / EFBIG OSError in an exception's chain (torch wraps it)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in FULL:
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def disk_error(
    error: BaseException, path: Path | None, need: int | None = None
) -> DataError | None:
    """One DataError line for an OSError (or an error caused by one), else None. A full disk
    names the file that failed and the free space of its own filesystem."""
    full = _full_disk(error)
    if full is not None:
        where = _failed_file(full, path)
        needs = f"needs about {human(need)}, " if need else ""
        reason = full.strerror or "no space left on device"
        if where is None:  # the library named no file: no filesystem to measure
            return DataError(f"{reason} while writing a file the library did not name ({error})")
        free = free_bytes(where.parent)  # the filesystem of the file that failed
        return DataError(f"{shown(where)}: {reason} while writing ({needs}{human(free)} free)")
    if isinstance(error, OSError):
        where = _failed_file(error, path)
        if where is None:
            return DataError(f"{error.strerror or error}")
        return DataError(f"{shown(where)}: {error.strerror or error}")
    return None


def _failed_file(error: OSError, path: Path | None) -> Path | None:
    """The file a write failed on: the OSError's own filename (e.g. a file a worker wrote)
    before the caller's guess; None when neither names one."""
    for name in (error.filename, path):
        if name is not None and str(name) not in ("", "?"):
            return Path(os.fsdecode(name))
    return None


def temp_name(path: Path) -> Path:
    """A hidden, unique name beside path (same filesystem, so the final rename is atomic)."""
    return path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}-{secrets.token_hex(3)}")


def make_dir(path: Path) -> Path:
    """mkdir -p with one line for an --out that is a file, lies under one, or is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"{path}: not writable (permission denied)")
    return path


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def output_path(path: Path, folder: bool = False) -> Path:
    """Where an output really goes. A symlink is written through: the file (or folder) it
    leads to is replaced atomically and the link stays a link. A FIFO, device or socket (and,
    for a file, a folder) is refused in one line: gencond writes regular files only."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # dangling: created where the link points
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as e:
        raise disk_error(e, path) from None
    for test, kind in _KINDS:
        if test(mode) and not (folder and stat.S_ISDIR(mode)):
            raise DataError(
                f"{path}: is {kind}, not a regular {'folder' if folder else 'file'}; gencond "
                f"writes regular files only (choose another path)"
            )
    return path


def write_file(
    path: Path, write: Callable[[IO[bytes]], Any], need: int | None = None, what: str = ""
) -> None:
    """write(f) into a temporary file beside path, fsync, rename over path. `need` (bytes, an
    estimate) is checked against the free space first. Nothing is left behind on failure.
    A symlink at path is written through (output_path); a FIFO or device there is refused."""
    path = output_path(path)
    make_dir(path.parent)
    if need:
        check_space(path.parent, need, what or path.name)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        mapped = disk_error(e, path, need)
        if mapped is not None:
            raise mapped from None
        raise


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) payload: what torch.save will write, near enough."""
    import torch

    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_torch(obj: Any, path: Path, what: str = "") -> None:
    import torch

    write_file(path, lambda f: torch.save(obj, f), tensor_bytes(obj) + (64 << 10), what)


def load_torch(path: Path, what: str) -> Any:
    """A torch file read as data only (tensors, dicts, lists, str, numbers: torch's
    weights_only unpickler), never as code: a file whose pickle names any other callable, as a
    crafted one running a command would, is refused in one DataError line and nothing of it
    runs. Unreadable files (truncated, not a torch file) are one line as well."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        named = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global: ([\w.]+)", text)
        if named is None:  # a broken pickle stream, not a refusal
            detail = " ".join(text.split())
            raise DataError(f"{shown(path)}: not a readable {what} ({detail})") from None
        raise DataError(
            f"{shown(path)}: refused to load: it names {named.group(1)}; a gencond file holds "
            f"only tensors, numbers and strings, and nothing a file names is run"
        ) from None
    except DataError:
        raise
    except Exception as e:  # truncated or not a torch file
        raise DataError(f"{shown(path)}: not a readable {what} ({type(e).__name__}: {e})") from None


def write_text(path: Path, text: str) -> None:
    data = text.encode()
    write_file(path, lambda f: f.write(data), len(data))


def write_json(path: Path, payload: Any, **dump: Any) -> None:
    write_text(path, json.dumps(payload, indent=1, **dump) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete folder `new` at `target`, replacing what was there as a whole. At every
    instant `target` is either the old folder or the new one (or, only where the filesystem
    lacks an atomic exchange, briefly absent while the old one waits beside it)."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}{OLD_TAG}{os.getpid()}")
    if _exchange(new, target):
        os.rename(new, old)  # new now holds the old contents
    else:
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
    shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(target: Path) -> None:
    """Remove the hidden siblings of target that an interrupted build or swap left (call it
    holding target's lock, so none of them belongs to a live writer)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for tag in (TMP_TAG, OLD_TAG):
        for stale in target.parent.glob(f".{target.name}{tag}*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextmanager
def build_dir(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of target to fill; on success it replaces target as a
    whole, on any failure it is removed and target is left exactly as it was."""
    target = output_path(target, folder=True)
    make_dir(target.parent)
    work = temp_name(target)
    try:
        work.mkdir()
        yield work
        replace_dir(work, target)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        mapped = disk_error(e, target)
        if mapped is not None and not isinstance(e, DataError):
            raise mapped from None
        raise


def read_json(path: Path, what: str = "JSON file") -> Any:
    """The parsed JSON of a file gencond wrote, or one DataError line naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no {what} here") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None
