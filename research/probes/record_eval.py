"""Record an `eval_condensed` output (RUN/eval_<S>x<E>.json) with the run's resolved config and
provenance as a lab record: `python -m research.probes.record_eval RUN EVAL_JSON --name NAME
--note TEXT`. Used for sets that `gencond evaluate` does not make its own row of (the fitted
start after max_steps=1, for example)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.results import write_result
from engine.stages import load_condensed
from research import RESULTS_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("eval_json", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    report = json.loads(args.eval_json.read_text())
    payload = load_condensed(args.run)
    rows = [
        {
            "set": set_name,
            "model": model,
            "accs": r["accs"],
            "mean": round(r["mean"], 2),
            "std": round(r["std"], 2),
            "seeds": len(r["accs"]),
        }
        for set_name, models in report.items()
        if isinstance(models, dict)
        for model, r in models.items()
    ]
    extra = {"steps": payload.steps, "eval_seconds": report.get("seconds"), "note": args.note}
    out = RESULTS_DIR / f"{args.name}.json"
    write_result(out, payload.config, rows, **extra)
    print(out, json.dumps(rows))


if __name__ == "__main__":
    main()
