"""benchmarks/results/ holds only results of the current code: each JSON made at a clean commit
that is part of this history, each file cited by the README or docs/; and neither the results
nor research/ ships in the wheel."""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLEAN_SHA = re.compile(r"[0-9a-f]{40}")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _result_jsons() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


def _cited_text() -> str:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(p.read_text() for p in docs)


def test_every_result_json_names_a_clean_commit_of_this_history():
    assert _result_jsons(), "benchmarks/results/ holds no result file"
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.fail("not a git checkout: the commits of benchmarks/results/ cannot be checked")
    bad = []
    for path in _result_jsons():
        payload = json.loads(path.read_text())
        commits = list(_commits(payload))  # the file's own, and those of the runs it merges
        if "commit" not in payload:
            bad.append(f"{path.name}: no commit")
        for commit in commits:
            if not isinstance(commit, str) or not CLEAN_SHA.fullmatch(commit):
                bad.append(f"{path.name}: commit {commit!r} is not a clean commit")
            elif _git("merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
                bad.append(f"{path.name}: commit {commit[:12]} is not in this history")
    assert not bad, "\n".join(bad)


def _commits(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "commit":
                yield value
            else:
                yield from _commits(value)
    elif isinstance(node, list):
        for value in node:
            yield from _commits(value)


def test_every_result_file_is_cited_by_the_readme_or_docs():
    text = _cited_text()
    uncited = [p.name for p in sorted(RESULTS.iterdir()) if p.name not in text]
    assert not uncited, f"cited nowhere in README.md or docs/: {uncited}"


def test_the_wheel_ships_no_results_and_no_research(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("gencond-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n}
    assert tops == {"common", "data_prep", "engine", "benchmarks", "launch"}, tops
    shipped = [n for n in names if n.startswith(("benchmarks/results/", "research/"))]
    assert not shipped, shipped
