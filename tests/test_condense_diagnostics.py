"""Condensation diagnostics: loss terms against chance, and a set's spread against real images."""

import math

import torch
from torch import nn

from engine.condense_diagnostics import chance_levels, loss_terms, set_spread, term_warnings


def records(**curves):
    n = len(next(iter(curves.values())))
    return [{k: v[i] for k, v in curves.items()} for i in range(n)]


def test_chance_levels():
    c = chance_levels(10, 5)
    assert math.isclose(c["cls"], math.log(10))
    assert math.isclose(c["adv"], math.log(2))
    assert math.isclose(c["intra"], math.log(5))
    assert c["disc_acc"] == 0.5


def test_terms_moved_never_moved_and_at_chance():
    n = 20
    rows = loss_terms(records(
        cls=[math.log(10)] * n,                      # at chance all along
        feature=[1.0] * n,                           # flat, no chance level
        intra=[2.0 - 0.05 * i for i in range(n)],    # falling
        disc_acc=[0.5 + 0.02 * i for i in range(n)],  # D learns
    ), num_classes=10, ipc=10)  # fmt: skip
    status = {r["term"]: r["status"] for r in rows}
    assert status == {"cls": "at chance", "feature": "never moved", "intra": "moved",
                      "disc_acc": "moved"}  # fmt: skip
    warnings = term_warnings(rows)
    assert len(warnings) == 2
    assert any(w.startswith("cls sat at chance") for w in warnings)
    assert any(w.startswith("feature never moved") for w in warnings)


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def embed(self, x):
        return x.flatten(1)


def test_spread_flags_collapsed_class_and_alike_rows():
    g = torch.Generator().manual_seed(0)
    k, classes = 4, 3
    labels = torch.arange(classes).repeat_interleave(k)
    centres = torch.randn(classes, 8, generator=g) * 10
    real = centres[labels] + torch.randn(classes * k, 8, generator=g)
    healthy = set_spread(real.clone(), labels, real, labels, Flat())
    assert healthy["collapsed_classes"] == [] and healthy["alike_pairs"] == []
    assert healthy["warnings"] == []

    syn = real.clone()
    syn[labels == 1] = centres[1]  # class 1: K identical images
    syn[labels == 2] = centres[0][None] + torch.randn(k, 8, generator=g)  # class 2 looks like 0
    bad = set_spread(syn, labels, real, labels, Flat())
    assert bad["collapsed_classes"] == [1]
    assert bad["alike_pairs"] == [(0, 2)]
    assert len(bad["warnings"]) == 2
