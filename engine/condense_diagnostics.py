"""Is each loss term of a condensation run moving, is D learning, did the set collapse?

- loss_terms: first / last-half / last values of each logged term beside its chance level
  (ln C for L_c, ln 2 for L_adv, ln K for L_intra, 0.5 for D's accuracy), its mean change over
  each phi's life (phi, D and the head are re-initialised every outer iteration, so a live term
  can fall within every outer iteration and still average near chance), and a verdict.
- pixel_extremes: the share of pixels at the top and bottom of the pixel range, against real
  images, to catch a generator that blew its images out into flat silhouettes.
- set_spread: per-class spread and class-centre distances of a set in a feature net's space,
  against a random-real set of the same IPC, to catch K identical images in a class or two
  classes whose rows look alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

# a term "moved" if its last-half mean differs from its first values by this fraction
MOVED = 0.02
# collapse: a class's spread below this fraction of the real images' mean spread
COLLAPSED = 0.15
# alike: two class centres closer than this fraction of the real images' closest pair
ALIKE = 0.25
#: real images a class, at least, that the spread and movement of a set are measured against (a
#: within-class spread needs more than one image, whatever the IPC)
REAL_PER_CLASS = 10
# extremes: a pixel within this fraction of the range's end; blown out: this many more such
# pixels (as a share of all pixels) than real images have
EXTREME = 0.02
BLOWN_OUT = 0.10


def chance_levels(num_classes: int, ipc: int) -> dict[str, float | None]:
    """Each metric's value when its classifier / discriminator knows nothing."""
    return {
        "cls": math.log(num_classes),
        "adv": math.log(2),
        "intra": math.log(ipc) if ipc > 1 else None,
        "disc": 2 * math.log(2) + 2 * math.log(num_classes),
        "disc_acc": 0.5,
        "head_real_acc": 1.0 / num_classes,
        "feature": None,
        "inter": None,
    }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def per_phi_change(records: list[dict], term: str) -> float | None:
    """Mean over outer iterations (records' `outer`) of the term's change within one phi's life:
    the mean of its last fifth minus the mean of its first fifth. None without `outer` or with
    fewer than two records per outer iteration."""
    lives: dict[int, list[float]] = {}
    for r in records:
        if "outer" in r and term in r:
            lives.setdefault(int(r["outer"]), []).append(float(r[term]))
    changes = []
    for values in lives.values():
        if len(values) >= 2:
            n = max(1, len(values) // 5)
            changes.append(_mean(values[-n:]) - _mean(values[:n]))
    return _mean(changes) if changes else None


def terms_that_cannot_apply(
    num_classes: int,
    ipc: int,
    weights: dict[str, float],
    disc_fresh_every_step: bool = False,
    head_classifier: bool = True,
) -> set[str]:
    """Terms with nothing to judge: L_intra with one image a class (it is 0 by definition),
    L_inter with one class, any term whose weight is 0 (`weights`: term -> weight), and, when
    D and the head are re-initialised before every step (a fresh phi every step), what they
    log: it is measured before their first update, at chance by construction (L_c too when the
    head is its classifier)."""
    out = {term for term, w in weights.items() if w == 0}
    if ipc <= 1:
        out.add("intra")
    if num_classes <= 1:
        out.add("inter")
    if disc_fresh_every_step:
        out |= {"adv", "disc", "disc_acc", "head_real_acc"}
        if head_classifier:
            out.add("cls")
    return out


def loss_terms(
    records: list[dict], num_classes: int, ipc: int, skip: frozenset[str] | set[str] = frozenset()
) -> list[dict]:
    """One row per logged term: first (mean of the first tenth of the log), last_half (mean
    of the second half), last, chance, per_phi (per_phi_change) and status: 'moved', 'never
    moved', 'at chance', '0 throughout' (a hinge never active: nothing to warn of) or 'one
    record' (a run stopped after one logged step: nothing to compare, so nothing to warn of). A term
    whose second-half mean sits at chance but that changes within
    each phi's life by more than MOVED of its chance level is 'moved'. Terms in `skip`
    (terms_that_cannot_apply) get no row."""
    if not records:
        return []
    chance = {t: v for t, v in chance_levels(num_classes, ipc).items() if t not in skip}
    head = records[: max(1, len(records) // 10)]
    tail = records[len(records) // 2 :] or records
    rows = []
    for term, level in chance.items():
        if term not in records[0]:
            continue
        first = _mean([r[term] for r in head])
        half = _mean([r[term] for r in tail])
        per_phi = per_phi_change(records, term)
        moved = abs(half - first) > MOVED * max(abs(first), 1e-8)
        status = "moved" if moved else "never moved"
        if all(r[term] == 0 for r in records):  # a hinge satisfied all along (L_inter)
            status = "0 throughout"
        if level is not None and abs(half - level) <= MOVED * max(abs(level), 1e-8):
            live = per_phi is not None and abs(per_phi) > MOVED * max(abs(level), 1e-8)
            status = "moved" if live else "at chance"
        if len(records) < 2:  # e.g. max_steps=1: a start with nothing to compare against
            status = "one record"
        rows.append(
            {
                "term": term,
                "first": first,
                "last_half": half,
                "last": float(records[-1][term]),
                "chance": level,
                "per_phi": per_phi,
                "status": status,
            }
        )
    return rows


@torch.no_grad()
def _features(net: nn.Module, images: Tensor, batch: int = 512) -> Tensor:
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    try:
        return torch.cat([net.embed(x.to(device)).double().cpu() for x in images.split(batch)])
    finally:
        net.train(was)


def _spread(feats: Tensor, labels: Tensor) -> tuple[list[float], Tensor]:
    classes = labels.unique(sorted=True)
    within = []
    for c in classes:
        f = feats[labels == c]
        within.append(float(torch.pdist(f).mean()) if len(f) > 1 else 0.0)
    centres = torch.stack([feats[labels == c].mean(0) for c in classes])
    return within, torch.cdist(centres, centres)


def set_spread(
    images: Tensor, labels: Tensor, real_images: Tensor, real_labels: Tensor, net: nn.Module
) -> dict:
    """Spread of a set against real images (at least REAL_PER_CLASS a class) in `net.embed` space:
    within_class (mean over classes), its smallest class, between_class (mean centre distance),
    the closest pair of class centres, and the warnings they call for."""
    within, dist = _spread(_features(net, images), labels.cpu())
    r_within, r_dist = _spread(_features(net, real_images), real_labels.cpu())
    n = len(within)
    off = ~torch.eye(n, dtype=torch.bool)
    real_within = _mean(r_within)
    # one image a class has no within-class spread: nothing can collapse
    single = int(torch.bincount(labels.cpu()).max()) <= 1
    out = {
        "within_class": None if single else _mean(within),
        "within_class_real": real_within,
        "between_class": float(dist[off].mean()) if n > 1 else 0.0,
        "between_class_real": float(r_dist[off].mean()) if n > 1 else 0.0,
        "collapsed_classes": []
        if single
        else [c for c, w in enumerate(within) if w < COLLAPSED * real_within],
        "alike_pairs": [],
        "warnings": [],
    }
    if n > 1:
        closest = float(r_dist[off].min())
        pairs = (dist < ALIKE * closest) & off
        out["alike_pairs"] = [(int(a), int(b)) for a, b in pairs.nonzero().tolist() if a < b]
        out["closest_pair"] = float(dist[off].min())
        out["closest_pair_real"] = closest
    if out["collapsed_classes"]:
        out["warnings"].append(
            f"the K images of class(es) {out['collapsed_classes'][:10]} collapsed: their spread "
            f"is under {COLLAPSED:.0%} of real images' ({real_within:.3g})"
        )
    if out["alike_pairs"]:
        out["warnings"].append(
            f"class rows alike: centres of {out['alike_pairs'][:5]} are closer than "
            f"{ALIKE:.0%} of the closest real pair: the generator ignores its class condition"
        )
    return out


#: a set whose images moved less than this share of real images' within-class spread (teacher
#: features) from where condensation started is, for training a ConvNet, the starting set
UNMOVED = 0.05


def set_movement(
    start: Tensor, end: Tensor, labels: Tensor, real_within_class: float, net: nn.Module
) -> dict:
    """How far condensation moved each image from its start (the pretrained G's image of the
    same initial code and class): mean distance in `net.embed` space, that distance over real
    images' within-class spread, and the pixels' RMS change (inputs normalised as the net sees
    them), with a warning when the set hardly moved."""
    moved = (_features(net, end) - _features(net, start)).norm(dim=1)
    ratio = float(moved.mean()) / real_within_class if real_within_class > 0 else 0.0
    per_class = torch.stack([moved[labels.cpu() == c].mean() for c in labels.unique().cpu()])
    out = {
        "teacher_features": float(moved.mean()),
        "over_real_within_class": ratio,
        "least_moved_class": int(per_class.argmin()),
        "pixel_rms": float((end.double() - start.double()).pow(2).mean().sqrt()),
        "warnings": [],
    }
    if ratio < UNMOVED:
        out["warnings"].append(
            f"the set hardly moved: its images are {ratio:.1%} of real images' within-class "
            f"spread from where condensation started (the pretrained generator's)"
        )
    return out


def pixel_extremes(images: Tensor, real_images: Tensor) -> dict:
    """Share of pixels within EXTREME of the top / bottom of [0, 255] (uint8 or float 0..255
    tensors of any shape), for the set and for real images, and a warning when the set has
    BLOWN_OUT more top pixels than real images."""

    def shares(x: Tensor) -> tuple[float, float]:
        x = x.float()
        return (
            float((x >= 255 * (1 - EXTREME)).float().mean()),
            float((x <= 255 * EXTREME).float().mean()),
        )

    (top, bottom), (real_top, real_bottom) = shares(images), shares(real_images)
    out = {
        "top": top,
        "top_real": real_top,
        "bottom": bottom,
        "bottom_real": real_bottom,
        "warnings": [],
    }
    if top - real_top > BLOWN_OUT:
        out["warnings"].append(
            f"images blown out: {top:.0%} of pixels at the top of the range (real images "
            f"{real_top:.0%}): the generator lost its texture"
        )
    return out


def term_warnings(rows: list[dict]) -> list[str]:
    """One line per term that never moved or sits at chance over the second half."""
    out = []
    for r in rows:
        if r["status"] == "never moved":
            out.append(f"{r['term']} never moved ({r['first']:.4g} -> {r['last_half']:.4g})")
        elif r["status"] == "at chance":
            out.append(
                f"{r['term']} sat at chance over the second half ({r['last_half']:.4g}, chance "
                f"{r['chance']:.4g}): that term gives no signal"
            )
    return out


#: mean between-class cosine of the class conditions above which G has nothing to tell the
#: classes apart by (one-hot conditions: 0)
ALIKE_CONDITIONS = 0.95


def condition_similarity(conditions: Tensor) -> dict:
    """How far apart the per-class conditions G is given are: the mean and largest cosine between
    two classes' vectors, with a warning when they are nearly one vector."""
    c = torch.nn.functional.normalize(conditions.double(), dim=1)
    n = len(c)
    if n < 2:
        return {"mean_cosine": None, "max_cosine": None, "warnings": []}
    cos = (c @ c.T)[~torch.eye(n, dtype=torch.bool)]
    out = {"mean_cosine": float(cos.mean()), "max_cosine": float(cos.max()), "warnings": []}
    if out["mean_cosine"] > ALIKE_CONDITIONS:
        out["warnings"].append(
            f"class conditions nearly identical (mean cosine between classes "
            f"{out['mean_cosine']:.3f}): the generator has little to tell the classes apart by"
        )
    return out
