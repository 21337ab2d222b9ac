"""The GPU throughput numbers in one command inside a deadline (at most 9 minutes on one H200):

1. peak: fp32, tf32 and bf16 matrix-product TFLOP/s (benchmarks/peak.py);
2. speed switches: the imagenet64-ipc10 step (1000 classes, 64 px) for the reference, each
   switch and their combinations: step time, MFU against part 1's peak, peak memory
   (benchmarks/speed_bench.py);
3. memory and sweep time at IPC 50, ImageNet-1K shape: ours against DM and TESLA, the same
   sweep definition for every method (benchmarks/throughput_bench.py).

Each part writes its own result file into OUT as soon as it ends (the speed switches after every
variant), and OUT/throughput_suite.json is rewritten after every part with what is known so
far; a part that would start after the deadline is recorded as skipped. The Fashion-MNIST
accuracy-against-time curve (`gencond bench budget`) does not fit in the same 9 minutes (four
methods x four marks x three 300-epoch evaluations) and is not part of it.

    python -m benchmarks.gpu.throughput_suite --out OUT [--deadline-s 500]
    python -m benchmarks.gpu.throughput_suite --tiny --out OUT       (CPU check, toy sizes)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from benchmarks import peak, speed_bench, throughput_bench
from benchmarks.results import RESULTS_DIR, write_result

FULL = {
    "preset": "imagenet64-ipc10",
    "channels": 3,
    "image_size": 64,
    "num_classes": 1000,
    "overrides": [],
    "variants": (
        "reference",
        "bf16",
        "channels_last",
        "fused_optimizer",
        "bf16+channels_last+fused",
        "compile",
        "all",
    ),
    "repeats": 10,
    "warmup": 3,
}
TINY = {
    "preset": "mnist-smoke",
    "channels": 1,
    "image_size": 28,
    "num_classes": 10,
    "overrides": ["condense.classes_per_step=2", "condense.phi_batch=32"],
    "variants": ("reference", "bf16"),
    "repeats": 1,
    "warmup": 1,
}
# seconds a part needs at the least to be worth starting (full size, on the GPU)
NEEDS = {"peak": 30, "speed_switches": 120, "memory_ipc50": 90}


def _speed_summary(payload: dict) -> dict:
    rows = payload.get("rows", [])
    best = min(rows, key=lambda r: r["step_s"]) if rows else None
    return {
        "variants": {
            r["variant"]: {k: r.get(k) for k in ("step_s", "speedup", "mfu", "peak_mem_bytes")}
            for r in rows
        },
        "best": best
        and {k: best.get(k) for k in ("variant", "step_s", "speedup", "mfu", "peak_mem_bytes")},
    }


def _memory_summary(payload: dict) -> dict:
    rows = {r["method"]: r for r in payload.get("rows", [])}
    out = {
        m: {
            k: r.get(k)
            for k in ("peak_mem_bytes", "sweep_s", "images_per_s", "mfu", "fits", "reason")
        }
        for m, r in rows.items()
    }
    ours = rows.get("ours", {}).get("peak_mem_bytes")
    for m, r in rows.items():
        if m != "ours" and ours and r.get("peak_mem_bytes") and r.get("fits") is not False:
            out[m]["mem_vs_ours"] = r["peak_mem_bytes"] / ours
    return out


def run(out: Path, deadline_s: float, device: str, tiny: bool) -> dict:
    began = time.perf_counter()
    shape = TINY if tiny else FULL
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"parts": {}}
    config = {"device": device, "tiny": tiny, "deadline_s": deadline_s, **shape}

    def left() -> float:
        return deadline_s - (time.perf_counter() - began)

    def save() -> dict:
        return write_result(
            out / "throughput_suite.json",
            config,
            [summary["parts"]],
            elapsed_s=round(time.perf_counter() - began, 1),
        )

    def part(name: str, fn) -> None:
        if not tiny and left() < NEEDS[name]:
            summary["parts"][name] = {"skipped": f"{left():.0f} s left of the deadline"}
        else:
            t = time.perf_counter()
            summary["parts"][name] = {**fn(), "seconds": round(time.perf_counter() - t, 1)}
        save()

    peak_path = out / "peak.json"

    def peaks() -> dict:
        cfg = peak.PeakConfig(device=device, size=256 if tiny else 0, repeats=2 if tiny else 0)
        rows = peak.run(cfg, peak_path)["rows"]
        if not tiny:  # where throughput_bench's MFU looks for this machine's peak
            shutil.copy(peak_path, RESULTS_DIR / f"peak_{device.split(':')[0]}.json")
        return {"tflops": {r["dtype"]: r["tflops"] for r in rows}}

    def switches() -> dict:
        cfg = speed_bench.SpeedConfig(
            preset=shape["preset"],
            channels=shape["channels"],
            image_size=shape["image_size"],
            num_classes=shape["num_classes"],
            overrides=shape["overrides"],
            device=device,
            repeats=shape["repeats"],
            warmup=shape["warmup"],
            peak_json=str(peak_path) if peak_path.is_file() else "",
            variants=shape["variants"],
        )
        return _speed_summary(speed_bench.run(cfg, out / "speed_switches.json"))

    def memory() -> dict:
        cfg = throughput_bench.ThroughputConfig(
            shapes=("imagenet64",),
            ipcs=(2,) if tiny else (50,),
            methods=("ours", "dm", "tesla"),
            timed_classes=1 if tiny else 10,
            warmup=0 if tiny else 1,
            repeats=1 if tiny else 3,
            device=device,
            point_timeout_s=max(30.0, min(200.0, left() / 3)),
            shrink={"image_size": 8, "classes": 3, "width": 4} if tiny else {},
        )
        return _memory_summary(throughput_bench.run(cfg, out / "throughput_ipc50.json"))

    part("peak", peaks)
    part("speed_switches", switches)
    part("memory_ipc50", memory)
    return save()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.throughput_suite", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the result files")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=500.0,
        help="no part starts after this many seconds (default 500)",
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (a check)")
    args = p.parse_args(argv)
    device = "cpu" if args.tiny else args.device
    payload = run(args.out, args.deadline_s, device, args.tiny)
    print(json.dumps(payload["rows"][0], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
