"""What DM's pixel steps add to the herding coreset: the recipe's start (herding on a pretrain
stage's teacher) refined by DM (its `paper` budget: lr 1, momentum 0.5, 256 real images a
class, a fresh ConvNet-128 every update), snapshotted at given update counts, each snapshot then
evaluated with the engine's protocol. A candidate start for the recipe's fit: if DM lifts the
coreset far in few updates, G can be fitted to the lifted set instead of the coreset.

    python -m research.probes.dm_refined_start --data DIR --pretrained STAGE --out RUN_DIR
        --snapshots 40,80,160 [--ipc 10] [--eval-seeds 1] [--name NAME]

RUN_DIR/snapshot_<N>.pt holds each set (images, labels, seconds); a rerun skips the updates and
the evaluations already done (RUN_DIR/evals.json); --name writes research/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.accuracy_bench import load_pool
from benchmarks.baselines.base import SetShape
from benchmarks.baselines.presets import build_condenser, load_baseline_preset
from benchmarks.results import write_result
from engine.config import EvalConfig
from engine.evaluate import herding, train_and_test
from engine.stages import load_pretrained, teacher_from
from research import RESULTS_DIR


def refine(a: argparse.Namespace, marks: list[int]) -> None:
    """Herding, then DM updates until the last mark, saving a snapshot at each mark."""
    todo = [n for n in marks if not (a.out / f"snapshot_{n}.pt").is_file()]
    if not todo:
        return
    pool, meta = load_pool(a.data)
    stage = load_pretrained(Path(a.pretrained), meta)
    teacher = teacher_from(stage, meta).eval().requires_grad_(False)
    began = time.perf_counter()
    images, labels = herding(a.data, a.ipc, teacher)
    preset = load_baseline_preset("dm", "fashion-mnist", a.ipc, "paper", {})
    shape = SetShape(meta.num_classes, a.ipc, meta.channels, meta.image_size)
    dm = build_condenser(preset, shape, a.seed, "cpu", None)
    with torch.no_grad():
        dm.images.copy_(images)
    for it in range(max(marks)):
        dm.step(it, pool)
        n = it + 1
        if n in marks:
            snap = {
                "images": dm.images.detach().clone(),
                "labels": labels.clone(),
                "updates": n,
                "seconds": time.perf_counter() - began,
            }
            torch.save(snap, a.out / f"snapshot_{n}.pt")
            print(f"snapshot at {n} updates, {snap['seconds']:.0f} s", flush=True)


def evaluate(a: argparse.Namespace, marks: list[int]) -> list[dict]:
    path = a.out / "evals.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    cfg = EvalConfig(seeds=a.eval_seeds, baselines=())
    for n in [0, *marks]:
        key = str(n)
        accs = done.get(key, {}).get("accs", [])
        snap = None if n == 0 else torch.load(a.out / f"snapshot_{n}.pt", weights_only=False)
        for seed in range(len(accs), a.eval_seeds):
            if snap is None:  # the herding coreset itself
                images, labels = herding(a.data, a.ipc, _teacher(a))
            else:
                images, labels = snap["images"], snap["labels"]
            accs.append(train_and_test("convnet", images, labels, a.data, cfg, seed))
            done[key] = {
                "accs": accs,
                "seconds": None if snap is None else snap["seconds"],
            }
            path.write_text(json.dumps(done, indent=1))
            print(f"{n} updates, seed {seed}: {accs[-1]:.2f}", flush=True)
    return [
        {
            "set": "herding" if n == 0 else f"herding+dm{n}",
            "updates": n,
            "seconds": done[str(n)]["seconds"],
            "accs": done[str(n)]["accs"],
            "mean": float(np.mean(done[str(n)]["accs"])),
            "std": float(np.std(done[str(n)]["accs"])),
        }
        for n in [0, *marks]
    ]


def _teacher(a: argparse.Namespace) -> torch.nn.Module:
    from data_prep.meta import load_meta

    meta = load_meta(a.data)
    return teacher_from(load_pretrained(Path(a.pretrained), meta), meta).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--pretrained", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--snapshots", default="40,80,160")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seeds", type=int, default=1)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--name", default="")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    marks = sorted(int(s) for s in a.snapshots.split(","))
    refine(a, marks)
    if a.skip_eval:
        return
    rows = evaluate(a, marks)
    for r in rows:
        print(f"{r['set']}: {r['mean']:.2f} ± {r['std']:.2f} ({len(r['accs'])} seeds)")
    if a.name:
        config = {**{k: str(v) for k, v in vars(a).items()}, "dm_budget": "paper"}
        write_result(RESULTS_DIR / f"{a.name}.json", config, rows)


if __name__ == "__main__":
    main()
