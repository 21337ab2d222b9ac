"""Condensation diagnostics: loss terms against chance, and a set's spread against real images."""

import math

import torch
from torch import nn

from engine.condense_diagnostics import (
    chance_levels,
    condition_similarity,
    loss_terms,
    pixel_extremes,
    set_movement,
    set_spread,
    term_warnings,
    terms_that_cannot_apply,
)


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
    rows = loss_terms(
        records(
            cls=[math.log(10)] * n,  # at chance all along
            feature=[1.0] * n,  # flat, no chance level
            intra=[2.0 - 0.05 * i for i in range(n)],  # falling
            disc_acc=[0.5 + 0.02 * i for i in range(n)],  # D learns
        ),
        num_classes=10,
        ipc=10,
    )
    status = {r["term"]: r["status"] for r in rows}
    assert status == {
        "cls": "at chance",
        "feature": "never moved",
        "intra": "moved",
        "disc_acc": "moved",
    }
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


def test_set_movement_measures_each_image_against_its_own_start():
    labels = torch.arange(2).repeat_interleave(3)
    start = torch.zeros(6, 8)
    end = start.clone()
    end[:3, 0] = 2.0  # class 0 moved by 2, class 1 stayed
    moved = set_movement(start, end, labels, real_within_class=4.0, net=Flat())
    assert moved["teacher_features"] == 1.0 and moved["over_real_within_class"] == 0.25
    assert moved["least_moved_class"] == 1 and moved["warnings"] == []
    assert abs(moved["pixel_rms"] - (4 * 3 / 48) ** 0.5) < 1e-12
    still = set_movement(start, start + 0.01, labels, real_within_class=4.0, net=Flat())
    assert len(still["warnings"]) == 1 and "hardly moved" in still["warnings"][0]


def test_a_term_that_falls_within_every_phi_life_is_live_though_it_averages_at_chance():
    # phi is re-initialised every outer iteration: L_intra jumps up, then falls below chance
    life = [2.8, 2.45, 2.25, 2.1, 1.9]
    curve = life * 6
    outer = [i // len(life) for i in range(len(curve))]
    level = math.log(10)
    assert abs(sum(curve[15:]) / 15 - level) < 0.02 * level  # the second half averages at chance
    rows = loss_terms(records(intra=curve, outer=outer), num_classes=10, ipc=10)
    (row,) = rows
    assert row["status"] == "moved"
    assert math.isclose(row["per_phi"], 1.9 - 2.8)
    assert term_warnings(rows) == []
    # the same values with no change inside an outer iteration stay 'at chance'
    flat = loss_terms(records(intra=[level] * 30, outer=outer), num_classes=10, ipc=10)
    assert flat[0]["status"] == "at chance" and flat[0]["per_phi"] == 0.0


def test_pixel_extremes_flag_blown_out_images():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 1, 8, 8), generator=g)
    same = pixel_extremes(real.clone(), real)
    assert same["warnings"] == [] and math.isclose(same["top"], same["top_real"])
    blown = real.clone()
    blown[:, :, :4] = 255  # half of every image white
    out = pixel_extremes(blown, real)
    assert out["top"] > 0.5 > out["top_real"]
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("images blown out")


def test_condition_similarity_warns_when_the_classes_conditions_are_one_vector():
    g = torch.Generator().manual_seed(0)
    distinct = condition_similarity(torch.eye(10))
    assert distinct["mean_cosine"] == 0 and distinct["warnings"] == []
    # the shape of post-ReLU class-mean features: a large shared part, small class parts
    shared = torch.rand(64, generator=g) + 1
    alike = shared + 0.01 * torch.randn(10, 64, generator=g)
    report = condition_similarity(alike)
    assert report["mean_cosine"] > 0.99 and len(report["warnings"]) == 1
    assert "nearly identical" in report["warnings"][0]
    assert condition_similarity(alike - alike.mean(0))["warnings"] == []


