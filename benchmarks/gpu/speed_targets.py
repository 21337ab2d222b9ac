"""The speed numbers on a GPU, one process per part, checked against their targets (driven by
benchmarks/gpu/device_parts.sh).

    python -m benchmarks.gpu.speed_targets step --out DIR [--small]  peak, speed switches,
                                                                 profile, bf16 update cosine
    python -m benchmarks.gpu.speed_targets summary --out DIR           targets from the JSON files

`--small` shrinks the shape (28 px, tiny widths) so that the parts can be checked on a CPU;
the results are then labelled with the device they ran on, as every result file is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks import cost_model, peak, profile_bench, speed_bench
from benchmarks.results import write_result
from engine.presets import load_preset

# the targets
LOADER_RATIO, MFU, SWEEP_RATIO, MEM_RATIO = 3.0, 0.35, 1.0, 0.1

SHAPE = {"preset": "imagenet64-ipc10", "channels": 3, "image_size": 64, "num_classes": 1000}
SMALL = {
    "preset": "mnist-smoke",
    "channels": 1,
    "image_size": 28,
    "num_classes": 10,
    "overrides": ["condense.classes_per_step=2", "condense.phi_batch=32"],
}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_update_cosine(shape: dict, device: str) -> dict:
    """Cosine between the first-step codebook (and G) updates under bf16 and fp32 at this
    shape: does bf16 change what a step learns, not only its rounding?"""
    out = {}
    updates = {}
    for precision in ("fp32", "bf16"):
        cfg = load_preset(
            shape["preset"], [*shape.get("overrides", []), f"condense.precision={precision}"]
        )
        h = speed_bench.StepHarness(
            cfg, shape["channels"], shape["image_size"], shape["num_classes"], device=device
        )
        z0 = h.m.codebook.detach().clone()
        g0 = torch.cat([p.detach().flatten() for p in h.m.G.parameters()])
        record = h.step(0, phi=False)
        g1 = torch.cat([p.detach().flatten() for p in h.m.G.parameters()])
        updates[precision] = (h.m.codebook.detach() - z0, g1 - g0)
        out[f"loss_{precision}"] = record["loss"]
        del h
    cos = torch.nn.functional.cosine_similarity
    for i, name in enumerate(("codebook", "generator")):
        a, b = updates["fp32"][i].flatten(), updates["bf16"][i].flatten()
        moved = a.norm() > 0 and b.norm() > 0  # a frozen G does not move
        out[f"{name}_update_cosine"] = cos(a, b, dim=0).item() if moved else None
    return out


def step_part(out: Path, small: bool) -> None:
    """Shortest first: a run stopped by the 10-minute limit keeps the finished files (the speed
    benchmark, compile variants last, also writes after each variant)."""
    device = _device()
    shape = SMALL if small else SHAPE
    overrides = shape.get("overrides", [])
    peak_path = out / f"peak_{device}.json"
    peak.run(
        peak.PeakConfig(device=device, size=512 if small else 0, repeats=3 if small else 0),
        peak_path,
    )
    write_result(out / f"bf16_update_{device}.json", shape, [bf16_update_cosine(shape, device)])
    rows = json.loads(peak_path.read_text())["rows"]
    profile_bench.run(
        profile_bench.ProfileConfig(
            preset=shape["preset"],
            channels=shape["channels"],
            image_size=shape["image_size"],
            num_classes=shape["num_classes"],
            overrides=overrides,
            device=device,
            steps=2 if small else 5,
            timed=1 if small else 5,
            peak_tflops=peak.peak_tflops(rows, "fp32", device),
        ),
        out / f"profile_{device}.json",
    )
    variants = (
        ("reference", "bf16", "fused_optimizer")
        if small
        else (
            "reference",
            "bf16",
            "channels_last",
            "fused_optimizer",
            "bf16+channels_last+fused",
            "compile",
            "all",
        )
    )
    speed_bench.run(
        speed_bench.SpeedConfig(
            preset=shape["preset"],
            channels=shape["channels"],
            image_size=shape["image_size"],
            num_classes=shape["num_classes"],
            overrides=overrides,
            device=device,
            repeats=2 if small else 10,
            warmup=2 if small else 3,
            peak_json=str(peak_path),
            variants=variants,
        ),
        out / f"speed_switches_{device}.json",
    )


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def summary(out: Path, small: bool) -> dict:
    """The issue's four targets from the result files under `out` (missing parts: None)."""
    device = _device()
    shape = SMALL if small else SHAPE
    cfg = load_preset(shape["preset"], shape.get("overrides", []))
    speed = {r["variant"]: r for r in _rows(out / f"speed_switches_{device}.json")}
    best = min(speed.values(), key=lambda r: r["step_s"]) if speed else None
    classes, _, n_real = cost_model.step_sizes(cfg, shape["num_classes"])
    c = cfg.condense
    consumed = None
    if best:  # images the step reads per second: associations + phi's batch every gen_steps
        consumed = (n_real + c.phi_batch / c.gen_steps) / best["step_s"]
    loader = {r.get("loader"): r for r in _rows(out / f"loader_{device}.json")}
    grouped = next((r for k, r in loader.items() if k and "grouped" in str(k)), None)
    loader_ips = grouped.get("images_per_s") if grouped else None
    through = _rows(out / f"throughput_{device}.json")

    def pick(method: str, ipc: int, key: str):
        for r in through:
            if (
                r.get("method") == method
                and r.get("ipc") == ipc
                and "imagenet" in str(r.get("shape"))
            ):
                return r.get(key)
        return None

    ours_sweep = (
        best["step_s"] * cost_model.steps_per_sweep(cfg, shape["num_classes"]) if best else None
    )
    dm_sweep = pick("dm", 10, "sweep_s")
    mem_ours = pick("ours", 50, "peak_mem_bytes")
    mem_base = [
        m for m in (pick("mtt", 50, "peak_mem_bytes"), pick("tesla", 50, "peak_mem_bytes")) if m
    ]
    targets = {
        "loader_over_step_images_per_s": (loader_ips / consumed)
        if loader_ips and consumed
        else None,
        "best_variant": best["variant"] if best else None,
        "best_mfu": best["mfu"] if best else None,
        "ours_sweep_s": ours_sweep,
        "dm_sweep_s": dm_sweep,
        "ours_over_dm_sweep": ours_sweep / dm_sweep if ours_sweep and dm_sweep else None,
        "ours_over_mtt_tesla_mem_ipc50": mem_ours / min(mem_base)
        if mem_ours and mem_base
        else None,
    }
    met = {
        "loader_3x": _ge(targets["loader_over_step_images_per_s"], LOADER_RATIO),
        "mfu_35": _ge(targets["best_mfu"], MFU),
        "sweep_le_dm": _le(targets["ours_over_dm_sweep"], SWEEP_RATIO),
        "mem_tenth": _le(targets["ours_over_mtt_tesla_mem_ipc50"], MEM_RATIO),
    }
    payload = write_result(
        out / f"speed_targets_{device}.json",
        shape,
        [targets],
        met=met,
        step_images_per_s=consumed,
        loader_images_per_s=loader_ips,
    )
    print(json.dumps({"targets": targets, "met": met}, indent=1))
    return payload


def _ge(value, bound):
    return None if value is None else value >= bound


def _le(value, bound):
    return None if value is None else value <= bound


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("part", choices=("step", "summary"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--small", action="store_true", help="tiny shape, for a CPU check")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "step":
        step_part(args.out, args.small)
    else:
        summary(args.out, args.small)


if __name__ == "__main__":
    main()
