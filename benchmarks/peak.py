"""`gencond bench peak`: the measured peak FLOP/s of this device, the denominator of MFU.

A large square matrix product (random operands, never zeros) in fp32, bf16 and, on CUDA, tf32;
warm-up products first, then the median over repeats. On CUDA each product is timed with CUDA
events; on the CPU with perf_counter. Several operand sets are rotated so that repeats do not
hit a cache that holds one set.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.config import PeakConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


def _times(fn, repeats: int, warmup: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


def measure_peak(cfg: PeakConfig) -> list[dict]:
    """One row per dtype: median seconds of an n x n x n product and its TFLOP/s."""
    cuda = cfg.device.startswith("cuda")
    n = cfg.size or (8192 if cuda else 2048)
    repeats = cfg.repeats or (50 if cuda else 5)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for name in cfg.dtypes:
        if name == "tf32" and not cuda:
            continue
        dtype = DTYPES[name]
        sets = [
            (
                torch.randn(n, n, generator=gen).to(cfg.device, dtype),
                torch.randn(n, n, generator=gen).to(cfg.device, dtype),
            )
            for _ in range(cfg.operand_sets)
        ]
        i = 0

        def product(sets=sets) -> None:
            nonlocal i
            a, b = sets[i % len(sets)]
            i += 1
            torch.mm(a, b)

        previous = torch.backends.cuda.matmul.allow_tf32 if cuda else False
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        try:
            times = _times(product, repeats, cfg.warmup, cuda)
        finally:
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = previous
        median = statistics.median(times)
        rows.append(
            {
                "dtype": name,
                "size": n,
                "repeats": repeats,
                "median_s": median,
                "min_s": min(times),
                "tflops": 2 * n**3 / median / 1e12,
            }
        )
        del sets
    return rows


def peak_tflops(rows: list[dict], precision: str, device: str = "cpu") -> float:
    """The MFU denominator for a run at `precision`: bf16 rows for bf16; for fp32 the tf32 row
    on CUDA only if tf32 matmuls are enabled, else the fp32 row."""
    by = {r["dtype"]: r["tflops"] for r in rows}
    if precision == "bf16":
        return by["bf16"]
    if device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32 and "tf32" in by:
        return by["tf32"]
    return by["fp32"]


def run(cfg: PeakConfig, out: Path | None = None) -> dict:
    threads = torch.get_num_threads()
    rows = measure_peak(cfg)
    for r in rows:
        log(
            f"peak {r['dtype']}: {r['tflops']:.3f} TFLOP/s ({r['size']}^3, median of "
            f"{r['repeats']})"
        )
    kind = "cuda" if cfg.device.startswith("cuda") else "cpu"
    path = out or RESULTS_DIR / f"peak_{kind}.json"
    return write_result(path, asdict(cfg), rows, torch_threads=threads)


def recorded_peak_tflops(precision: str = "fp32", path: Path | None = None) -> float | None:
    """The peak `gencond bench peak` recorded for this machine's device kind, if it was
    measured on this very machine (same GPU or CPU model); else None."""
    import json

    from benchmarks.results import machine

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    path = path or RESULTS_DIR / f"peak_{kind}.json"
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if payload.get("machine") != machine():
        return None
    return peak_tflops(payload["rows"], precision, kind)
