"""Probe (issue 3): start condensation from the herding coreset instead of Gaussian codes.
Herding picks K real images per class (teacher embeddings); the shared codebook and the
generator are then fitted so that G(z_k, c_y) reproduces the k-th pick of class y (pixel MSE).
Evaluated beside the herding and random real sets: does the fitted generator keep the coreset's
accuracy? Usage: python -m research.probes.inversion_probe DATA PRE STEPS OUT.pt
[SEEDS EPOCHS SETS COSINE] (defaults 2 150 fitted,herding,random 0; this session's 300-epoch run:
3 300 fitted,herding 1 with STEPS 2000, see smoke_trials_300ep_cpu.json)"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from data_prep.meta import load_meta
from engine.artifact import rebuild_generator
from engine.config import EvalConfig
from engine.evaluate import evaluate_sets, herding, random_real
from engine.generator import generate, init_codebook
from engine.stages import load_pretrained, teacher_from

DATA, PRE, STEPS, OUT = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
extra = sys.argv[5:] + ["2", "150", "fitted,herding,random", "0"][len(sys.argv[5:]) :]
SEEDS, EPOCHS, SETS, COSINE = int(extra[0]), int(extra[1]), extra[2].split(","), extra[3] == "1"
meta = load_meta(DATA)
pre = load_pretrained(PRE, meta)
teacher = teacher_from(pre, meta)
K, classes = 10, list(range(meta.num_classes))
t0 = time.time()
picks, pick_labels = herding(DATA, K, teacher)
G = rebuild_generator(pre).eval()
Z = torch.nn.Parameter(init_codebook(K, G.z_dim, "learned", 0, 0))
opt = torch.optim.Adam([{"params": [Z], "lr": 0.01}, {"params": G.parameters(), "lr": 1e-3}])
steps_left = STEPS if COSINE else 10**9  # constant lr unless COSINE
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps_left)
for step in range(STEPS):
    syn, labels = generate(G, Z, pre.conditions, classes)
    loss = F.mse_loss(syn, picks)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 100 == 0 or step == STEPS - 1:
        print(f"step {step} mse {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
with torch.no_grad():
    syn, labels = generate(G, Z, pre.conditions, classes)
torch.save({"generator": G.state_dict(), "codebook": Z.detach()}, OUT)
cfg = EvalConfig(seeds=SEEDS, epochs=EPOCHS)
sets = {
    "fitted": (syn, labels),
    "herding": (picks, pick_labels),
    "random": random_real(DATA, K, seed=0),
}
sets = {name: s for name, s in sets.items() if name in SETS}
print(evaluate_sets(sets, DATA, cfg), flush=True)
