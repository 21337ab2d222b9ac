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


@pytest.fixture(scope="session")
def toy_stage(tmp_path_factory):
    """(data, pre): 8 toy classes and one pretrain stage on them, shared read-only by the
    distributed and SLURM tests."""
    from test_distributed import toy_pretrained

    return toy_pretrained(tmp_path_factory.mktemp("toy_stage"))
