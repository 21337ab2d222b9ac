"""Which loss term does what to the set: short condensations of one preset with terms switched
off (a variants file, as `gencond sweep --variants` reads), each from the same pretrain stage,
gathered without evaluation: loss-term verdicts, pixels at the ends of the range, the teacher's
agreement with the labels, and the spread in teacher features; optionally each set's accuracy
(`--eval-seeds N`, the run's own protocol, the condensed set alone). Resumable: a variant whose
ROOT/<name>/condensed.pt exists is not condensed again; the result file is rewritten after each.

    python -m research.probes.term_probe --preset fashion-mnist-smoke --data data/fashion-mnist \
        --pretrained runs/faithful/pre --out runs/term_probe \
        --variants research/ablations/term_probe.toml --set condense.outer_iterations=1 \
        --name fashion-mnist-smoke_term_probe_cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.results import write_result
from engine.config import load_variants
from engine.presets import load_preset
from research import RESULTS_DIR


def probe(
    preset: str,
    data: Path,
    pretrained: Path,
    out: Path,
    variants: dict[str, list[str]],
    sets: list[str],
    name: str,
    eval_seeds: int = 0,
    tiny: bool = False,
) -> dict:
    """Condense every variant (skipping finished ones), then, with eval_seeds > 0, evaluate its
    condensed set alone for that many seeds (finished seeds skipped), rewriting the result
    file after each step."""
    from common.runlock import hold, run_lock_path
    from engine.config import RunConfig
    from engine.presets import load_preset_for
    from engine.stages import load_condensed, run_condense, run_evaluate

    def evaluated(run: Path) -> list[float]:
        accs = []
        for i in range(eval_seeds):
            part = run / "eval_parts" / f"seed_{i}.json"
            if part.is_file():
                accs.append(
                    json.loads(part.read_text())["results"]["condensed"]["convnet"]["accs"][0]
                )
        return accs

    rows: list[dict] = []
    result: dict = {}
    for variant, extra in variants.items():
        run = out / variant
        overrides = [*sets, *extra]
        if not (run / "condensed.pt").is_file():
            with hold(run, "condense"):
                run_condense(load_preset_for(preset, overrides, data), data, run, pretrained)
        d = json.loads((run / "diagnostics.json").read_text())
        terms = {t["term"]: t for t in d["terms"]}
        row = {
            "variant": variant,
            "sets": extra,
            "teacher_agreement": d["teacher_agreement"],
            "top_pixels": d["pixels"]["top"],
            "top_pixels_real": d["pixels"]["top_real"],
            "within_class": d["spread"]["within_class"],
            "within_class_real": d["spread"]["within_class_real"],
            "between_class": d["spread"]["between_class"],
            "between_class_real": d["spread"]["between_class_real"],
            "warnings": d["warnings"],
        }
        if "movement" in d:  # how far the set moved from the pretrained G's images
            row["moved_over_real_within_class"] = d["movement"]["over_real_within_class"]
            row["moved_pixel_rms"] = d["movement"]["pixel_rms"]
        for term in ("feature", "adv", "cls", "intra", "inter", "disc_acc"):
            if term in terms:
                row[f"{term}_last_half"] = terms[term]["last_half"]
                row[f"{term}_per_phi"] = terms[term]["per_phi"]
        rows.append(row)
        config = load_preset(preset, overrides).to_dict()
        result = write_result(
            RESULTS_DIR / f"{name}.json", config, rows, tiny=tiny, preset=preset, common_sets=sets
        )
    for row in rows if eval_seeds else []:
        run = out / row["variant"]
        for i in range(eval_seeds):
            if not (run / "eval_parts" / f"seed_{i}.json").is_file():
                protocol = RunConfig.from_dict(load_condensed(run).config).eval
                protocol.seeds, protocol.baselines = eval_seeds, ()
                with hold(run, "evaluate", run_lock_path(run, f".gencond-eval-seed-{i}.lock")):
                    run_evaluate(run, data, protocol, "cpu", i)
            accs = evaluated(run)
            row.update(accs=accs, mean=float(np.mean(accs)), std=float(np.std(accs)))
            result = write_result(
                RESULTS_DIR / f"{name}.json",
                result["config"],
                rows,
                tiny=tiny,
                preset=preset,
                common_sets=sets,
            )
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--pretrained", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="ROOT: one folder per variant")
    p.add_argument("--variants", type=Path, required=True, help="a variants TOML file")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE for every variant")
    p.add_argument("--name", required=True, help="result file research/results/NAME.json")
    p.add_argument(
        "--eval-seeds",
        type=int,
        default=0,
        help="then evaluate each set alone for N seeds (default 0: none)",
    )
    a = p.parse_args()
    res = probe(
        a.preset,
        a.data,
        a.pretrained,
        a.out,
        load_variants(a.variants),
        a.set,
        a.name,
        a.eval_seeds,
    )
    for r in res["rows"]:
        print(
            f"{r['variant']:>16}  teacher {r['teacher_agreement']:.2f}  top pixels "
            f"{r['top_pixels']:.3f} (real {r['top_pixels_real']:.3f})"
        )
