"""Probe (issue 3): start condensation from the herding coreset instead of Gaussian codes.
Herding picks K real images per class (teacher embeddings); the shared codebook and the
generator are then fitted so that G(z_k, c_y) reproduces the k-th pick of class y (pixel MSE).
Evaluated beside the herding and random real sets: does the fitted generator keep the coreset's
accuracy? Usage: python -m benchmarks.probes.inversion_probe DATA PRE STEPS OUT.pt"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from data_prep.meta import load_meta
from engine.artifact import rebuild_generator
from engine.evaluate import EvalConfig, evaluate_sets, herding, random_real
from engine.generator import generate, init_codebook
from engine.stages import load_pretrained, teacher_from

DATA, PRE, STEPS, OUT = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
meta = load_meta(DATA)
pre = load_pretrained(PRE, meta)
teacher = teacher_from(pre, meta)
K, classes = 10, list(range(meta.num_classes))
t0 = time.time()
picks, pick_labels = herding(DATA, K, teacher)
G = rebuild_generator(pre).eval()
Z = torch.nn.Parameter(init_codebook(K, G.z_dim, "learned", 0, 0))
opt = torch.optim.Adam([{"params": [Z], "lr": 0.01}, {"params": G.parameters(), "lr": 1e-3}])
for step in range(STEPS):
    syn, labels = generate(G, Z, pre["conditions"], classes)
    loss = F.mse_loss(syn, picks)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0 or step == STEPS - 1:
        print(f"step {step} mse {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
with torch.no_grad():
    syn, labels = generate(G, Z, pre["conditions"], classes)
torch.save({"generator": G.state_dict(), "codebook": Z.detach()}, OUT)
cfg = EvalConfig(seeds=2, epochs=150)
sets = {"fitted": (syn, labels), "herding": (picks, pick_labels),
        "random": random_real(DATA, K, seed=0)}  # fmt: skip
print(evaluate_sets(sets, DATA, cfg), flush=True)
