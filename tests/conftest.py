import inspect
import re

import pytest
from helpers import run_cli, toy_pretrained

# What starts other processes, by the names the tests call: `-m "not subprocess"` is the fast
# local subset (docs/architecture.md, "Tests"); CI runs everything.
_SPAWNS = re.compile(
    r"\b(run_cli|single_rank_cli|torchrun|subprocess\.|Popen|cli\(|toy_stage|start_processes|mp\.spawn)"
)
_TORCHRUN = re.compile(r"\btorchrun\(")


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def pytest_collection_modifyitems(items):
    """Mark each test that spawns processes (itself or through a fixture): `subprocess`, plus
    `torchrun` for multi-rank runs and `slurm` for the tests that submit to a real SLURM."""
    for item in items:
        sources = [_source(getattr(item, "function", None))]
        for defs in item._fixtureinfo.name2fixturedefs.values():
            sources += [_source(d.func) for d in defs if "tests" in str(inspect.getfile(d.func))]
        text = "\n".join(sources)
        slurm = item.path.name == "test_slurm.py"
        if slurm or _SPAWNS.search(text):
            item.add_marker(pytest.mark.subprocess)
        if _TORCHRUN.search(text):
            item.add_marker(pytest.mark.torchrun)
        if slurm:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def toy_stage(tmp_path_factory):
    """(data, pre): 8 toy classes and one pretrain stage on them, shared read-only by the
    distributed and SLURM tests."""
    return toy_pretrained(tmp_path_factory.mktemp("toy_stage"))
