"""Result files under benchmarks/results/: rows plus the provenance every figure needs."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch

from common import fsio

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """GPU name when CUDA is used, else the CPU model."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict:
    return {
        "machine": machine(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_result(path: str | Path, config: dict, rows: list[dict], **extra) -> dict:
    payload = {**provenance(), "config": config, "rows": rows, **extra}
    fsio.write_json(Path(path), payload)  # a unique temp name, fsync, rename
    return payload
