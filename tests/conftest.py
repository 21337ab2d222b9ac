import pytest
from helpers import run_cli, toy_pretrained


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def toy_stage(tmp_path_factory):
    """(data, pre): 8 toy classes and one pretrain stage on them, shared read-only by the
    distributed and SLURM tests."""
    return toy_pretrained(tmp_path_factory.mktemp("toy_stage"))
