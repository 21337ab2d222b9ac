"""Probe (issue 3): can choosing or optimising the codebook of the pretrained fashion-mnist-smoke
generator beat its plain Gaussian samples? Sets: plain Gaussian codes, truncated codes (|z|<0.7),
latent herding (K of 1000 Gaussian codes chosen greedily so that every class mean of teacher
embeddings matches the real one), and latent herding followed by 200 steps of multi-layer
class-mean feature matching (teacher + a fresh random ConvNet each step, DSA siamese).
Evaluation: ConvNet-128, 150 epochs, 2 seeds. Usage: python -m research.probes.codebook_selection
DATA PRE plain trunc herd herdopt. Results: research/results/codebook_probe_cpu.json."""

import json
import sys
import time
from pathlib import Path

import torch

from data_prep.loaders import TestLoader
from data_prep.meta import load_meta
from engine.artifact import rebuild_generator
from engine.augment import DiffAugment
from engine.config import EvalConfig
from engine.evaluate import _embed, evaluate_sets, random_real
from engine.generator import generate, init_codebook
from engine.nets import ConvNet, reinit_
from engine.stages import load_pretrained, teacher_from

DATA = sys.argv[1]
meta = load_meta(DATA)
pre = load_pretrained(Path(sys.argv[2]), meta)
teacher = teacher_from(pre, meta)
G = rebuild_generator(pre).eval()
cond = pre.conditions
K, C = 10, 10
classes = list(range(C))
t0 = time.time()
# real class means in teacher embedding
feats, labs = [], []
for x, y in TestLoader(DATA, batch_size=1000, split="train"):
    with torch.no_grad():
        feats.append(teacher.embed(x))
        labs.append(y)
feats, labs = torch.cat(feats), torch.cat(labs)
real_mean = torch.stack([feats[labs == c].mean(0) for c in classes])
print("embed real", time.time() - t0, flush=True)


def herd_codes(pool_size, seed):
    pool = init_codebook(pool_size, G.z_dim, "fixed", 0, seed)
    with torch.no_grad():
        f = torch.stack(
            [_embed(teacher, G(pool, cond[c].expand(pool_size, -1)).split(500)) for c in classes]
        )  # C,P,D
    chosen, total = [], torch.zeros_like(real_mean)
    taken = torch.zeros(pool_size, dtype=torch.bool)
    for step in range(1, K + 1):
        d = ((step * real_mean - total)[:, None, :] - f).square().sum(2).sum(0)
        d[taken] = float("inf")
        j = int(d.argmin())
        chosen.append(j)
        taken[j] = True
        total += f[:, j]
    return pool[chosen]


def optimise(codebook, steps, finetune=False, lr=0.01):
    Z = torch.nn.Parameter(codebook.clone())
    g = rebuild_generator(pre).eval()
    params = [{"params": [Z], "lr": lr}]
    if finetune:
        params.append({"params": list(g.parameters()), "lr": 1e-3})
    else:
        g.requires_grad_(False)
    opt = torch.optim.SGD(params, momentum=0.5)
    aug = DiffAugment("color_crop_cutout_flip_scale_rotate", batch_mode=True)
    from data_prep.loaders import ClassGroupedLoader

    assoc = ClassGroupedLoader(DATA, 64, 0).iterate(lambda s: classes, 0)
    phi = ConvNet(meta.channels, C, meta.image_size, width=128)
    teacher.requires_grad_(False)
    for s in range(steps):
        _, real, rl = next(assoc)
        reinit_(phi, torch.Generator().manual_seed(1000 + s))
        phi.requires_grad_(False)
        gen_state = torch.Generator().manual_seed(s).get_state()
        g1, g2 = torch.Generator(), torch.Generator()
        g1.set_state(gen_state)
        g2.set_state(gen_state)
        syn, _ = generate(g, Z, cond, classes)
        ra, sa = aug(real, g1), aug(syn, g2)
        loss = 0
        for net in (phi, teacher):
            with torch.no_grad():
                rf = net.features(ra)
            sf = net.features(sa)
            for a, b in zip(rf, sf, strict=False):
                loss = (
                    loss
                    + (
                        a.flatten(1).view(C, -1, a[0].numel()).mean(1)
                        - b.flatten(1).view(C, K, -1).mean(1)
                    )
                    .square()
                    .sum(1)
                    .mean()
                )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 50 == 0:
            print("step", s, float(loss), time.time() - t0, flush=True)
    return Z.detach(), g


def synth(Z, g=G):
    with torch.no_grad():
        return generate(g, Z, cond, classes)


sets = {}
which = sys.argv[3:]
if "plain" in which:
    sets["plain"] = synth(init_codebook(K, G.z_dim, "fixed", 0, 0))
if "trunc" in which:
    sets["trunc07"] = synth(init_codebook(K, G.z_dim, "truncated", 0.7, 0))
if "herd" in which or "herdopt" in which or "herdft" in which:
    Zh = herd_codes(1000, 0)
    print("herd", time.time() - t0, flush=True)
    sets["latent_herding"] = synth(Zh)
if "herdopt" in which:
    Zo, g = optimise(Zh, 200)
    sets["latent_herding_opt"] = synth(Zo, g)
if "herdft" in which:
    Zo, g = optimise(Zh, 200, finetune=True)
    sets["latent_herding_ft"] = synth(Zo, g)
if "randopt" in which:
    Zo, g = optimise(init_codebook(K, G.z_dim, "fixed", 0, 0), 200)
    sets["plain_opt"] = synth(Zo, g)
if "random" in which:
    sets["random"] = random_real(DATA, K, seed=0)
print("sets ready", time.time() - t0, flush=True)
for name, (x, y) in sets.items():
    torch.save((x, y), f"/tmp/codebook_probe_{name}.pt")
res = evaluate_sets(sets, DATA, EvalConfig(seeds=2, epochs=150))
print(json.dumps({k: v["convnet"] for k, v in res.items()}))
print("total", time.time() - t0)
