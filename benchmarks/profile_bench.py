"""`gencond bench profile`: torch.profiler over a few condensation steps of a preset at its
shape, on generated tensors: the top operators by self time, the time of each part of the step
(the record_function ranges of engine.step.condense_step and phi_update), the cost model's
FLOPs beside them and the achieved FLOP/s (and MFU where a peak measurement is given).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import cost_model
from benchmarks.config import ProfileConfig
from benchmarks.results import RESULTS_DIR, write_result
from benchmarks.speed_bench import StepHarness, time_step
from common.console import log
from engine.presets import load_preset

REGIONS = ("phi_real", "generate", "phi_syn", "losses", "backward_zg", "update_dh", "phi_update")


def _self_time(evt, cuda: bool) -> float:
    if cuda:
        return getattr(evt, "self_device_time_total", 0.0) or evt.self_cuda_time_total
    return evt.self_cpu_time_total


def _total_time(evt, cuda: bool) -> float:
    if cuda:
        return getattr(evt, "device_time_total", 0.0) or evt.cpu_time_total
    return evt.cpu_time_total


def profile_steps(cfg: ProfileConfig) -> dict:
    run_cfg = load_preset(cfg.preset, cfg.overrides)
    run_cfg.device = cfg.device
    cuda = cfg.device.startswith("cuda")
    h = StepHarness(run_cfg, cfg.channels, cfg.image_size, cfg.num_classes, device=cfg.device)
    cost = cost_model.condense_step_cost(run_cfg, cfg.channels, cfg.image_size, cfg.num_classes)
    M = run_cfg.condense.gen_steps
    # wall clock without the profiler: medians of condense_step and of phi's update (after the
    # warm-up steps: allocator, kernel selection, compilation)
    timing = time_step(h, cfg.timed, cfg.warmup)
    times, i = timing["step_s_all"], cfg.warmup + cfg.timed
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for s in range(cfg.steps):
            h.step(i, phi=s == cfg.steps - 1 and run_cfg.condense.phi_trains)
            i += 1
        h.sync()
    events = prof.key_averages()
    regions = {}
    for evt in events:
        if evt.key in REGIONS:
            per_call = _total_time(evt, cuda) / 1e6 / evt.count
            calls_per_step = 1 / M if evt.key == "phi_update" else 1
            regions[evt.key] = per_call * calls_per_step
    ops = sorted(
        (e for e in events if e.key not in REGIONS and not e.key.startswith("Profiler")),
        key=lambda e: _self_time(e, cuda),
        reverse=True,
    )
    total_self = sum(_self_time(e, cuda) for e in events if e.key not in REGIONS) or 1.0
    top = [
        {
            "op": e.key,
            "calls_per_step": e.count / cfg.steps,
            "self_s_per_step": _self_time(e, cuda) / 1e6 / cfg.steps,
            "self_share": _self_time(e, cuda) / total_self,
        }
        for e in ops[: cfg.top]
    ]
    by_region = cost.by_region()
    region_total = sum(regions.values()) or 1.0
    parts = [
        {
            "region": r,
            "s_per_step": regions.get(r, 0.0),
            "share": regions.get(r, 0.0) / region_total,
            "flops": by_region.get(r, 0.0),
            "gflops_per_s": by_region.get(r, 0.0) / regions[r] / 1e9 if regions.get(r) else None,
        }
        for r in REGIONS
    ]
    step_s = timing["step_s"]
    achieved = cost.flops / step_s
    result = {
        "preset": cfg.preset,
        "step_s": step_s,
        "zg_dh_s_all": times,
        "phi_update_s": timing["phi_update_s"],
        "flops_per_step": cost.flops,
        "other_flops_per_step": cost.other_flops,
        "bytes_per_step": cost.bytes,
        "achieved_gflops_per_s": achieved / 1e9,
        "mfu": achieved / (cfg.peak_tflops * 1e12) if cfg.peak_tflops else None,
        "parts": parts,
        "top_ops": top,
        "cost": cost.as_dict(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    return result


def run(cfg: ProfileConfig, out: Path | None = None) -> dict:
    result = profile_steps(cfg)
    kind = "cuda" if cfg.device.startswith("cuda") else "cpu"
    shape = f"{cfg.preset}_{cfg.channels}x{cfg.image_size}"
    for p in result["parts"]:
        rate = f"{p['gflops_per_s']:.1f} GFLOP/s" if p["gflops_per_s"] else "-"
        log(f"{p['region']:>12}: {p['s_per_step']:.3f} s/step ({p['share']:.0%}), {rate}")
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] is not None else ""
    log(
        f"step {result['step_s']:.3f} s, {result['flops_per_step'] / 1e9:.1f} GFLOP/step, "
        f"{result['achieved_gflops_per_s']:.1f} GFLOP/s{mfu}"
    )
    config = asdict(cfg)
    return write_result(
        out or RESULTS_DIR / f"profile_{shape}_{kind}.json", config, result.pop("parts"), **result
    )
