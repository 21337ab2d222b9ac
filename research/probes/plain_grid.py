"""The grid of a run's plain generator samples: its pretrain stage's G with fixed Gaussian codes
(the set `evaluate --baselines plain` trains on), one row per class.

    python -m research.probes.plain_grid RUN --out research/results/NAME.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from data_prep.loaders import Normalizer
from engine import artifact, stages


def plain_grid(run: Path, out: Path) -> Path:
    payload = stages.load_condensed(run)
    pre = artifact.PretrainedStage.read(payload.pretrained_dir(run) / artifact.PRETRAINED_FILE)
    with torch.no_grad():
        images, _ = stages.synthetic_set(stages.plain_generator(payload, pre))
    meta = payload.meta
    pixels = Normalizer(meta["mean"], meta["std"]).denormalize(images)
    stages.save_grid(pixels, meta["num_classes"], payload.config["condense"]["ipc"], out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a condensed run folder (RUN/condensed.pt)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    a = p.parse_args()
    print(plain_grid(a.run, a.out))


if __name__ == "__main__":
    main()
