"""Record the finished points of a `gencond sweep` folder as one result file with provenance:
each point's overrides, its condensed set's accuracies (mean, std, one per seed) and the
diagnostics that say why (each term's status, the set's movement, pixels at the top of the
range). Points without an eval.json are listed as not finished. Rerun it as points finish.

    python -m research.probes.record_sweep SWEEP_DIR --name NAME [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.results import write_result
from research import RESULTS_DIR


def point_row(point: Path) -> dict:
    report = json.loads((point / "eval.json").read_text())
    acc = report["results"]["condensed"]["convnet"]
    diag = json.loads((point / "diagnostics.json").read_text())
    return {
        "point": point.name,
        "set": "condensed",
        "accs": acc["accs"],
        "mean": acc["mean"],
        "std": acc["std"],
        "terms": {t["term"]: t["status"] for t in diag["terms"]},
        "moved_over_real_within_class": diag["movement"]["over_real_within_class"],
        "pixels_top": diag["pixels"]["top"],
        "warnings": diag["warnings"],
        "config": report["config"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--name", required=True, help="research/results/NAME.json and .md")
    p.add_argument("--note", default="")
    a = p.parse_args()
    points = sorted(d for d in a.sweep.iterdir() if (d / "provenance.json").is_file())
    rows = [point_row(d) for d in points if (d / "eval.json").is_file()]
    missing = [d.name for d in points if not (d / "eval.json").is_file()]
    write_result(
        RESULTS_DIR / f"{a.name}.json",
        {"sweep": str(a.sweep)},
        rows,
        not_finished=missing,
        note=a.note,
    )
    lines = [
        "| point | accuracy (%) | seeds | moved | top pixels |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['point']} | {r['mean']:.2f} ± {r['std']:.2f} | {len(r['accs'])} | "
            f"{r['moved_over_real_within_class']:.0%} | {r['pixels_top']:.1%} |"
        )
    (RESULTS_DIR / f"{a.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
