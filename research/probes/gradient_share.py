"""Which loss term dominates the gradient: the norm of each weighted term's gradient on the
codebook and on G, at the first steps of a condensation from its start (the fitted coreset start
of a fit cache when the config has one, else the pretrained G and Gaussian codes), each step with
its own fresh phi, D and head as the loop draws them. Nothing is updated: every step measures the
same start. Writes research/results/<name>.json.

    python -m research.probes.gradient_share --preset fashion-mnist-smoke \
        --recipe herding-dm --data data/fashion-mnist \
        --pretrained research/stages/fashion-mnist-smoke-standardised-pre \
        --fit-cache runs/bench-fm10/fit-cache --steps 20 \
        --name fashion-mnist-smoke_gradient_share_cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.results import write_result
from data_prep.loaders import ClassGroupedLoader
from data_prep.meta import load_meta
from engine import artifact
from engine.augment import DiffAugment
from engine.class_plan import ClassPlan
from engine.coreset_init import coreset, fitted_start
from engine.presets import load_preset_for
from engine.stages import load_pretrained, teacher_from
from engine.step import StepInput, StepModules, real_features, synthetic_losses
from research import RESULTS_DIR


def weighted_terms(cfg, syn) -> dict[str, torch.Tensor]:
    c = cfg.condense
    return {
        "feature": c.weight_feature * syn.feature,
        "intra": c.weight_intra * syn.intra,
        "inter": c.weight_inter * syn.inter,
        "adv": c.weight_gan * syn.adv,
        "cls": c.weight_gan * c.weight_cls * syn.cls,
    }


def grad_norms(loss: torch.Tensor, groups: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    params = [p for ps in groups.values() for p in ps]
    if not loss.requires_grad:
        return dict.fromkeys(groups, 0.0)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for name, ps in groups.items():
        g = [x for x in grads[i : i + len(ps)] if x is not None]
        out[name] = float(torch.sqrt(sum((x.double() ** 2).sum() for x in g))) if g else 0.0
        i += len(ps)
    return out


def probe(args) -> dict:
    overrides = [f"recipe={args.recipe}", *args.set]
    cfg = load_preset_for(args.preset, overrides, args.data)
    meta = load_meta(args.data)
    pre = load_pretrained(Path(args.pretrained), meta)
    c = cfg.condense
    teacher = teacher_from(pre, meta).requires_grad_(False)
    m = StepModules(cfg, meta, artifact.rebuild_generator(pre), pre.conditions, torch.device("cpu"))
    if c.coreset_init != "none":
        images, _ = coreset(cfg, args.data, teacher)
        classes = list(range(meta.num_classes))
        fitted_start(
            run_dir=Path(args.fit_cache) / "probe",
            cache_dir=Path(args.fit_cache),
            **dict(G=m.G, codebook=m.codebook, conditions=m.conditions, images=images),
            **dict(mine=classes, num_classes=meta.num_classes, cfg=cfg),
        )
    plan = ClassPlan.of(c, meta.num_classes, cfg.seed, 0, 1)
    loader = ClassGroupedLoader(args.data, c.ipc * c.assoc_per_image, cfg.seed, "cpu")
    augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
    groups = {"codebook": [m.codebook], "G": list(m.G.parameters())}
    rows = []
    stream = loader.iterate(plan.mine, 0, args.steps)
    for step, (_, real, labels) in enumerate(stream):
        m.fresh_phi(cfg.seed, step // (c.inner_iterations * c.gen_steps), c.disc_reinit)
        at = plan.at(step)
        batch = StepInput(step, at.classes, at.mine, real, labels)
        real_f = real_features(cfg=cfg, m=m, augment=augment, batch=batch)
        syn = synthetic_losses(
            cfg=cfg, m=m, teacher=teacher, augment=augment, batch=batch, real=real_f
        )
        for term, loss in weighted_terms(cfg, syn).items():
            norms = grad_norms(loss, groups)
            rows.append({"step": step, "term": term, "value": float(loss.detach()), **norms})
    summary = []
    for term in dict.fromkeys(r["term"] for r in rows):
        mine = [r for r in rows if r["term"] == term]
        summary.append(
            {
                "term": term,
                "value": float(np.mean([r["value"] for r in mine])),
                **{g: float(np.mean([r[g] for r in mine])) for g in groups},
            }
        )
    for g in groups:
        total = sum(s[g] for s in summary) or 1.0
        for s in summary:
            s[f"{g}_share"] = s[g] / total
    for s in summary:
        print(
            f"{s['term']:>8}: value {s['value']:.4f}  |grad codebook| {s['codebook']:.3e} "
            f"({s['codebook_share']:.0%})  |grad G| {s['G']:.3e} ({s['G_share']:.0%})"
        )
    return write_result(
        RESULTS_DIR / f"{args.name}.json",
        cfg.to_dict(),
        summary,
        benchmark="gradient_share",
        steps=args.steps,
        per_step=rows,
        note="norm of each weighted term's gradient, mean over steps; shares of the sum of norms",
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", required=True)
    p.add_argument("--recipe", default="paper")
    p.add_argument("--data", required=True)
    p.add_argument("--pretrained", required=True)
    p.add_argument("--fit-cache", default="runs/fit-cache")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--name", required=True)
    probe(p.parse_args())
