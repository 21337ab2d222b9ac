"""Why a condensed set blows out: phi's invariance to image contrast, the norm and the share of
top-of-range pixels of the condensed set against the plain generator's samples and real images,
and each loss term's change within one phi's life, as one result file.

    python -m research.probes.blowout_probe RUN PRETRAIN_DIR DATA --name NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from benchmarks.results import write_result
from data_prep.loaders import Normalizer
from engine.artifact import PretrainedStage
from engine.condense_diagnostics import loss_terms, pixel_extremes
from engine.evaluate import random_real
from engine.generator import init_codebook
from engine.nets import ConvNet
from engine.stages import load_condensed, synthetic_set
from research import RESULTS_DIR


def invariance(channels: int, size: int) -> dict:
    """A fresh phi: relative change of its last block under x -> 2x, and the largest |cosine|
    between x and the input gradient of a random functional of that block."""
    torch.manual_seed(0)
    phi = ConvNet(channels, 10, size, width=64)
    x = torch.randn(20, channels, size, size, requires_grad=True)
    f = phi.features(x)[-1].flatten(1)
    (f * torch.randn_like(f)).sum().backward()
    cos = torch.nn.functional.cosine_similarity(x.grad.flatten(1), x.detach().flatten(1), dim=1)
    with torch.no_grad():
        a, b = phi.features(x)[-1], phi.features(2 * x)[-1]
    return {"scale_change": float((b - a).norm() / a.norm()), "max_abs_cos": float(cos.abs().max())}


def probe(run: Path, pretrain: Path, data: Path, name: str) -> dict:
    payload = load_condensed(run)
    pre = PretrainedStage.read(pretrain / "pretrained.pt")
    meta, cfg = payload.meta, payload.config
    ipc = cfg["condense"]["ipc"]
    codes = init_codebook(ipc, pre.generator_spec["z_dim"], "fixed", 0, cfg["seed"])
    plain = dataclasses.replace(
        payload, generator=pre.generator, class_embeddings=pre.conditions, codebook=codes
    )
    norm = Normalizer(meta["mean"], meta["std"])
    real = random_real(data, ipc, seed=cfg["seed"])[0]
    rows = []
    for name, p in (("condensed", payload), ("plain_generator", plain)):
        x, _ = synthetic_set(p)
        px = pixel_extremes(norm.denormalize(x), norm.denormalize(real))
        rows.append(
            {
                "set": name,
                "image_norm": float(x.flatten(1).norm(dim=1).mean()),
                "top_pixels": px["top"],
                "top_pixels_real": px["top_real"],
            }
        )
    rows.append({"set": "random_real", "image_norm": float(real.flatten(1).norm(dim=1).mean())})
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    terms = loss_terms(metrics, meta["num_classes"], ipc)
    return write_result(
        RESULTS_DIR / f"{name}.json",
        cfg,
        rows,
        phi_invariance=invariance(meta["channels"], meta["image_size"]),
        terms=terms,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("pretrain", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--name", required=True)
    a = p.parse_args()
    res = probe(a.run, a.pretrain, a.data, a.name)
    print(json.dumps({"rows": res["rows"], "phi_invariance": res["phi_invariance"]}, indent=1))
