"""How far apart the class conditions of pretrain stages are: per stage, the mean and largest
cosine between two classes' condition vectors (the teacher's class-mean features G is given),
raw and after subtracting their mean over classes.

    python -m research.probes.condition_similarity \\
        research/stages/fashion-mnist-smoke-pre:data/fashion-mnist \\
        research/stages/tiny-imagenet-smoke-pre:data/tiny10-32
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from benchmarks.results import write_result
from data_prep.meta import load_meta
from engine.condense_diagnostics import condition_similarity
from engine.stages import load_pretrained
from research import RESULTS_DIR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stages", nargs="+", help="PRE:DATA pairs (a pretrain stage and its dataset)")
    p.add_argument("--name", default="condition_similarity_cpu", help="result file name")
    a = p.parse_args()
    rows = []
    for pair in a.stages:
        pre_dir, data = (Path(x) for x in pair.split(":", 1))
        meta = load_meta(data)
        pre = load_pretrained(pre_dir, meta, False, None)
        raw = condition_similarity(pre.conditions)
        centred = condition_similarity(pre.conditions - pre.conditions.mean(0))
        digest = hashlib.sha256((pre_dir / "pretrained.pt").read_bytes()).hexdigest()
        rows.append(
            {
                "stage": str(pre_dir),
                "sha256": digest[:12],
                "dataset": meta.dataset,
                "classes": meta.num_classes,
                "condition": pre.config["gan"]["condition"],
                "mean_cosine": raw["mean_cosine"],
                "max_cosine": raw["max_cosine"],
                "centred_mean_cosine": centred["mean_cosine"],
                "centred_max_cosine": centred["max_cosine"],
            }
        )
        print(rows[-1])
    write_result(RESULTS_DIR / f"{a.name}.json", {"stages": a.stages}, rows)


if __name__ == "__main__":
    main()
