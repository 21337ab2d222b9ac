"""Probe (issue 3): a real coreset of k-means medoids (per class, K clusters of the teacher's
embeddings, k-means++ seeded 0, the member nearest each centroid), evaluated at the bar's
protocol (3 seeds, 300 epochs). Usage: python -m research.probes.select_probe DATA PRE OUT.pt"""

import json
import sys
from pathlib import Path

import torch

from data_prep.loaders import TestLoader
from data_prep.meta import load_meta
from engine.config import EvalConfig
from engine.evaluate import _embed, evaluate_sets
from engine.stages import load_pretrained, teacher_from

DATA, PRE, OUT = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
K = 10
meta = load_meta(DATA)
teacher = teacher_from(load_pretrained(PRE, meta), meta)
xs, ys = [], []
for x, y in TestLoader(DATA, batch_size=1024, split="train"):
    xs.append(x)
    ys.append(y)
X, Y, features = torch.cat(xs), torch.cat(ys), _embed(teacher, xs)


def kmeans(f: torch.Tensor, k: int, gen: torch.Generator, iters: int = 30) -> torch.Tensor:
    centers = f[torch.randperm(len(f), generator=gen)[:1]]
    for _ in range(k - 1):  # k-means++
        d = torch.cdist(f, centers).min(1).values.square()
        centers = torch.cat([centers, f[torch.multinomial(d / d.sum(), 1, generator=gen)]])
    for _ in range(iters):
        a = torch.cdist(f, centers).argmin(1)
        centers = torch.stack(
            [f[a == j].mean(0) if (a == j).any() else centers[j] for j in range(k)]
        )
    return centers


gen = torch.Generator().manual_seed(0)
pick = []
for cls in range(meta.num_classes):
    members = torch.nonzero(Y == cls).squeeze(1)
    centers = kmeans(features[members], K, gen)
    pick += [
        int(members[torch.cdist(centers[j : j + 1], features[members]).argmin()]) for j in range(K)
    ]
pick = torch.tensor(pick)
torch.save({"indices": pick}, OUT)
sets = {"kmeans_medoids": (X[pick], Y[pick])}
print(json.dumps(evaluate_sets(sets, DATA, EvalConfig(seeds=3, epochs=300))), flush=True)
