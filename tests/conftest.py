import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `gencond` command in a fresh process."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def cli():
    return run_cli
