"""Does a pixel set owe its accuracy to values outside the image range? G ends in tanh mapped to
[0, 1], so our sets never leave it; DM's pixels are free. This evaluates a pixel set (a
`gencond bench budget` snapshot) as it is and clamped to [0, 1] in pixel space, with the
engine's protocol, and records how many of its values lay outside.

    python -m research.probes.range_probe SNAPSHOT.pt --data DIR --name NAME [--seeds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import write_result
from data_prep.meta import load_meta
from engine.config import EvalConfig
from engine.evaluate import train_and_test
from research import RESULTS_DIR


def clamp_to_image_range(images: torch.Tensor, mean: list, std: list) -> tuple[torch.Tensor, float]:
    """Normalised NCHW images -> (the same clamped to [0, 1] in pixel space and normalised again,
    the share of values that lay outside [0, 1])."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    pixels = images * s + m
    outside = float(((pixels < 0) | (pixels > 1)).float().mean())
    return (pixels.clamp(0, 1) - m) / s, outside


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("snapshot", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--name", required=True, help="research/results/NAME.json")
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    snap = torch.load(a.snapshot, weights_only=False)
    images, labels = snap["images"].float(), snap["labels"]
    meta = load_meta(a.data)
    clamped, outside = clamp_to_image_range(images, meta.mean, meta.std)
    cfg = EvalConfig(seeds=a.seeds, baselines=())
    rows = []
    for name, x in (("as_is", images), ("clamped", clamped)):
        accs = [train_and_test("convnet", x, labels, a.data, cfg, seed) for seed in range(a.seeds)]
        rows.append(
            {"set": name, "accs": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}
        )
        print(f"{name}: {rows[-1]['mean']:.2f} ± {rows[-1]['std']:.2f}", flush=True)
    write_result(
        RESULTS_DIR / f"{a.name}.json",
        {"snapshot": str(a.snapshot), "data": a.data, "seeds": a.seeds},
        rows,
        values_outside_image_range=outside,
    )
    print(f"values outside [0, 1]: {outside:.1%}")


if __name__ == "__main__":
    main()
