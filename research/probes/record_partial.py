"""Record a run whose evaluation may be unfinished: its loss-term diagnostics, the last-half
means of L_c and D's accuracy from metrics.jsonl, and every finished evaluation seed of
RUN/eval_parts, as a result file with provenance (marked partial when seeds are missing).

    python -m research.probes.record_partial RUN --name NAME --seeds N [--pretrain PRE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from benchmarks.results import write_result
from engine.condense_diagnostics import loss_terms, term_warnings
from research import RESULTS_DIR


def record(run: Path, name: str, seeds: int, **extra) -> dict:
    """Write RESULTS_DIR/NAME.json; `extra` fields go in beside the rows."""
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = metrics[len(metrics) // 2 :]
    keys = ("cls", "adv", "disc_acc", "head_real_acc", "feature", "intra", "inter")
    half = {k: float(np.mean([m[k] for m in last])) for k in keys}
    parts = (
        sorted((run / "eval_parts").glob("seed_*.json")) if (run / "eval_parts").is_dir() else []
    )
    accs: dict[str, list[float]] = {}
    config, spread = {}, {}
    for p in parts:
        report = json.loads(p.read_text())
        config = report["config"]
        # each evaluated set's spread in teacher features (the same sets for every seed)
        spread = report.get("diagnostics", {}).get("diversity_teacher_features", spread)
        for set_name, by_model in report["results"].items():
            accs.setdefault(set_name, []).append(by_model["convnet"]["accs"][0])
    rows = [
        {"set": k, "mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": len(v), "accs": v}
        for k, v in accs.items()
    ]
    diagnostics = json.loads((run / "diagnostics.json").read_text())
    chance = {t["term"]: t.get("chance") for t in diagnostics["terms"]}
    if not config:
        import torch

        config = torch.load(run / "condensed.pt", weights_only=True)["config"]
    # the loss-term verdicts as the current code draws them (the spread is the run's own)
    classes = round(math.exp(chance["cls"]))
    diagnostics["terms"] = loss_terms(metrics, classes, config["condense"]["ipc"])
    diagnostics["warnings"] = (
        term_warnings(diagnostics["terms"])
        + diagnostics["spread"]["warnings"]
        + diagnostics.get("pixels", {}).get("warnings", [])
        + diagnostics.get("movement", {}).get("warnings", [])
    )
    return write_result(
        RESULTS_DIR / f"{name}.json",
        config,
        rows,
        partial=len(parts) < seeds,
        seeds_wanted=seeds,
        last_half_means=half,
        chance=chance,
        diagnostics=diagnostics,
        steps=metrics[-1]["step"],
        condense_seconds=metrics[-1]["seconds"],
        evaluated_set_spread=spread,
        **extra,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--seeds", type=int, required=True)
    p.add_argument(
        "--pretrain", type=Path, help="the run's pretrain folder: its pretrain.json goes in too"
    )
    p.add_argument("--note", default="", help="a line saying what the run is")
    a = p.parse_args()
    extra = {"note": a.note} if a.note else {}
    if a.pretrain:
        extra["pretrain"] = json.loads((a.pretrain / "pretrain.json").read_text())
    print(json.dumps(record(a.run, a.name, a.seeds, **extra)["last_half_means"], indent=1))
