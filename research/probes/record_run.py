"""Record a finished run (condense + evaluate) as a result file with provenance:
`python -m research.probes.record_run RUN --name fashion-mnist-smoke_cpu`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.results import write_result
from engine.stages import load_condensed
from research import RESULTS_DIR


def record(run: Path, name: str, wall_seconds: dict | None = None) -> dict:
    report = json.loads((run / "eval.json").read_text())
    payload = load_condensed(run)
    pre = json.loads((payload.pretrained_dir(run) / "pretrain.json").read_text())
    rows = []
    for set_name, models in report["results"].items():
        for model, r in models.items():
            div = report["diagnostics"]["diversity_teacher_features"].get(set_name, {})
            rows.append(
                {
                    "set": set_name,
                    "model": model,
                    "mean": round(r["mean"], 2),
                    "std": round(r["std"], 2),
                    "seeds": len(r["accs"]),
                    "accs": r["accs"],
                    "within_class": div.get("within_class"),
                    "between_class": div.get("between_class"),
                }
            )
    timing = {
        "pretrain_seconds": round(pre["seconds"], 1),
        "teacher_accuracy": pre["teacher_accuracy"],
        "condense_seconds": round(payload.seconds, 1),
        "condense_steps": payload.steps,
        **(wall_seconds or {}),
    }
    return write_result(
        RESULTS_DIR / f"{name}.json",
        payload.config,
        rows,
        benchmark="method",
        dataset=report["dataset"],
        ipc=report["ipc"],
        epochs=report["epochs"],
        protocol=report["protocol"],
        timing=timing,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True, help="result file name, without .json")
    parser.add_argument("--eval-seconds", type=float, default=None)
    args = parser.parse_args()
    extra = {"evaluate_seconds": args.eval_seconds} if args.eval_seconds else None
    print(json.dumps(record(args.run, args.name, extra)["rows"], indent=1))