def test_at_ipc_1_nothing_warns_about_what_cannot_apply():
    # one image a class: L_intra is 0 by definition, there is no within-class spread to collapse
    skip = terms_that_cannot_apply(num_classes=10, ipc=1, weights={"adv": 1.0, "intra": 1.0})
    assert skip == {"intra"}
    n = 20
    log = records(intra=[0.0] * n, cls=[2.0 - 0.05 * i for i in range(n)])
    rows = loss_terms(log, num_classes=10, ipc=1, skip=skip)
    assert [r["term"] for r in rows] == ["cls"] and term_warnings(rows) == []
    # without the skip the term gets a row, judged as a term at 0 all along (not warned)
    unskipped = {r["term"]: r["status"] for r in loss_terms(log, num_classes=10, ipc=1)}
    assert unskipped["intra"] == "0 throughout"

    g = torch.Generator().manual_seed(0)
    labels1 = torch.arange(3)
    centres = torch.randn(3, 8, generator=g) * 10
    real_labels = torch.arange(3).repeat_interleave(10)
    real = centres[real_labels] + torch.randn(30, 8, generator=g)
    spread = set_spread(centres.clone(), labels1, real, real_labels, Flat())
    assert spread["within_class"] is None and spread["collapsed_classes"] == []
    assert spread["within_class_real"] > 0 and spread["warnings"] == []
    # a moved IPC-1 set measured against real images' spread (10 a class) does not warn
    moved = set_movement(centres, centres + 3.0, labels1, spread["within_class_real"], Flat())
    assert moved["over_real_within_class"] > 0.05 and moved["warnings"] == []


def test_a_term_switched_off_is_not_judged():
    skip = terms_that_cannot_apply(num_classes=10, ipc=10, weights={"adv": 0.0, "intra": 1.0})
    assert skip == {"adv"}
    rows = loss_terms(records(adv=[0.69] * 10), num_classes=10, ipc=10, skip=skip)
    assert rows == []


def test_a_discriminator_fresh_every_step_is_not_judged():
    """A fresh phi every step (a recipe's fresh-net-every-step) brings a fresh D and head every
    step: what they log is measured before their first update, at chance by construction."""
    weights = {"adv": 0.03, "cls": 0.03, "intra": 1.0}
    skip = terms_that_cannot_apply(10, 10, weights, disc_fresh_every_step=True)
    assert skip == {"adv", "disc", "disc_acc", "head_real_acc", "cls"}
    teacher = terms_that_cannot_apply(
        10, 10, weights, disc_fresh_every_step=True, head_classifier=False
    )
    assert "cls" not in teacher and "adv" in teacher
    log = records(adv=[0.69] * 10, disc_acc=[0.5] * 10, cls=[2.0 - 0.1 * i for i in range(10)])
    rows = loss_terms(log, num_classes=10, ipc=10, skip=teacher)
    assert [r["term"] for r in rows] == ["cls"] and term_warnings(rows) == []
    assert any("adv" in w for w in term_warnings(loss_terms(log, num_classes=10, ipc=10)))


def test_a_hinge_at_zero_all_along_is_not_a_term_that_never_moved():
    rows = loss_terms(records(inter=[0.0] * 10), num_classes=10, ipc=1)
    assert [r["status"] for r in rows] == ["0 throughout"] and term_warnings(rows) == []
    rows = loss_terms(records(inter=[0.2] * 10), num_classes=10, ipc=1)
    assert term_warnings(rows) == ["inter never moved (0.2 -> 0.2)"]


def test_a_run_of_one_logged_step_warns_of_no_term():
    rows = loss_terms(records(feature=[0.0152], intra=[1.968]), num_classes=10, ipc=10)
    assert {r["status"] for r in rows} == {"one record"} and term_warnings(rows) == []
    rows = loss_terms(records(feature=[0.0152, 0.0152]), num_classes=10, ipc=10)
    assert term_warnings(rows) == ["feature never moved (0.0152 -> 0.0152)"]
