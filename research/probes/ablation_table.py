"""The paper's ablations at CPU scale as one markdown table: every recorded row of
research/results/<preset>_ablation_<row>_cpu.json beside the paper's CIFAR-10 column (Tables
6-8 and section 4.5's IT-GAN row, IPC 10), and the coreset / plain-sample lines of the
preset's margins file. Rows not yet recorded say so.

    python -m research.probes.ablation_table --preset fashion-mnist-smoke
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import fsio
from research import RESULTS_DIR

# (table, row as the paper names it, our variant, paper CIFAR-10 IPC 10)
ROWS = (
    ("6", "one-hot condition", "one-hot", 62.2),
    ("6", "online feature condition", "online-feature", 64.0),
    ("6", "class feature condition (ours)", "paper", 66.2),
    ("7", "uniform sample (fixed Gaussian codes)", "codes-uniform", 55.3),
    ("7", "random with threshold (fixed truncated codes)", "codes-threshold", 55.9),
    ("7", "learnable codebook (ours)", "paper", 66.2),
    ("8", "l_real", "l-real", 63.2),
    ("8", "l_feature", "l-feature", 64.7),
    ("8", "l_feature + l_intra", "l-feature-intra", 64.9),
    ("8", "l_feature + l_inter", "l-feature-inter", 65.4),
    ("8", "l_feature + l_intra + l_inter (ours)", "paper", 66.2),
    ("4.5", "IT-GAN: G frozen, no l_intra / l_inter", "it-gan", 57.6),
    # choices of ours (the paper is silent), each row the preset with one of them undone
    ("ours", "raw class features (not standardised; its own stage)", "class-feature-raw", None),
    ("ours", "5 D / head updates a step (not 1)", "disc-steps-5", None),
)


def _stem(preset: str, series: str) -> str:
    return f"{preset}_ablation{'-' + series if series else ''}"


def _row(preset: str, variant: str, series: str = "") -> dict | None:
    path = RESULTS_DIR / f"{_stem(preset, series)}_{variant}_cpu.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    cond = next(r for r in report["rows"] if r["set"] == "condensed")
    diagnostics = report.get("diagnostics", {})
    warnings = diagnostics.get("warnings", []) + diagnostics.get("pixels", {}).get("warnings", [])
    return {
        "mean": cond["mean"],
        "std": cond["std"],
        "seeds": cond["seeds"],
        "partial": report.get("partial", False),
        "pretrain": (report.get("pretrain_sha256") or "")[:12],
        "warnings": warnings,
        "moved": diagnostics.get("movement", {}).get("over_real_within_class"),
    }


def table(preset: str, series: str = "", margins: str = "", note: str = "") -> str:
    """The markdown table of one row series; `margins` names the result file whose other sets
    (random real, plain samples) are listed beside it (default <preset>_faithful_margins_cpu)."""
    title = f"{preset}" + (f" ({series})" if series else "")
    lines = [
        f"# The paper's ablations at CPU scale: {title}, IPC 10 (CPU, 2 cores)",
        "",
        "Ours: final-epoch test accuracy (%) of ConvNet-3 width 128 trained 300 epochs on the set "
        "(the field's single-op DSA), mean ± std over seeds; each row from "
        f"research/results/{_stem(preset, series)}_<row>_cpu.json. Paper: CIFAR-10, IPC 10 "
        "(Tables 6-8, section 4.5). `pretrain` is the SHA-256 prefix of the pretrain stage the row "
        "was condensed from (rows recorded before it was kept show none). `moved`: how far the "
        "loop moved the set from the pretrained G's images, as a share of real images' "
        "within-class distance in teacher features (rows recorded before that diagnostic: -).",
        *(["", note] if note else []),
        "",
        "| table | row | ours | seeds | pretrain | paper C-10 | collapsed / blown out | moved |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tab, label, variant, paper in ROWS:
        r = _row(preset, variant, series)
        if r is None:
            lines.append(f"| {tab} | {label} | not yet run | | | {paper or '-'} | | |")
            continue
        flags = []
        if any("collapsed" in w for w in r["warnings"]):
            flags.append("collapsed")
        if any("blown out" in w for w in r["warnings"]):
            flags.append("blown out")
        seeds = f"{r['seeds']}" + (" (partial)" if r["partial"] else "")
        moved = "-" if r["moved"] is None else f"{r['moved']:.0%}"
        lines.append(
            f"| {tab} | {label} | {r['mean']:.2f} ± {r['std']:.2f} | {seeds} | "
            f"{r['pretrain'] or '-'} | {paper or '-'} | {', '.join(flags) or '-'} | {moved} |"
        )
    path = RESULTS_DIR / f"{margins or preset + '_faithful_margins_cpu'}.json"
    if path.is_file():
        report = json.loads(path.read_text())
        lines += ["", f"Beside them (research/results/{path.name}):", ""]
        for r in report["rows"]:
            if r["set"] != "condensed":
                lines.append(f"- {r['set']}: {r['mean']:.2f} ± {r['std']:.2f} ({r['seeds']} seeds)")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="fashion-mnist-smoke", help="the rows' preset")
    p.add_argument("--series", default="", help="a named row series (see ablation_rows --series)")
    p.add_argument(
        "--margins",
        default="",
        help="result file (stem) of the sets listed beside the rows "
        "(default: <preset>_faithful_margins_cpu)",
    )
    p.add_argument("--note", default="", help="a paragraph under the table's heading")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/<preset>_ablation[-<series>]_cpu.md",
    )
    a = p.parse_args()
    out = a.out or RESULTS_DIR / f"{_stem(a.preset, a.series)}_cpu.md"
    fsio.write_text(out, table(a.preset, a.series, a.margins, a.note))
    print(out)


if __name__ == "__main__":
    main()
