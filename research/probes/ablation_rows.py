"""The ablation rows one at a time, resumable across sessions whose run folders do not survive.

A row whose result file (research/results/<preset>_ablation_<name>_cpu.json) holds every seed
is skipped; any other row is condensed (from the committed stage given by --pretrained, else
one pretrain stage under ROOT/pre shared by every row, or its own with --own-pretrain), then
evaluated one seed at a time and recorded after each seed, with the pretrain file's SHA-256 so
rows from one stage can be told apart (the file holds its wall time, so two runs of the same
stage differ: only a committed stage makes rows of several sessions comparable).

    python -m research.probes.ablation_rows --preset fashion-mnist-smoke \
        --data data/fashion-mnist --root runs/ablation \
        --variants research/ablations/fashion-mnist-smoke.toml --seeds 5 \
        --pretrained research/stages/fashion-mnist-smoke-pre
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.config import load_variants
from research import RESULTS_DIR
from research.probes.record_partial import record

CLI = [sys.executable, "-m", "launch.cli"]


def _log(message: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}", flush=True)


def _run(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True)


def result_name(preset: str, variant: str, series: str = "") -> str:
    """research/results/<preset>_ablation[-<series>]_<row>_cpu.json: a series keeps rows of an
    earlier preset setting (e.g. `raw-condition`) apart from the preset as it is now."""
    return f"{preset}_ablation{'-' + series if series else ''}_{variant}_cpu"


def finished(name: str, seeds: int, stage_sha256: str | None = None) -> bool:
    """The row's file holds every seed (and, given a stage, was condensed from that stage: a
    row from another stage is run again from it)."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return False
    report = json.loads(path.read_text())
    if stage_sha256 and report.get("pretrain_sha256") != stage_sha256:
        return False
    return not report.get("partial", True) and report.get("seeds_wanted", 0) >= seeds


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_row(a: argparse.Namespace, variant: str, overrides: list[str]) -> None:
    pre = a.pretrained or a.root / (f"pre-{variant}" if a.own_pretrain else "pre")
    sets = [x for o in overrides for x in ("--set", o)]
    if not (pre / "pretrained.pt").exists():
        _log(f"pretrain into {pre}")
        pretrain_sets = sets if a.own_pretrain else []
        _run(
            "pretrain",
            "--preset",
            a.preset,
            "--data",
            str(a.data),
            "--out",
            str(pre),
            *pretrain_sets,
        )
    run = a.root / variant
    if not (run / "condensed.pt").exists():
        _log(f"condense {variant} {' '.join(overrides)}")
        _run(
            "condense",
            "--preset",
            a.preset,
            "--data",
            str(a.data),
            "--out",
            str(run),
            "--pretrained",
            str(pre),
            *sets,
        )
    digest = sha256(pre / "pretrained.pt")
    name = result_name(a.preset, variant, a.series)
    for i in range(a.seeds):
        if not (run / "eval_parts" / f"seed_{i}.json").exists():
            _run(
                "evaluate",
                str(run),
                "--data",
                str(a.data),
                "--seeds",
                str(a.seeds),
                "--seed-index",
                str(i),
                "--baselines",
                a.baselines,
            )
            _log(f"{variant}: evaluated seed {i}")
        record(run, name, a.seeds, variant=variant, overrides=overrides, pretrain_sha256=digest)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", required=True, help="the preset every row starts from")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--root", required=True, type=Path, help="run folders: ROOT/pre, ROOT/<row>")
    p.add_argument("--variants", required=True, type=Path, help="TOML of [row] overrides")
    p.add_argument("--seeds", type=int, default=5, help="evaluation seeds per row")
    p.add_argument("--only", default="", help="comma list of rows to run (default: all)")
    p.add_argument("--baselines", default="", help="baselines evaluated beside each row")
    p.add_argument(
        "--series",
        default="",
        help="name of a row series apart from the preset as it is (its result files are "
        "<preset>_ablation-<series>_<row>_cpu.json)",
    )
    p.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        help="one committed pretrain stage for every row (e.g. "
        "research/stages/fashion-mnist-smoke-pre), so rows from several sessions share it",
    )
    p.add_argument(
        "--own-pretrain",
        action="store_true",
        help="each row pretrains with its own overrides (rows that change G's input)",
    )
    a = p.parse_args()
    only = {x for x in a.only.split(",") if x}
    stage = sha256(a.pretrained / "pretrained.pt") if a.pretrained else None
    for variant, overrides in load_variants(a.variants).items():
        if only and variant not in only:
            continue
        if finished(result_name(a.preset, variant, a.series), a.seeds, stage):
            _log(f"{variant}: recorded, skipped")
            continue
        run_row(a, variant, overrides)


if __name__ == "__main__":
    main()
