"""The paper presets at their full budget on one GPU, inside a wall-clock deadline: for each
dataset, pretrain, condense, then evaluation seeds one at a time until `--seeds` or the
deadline, the results file rewritten after every stage (a killed run keeps what it wrote).

    python -m benchmarks.gpu.full_budget --data fashion-mnist=DIR --data mnist=DIR \
        --out OUTDIR [--seeds 20] [--deadline-s 500] [--device cuda]
    python -m benchmarks.gpu.full_budget --tiny --data mnist=DIR --out OUTDIR   (CPU check)

`--tiny` runs the smoke preset with toy sizes on the CPU, so the script is known to work
before a device call. The result rows stand beside the paper's Table 2 (IPC 10: Fashion-MNIST
87.3, MNIST 98.4).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.results import write_result

PAPER_IPC10 = {"fashion-mnist": 87.3, "mnist": 98.4}
TINY = [
    "teacher.width=8",
    "teacher.epochs=1",
    "gan.steps=4",
    "gan.width=4",
    "gan.disc_width=4",
    "gan.z_dim=8",
    "gan.proj_dim=4",
    "condense.outer_iterations=1",
    "condense.inner_iterations=2",
    "condense.gen_steps=1",
    "condense.phi_width=8",
    "condense.phi_batch=32",
    "condense.assoc_per_image=2",
    "eval.width=8",
    "eval.epochs=2",
    "ipc=2",
]


def _condense(preset: str, overrides: list[str], data: str, out: Path) -> None:
    from common.runlock import hold
    from engine.presets import load_preset_for
    from engine.stages import run_condense

    cfg = load_preset_for(preset, overrides, data)
    with hold(out, "condense"):
        run_condense(cfg, data, out)  # pretrains into OUT/pretrained first


def _evaluate(run: Path, data: str, seeds: int, seed_index: int, device: str) -> None:
    from common.runlock import hold, run_lock_path
    from engine.config import RunConfig
    from engine.stages import load_condensed, run_evaluate

    protocol = RunConfig.from_dict(load_condensed(run).config).eval
    protocol.seeds, protocol.baselines = seeds, ()
    with hold(run, "evaluate", run_lock_path(run, f".gencond-eval-seed-{seed_index}.lock")):
        run_evaluate(run, data, protocol, device, seed_index)


def run(
    data: dict[str, str], out: Path, seeds: int, deadline_s: float, device: str, tiny: bool
) -> dict:
    began = time.perf_counter()
    rows: list[dict] = []
    config = {
        "data": data,
        "seeds": seeds,
        "deadline_s": deadline_s,
        "device": device,
        "tiny": tiny,
    }
    result = out / "full_budget.json"

    def save() -> None:
        write_result(
            result,
            config,
            rows,
            paper_ipc10=PAPER_IPC10,
            elapsed_s=round(time.perf_counter() - began, 1),
        )

    for name, folder in data.items():
        preset = "mnist-smoke" if tiny else f"{name}-ipc10"
        sets = [*(TINY if tiny else []), f"device={device}"]
        run_dir = out / name
        row = {"dataset": name, "preset": preset, "paper": PAPER_IPC10.get(name)}
        rows.append(row)
        t = time.perf_counter()
        _condense(preset, sets, folder, run_dir)
        row["condense_s"] = round(time.perf_counter() - t, 1)  # pretraining included
        save()
        accs = []
        for i in range(seeds):
            if time.perf_counter() - began > deadline_s:
                row["stopped"] = f"deadline after {len(accs)} seeds"
                break
            _evaluate(run_dir, folder, seeds, i, device)
            part = json.loads((run_dir / "eval_parts" / f"seed_{i}.json").read_text())
            accs.append(part["results"]["condensed"]["convnet"]["accs"][0])
            row.update(
                accs=accs, mean=float(np.mean(accs)), std=float(np.std(accs)), seeds=len(accs)
            )
            save()
    save()
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.full_budget", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a prepared dataset (repeatable), e.g. mnist=data/mnist",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for runs and the JSON")
    p.add_argument("--seeds", type=int, default=20, help="evaluation seeds per dataset")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=500.0,
        help="no new evaluation seed starts after this many seconds",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (a check)")
    args = p.parse_args(argv)
    data = dict(item.split("=", 1) for item in args.data)
    device = "cpu" if args.tiny else args.device
    payload = run(data, args.out, args.seeds, args.deadline_s, device, args.tiny)
    for row in payload["rows"]:
        print(
            row["dataset"],
            row.get("mean"),
            "±",
            row.get("std"),
            "over",
            row.get("seeds"),
            "seeds; paper",
            row["paper"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
