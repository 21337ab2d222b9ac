"""`gencond bench scaling`: parameters, memory and step time of ours and the pixel baselines as
the class count (10 ... 10000, generated data) and the resolution (32, 64, 128 px) grow, at one
IPC. Each point is measured as in `bench throughput` (its own child process, the learnable state
at full size, a step timed on a few classes, the sweep extrapolated); a table, JSON and a PNG
plot (log-log, one panel per quantity and resolution) are written.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.config import ScalingConfig
from benchmarks.results import RESULTS_DIR, write_result
from benchmarks.throughput_bench import GIB, Point, measure_all
from common.console import log

FITS = {True: "yes", False: "no", None: "?"}
COLORS = {
    "ours": (214, 39, 40),
    "dm": (31, 119, 180),
    "dsa": (44, 160, 44),
    "mtt": (148, 103, 189),
    "tesla": (255, 127, 14),
}


def scaling_points(cfg: ScalingConfig) -> list[Point]:
    out = []
    for res in cfg.resolutions:
        dataset = "cifar10" if res <= 32 else "imagenet64"  # ConvNet-3 / ConvNet-4 presets
        for classes in cfg.classes:
            for method in cfg.timing.methods:
                width = cfg.timing.shrink.get("width", 128)
                out.append(
                    Point(method, f"{classes}c-{res}px", cfg.ipc, 3, res, classes, width, dataset)
                )
    return out


def run(cfg: ScalingConfig, out: str | Path | None = None) -> dict:
    cfg.check()
    began = time.perf_counter()
    config = asdict(cfg)
    config["load_average_start"] = os.getloadavg()
    path = Path(out) if out else RESULTS_DIR / f"scaling_{cfg.timing.device.split(':')[0]}.json"

    def save(rows: list[dict], complete: bool) -> dict:
        payload = write_result(
            path,
            config,
            rows,
            benchmark="scaling",
            complete=complete,
            load_average_end=os.getloadavg(),
            wall_s=round(time.perf_counter() - began, 1),
        )
        path.with_suffix(".md").write_text(markdown(payload))
        plot(payload, path.with_suffix(".png"))
        return payload

    rows = measure_all(scaling_points(cfg), cfg.timing, "Scaling points", lambda r: save(r, False))
    payload = save(rows, True)
    log(f"{len(rows)} points in {time.perf_counter() - began:.0f} s")
    return payload


def markdown(payload: dict) -> str:
    lines = [
        f"# Scaling with classes and resolution ({payload['machine']}, torch "
        f"{payload['torch']}, commit {payload['commit']})",
        "",
        f"IPC {payload['config']['ipc']}; created {payload['created']}; steps timed on "
        f"{payload['config']['timing']['timed_classes']} class(es), sweeps extrapolated.",
        "",
        "| px | classes | method | params | bytes (MiB) | peak mem (GiB) | step (s) | "
        "sweep (s) | fits |",
        "|" + " --- |" * 9,
    ]
    for r in payload["rows"]:
        cells = [
            r["image_size"],
            r["classes"],
            r["method"],
            r["params"],
            None if r["bytes"] is None else r["bytes"] / (1 << 20),
            None if r["peak_mem_bytes"] is None else r["peak_mem_bytes"] / GIB,
            r["step_s"],
            r["sweep_s"],
            FITS[r["fits"]],
        ]
        text = [
            ("-" if c is None else f"{c:.3g}" if isinstance(c, float) else str(c)) for c in cells
        ]
        lines.append("| " + " | ".join(text) + " |")
    reasons = [r for r in payload["rows"] if r.get("reason")]
    lines += ["", *[f"- {r['method']} {r['shape']}: {r['reason']}" for r in reasons]]
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    """Log-log panels: rows params / peak memory / sweep time, columns resolutions; x classes.
    Points that do not fit are drawn as crosses at the top of their panel."""
    from PIL import Image, ImageDraw

    rows = payload["rows"]
    resolutions = sorted({r["image_size"] for r in rows})
    quantities = [
        ("params", "learnable parameters"),
        ("peak_mem_bytes", "peak memory (bytes)"),
        ("sweep_s", "time per sweep (s)"),
    ]
    pw, ph, margin = 360, 240, 60
    legend = 100
    img = Image.new(
        "RGB", (margin + len(resolutions) * (pw + margin) + legend, 40 + 3 * (ph + margin)), "white"
    )
    draw = ImageDraw.Draw(img)
    draw.text(
        (margin, 10),
        f"ours vs pixel baselines, IPC {payload['config']['ipc']}, "
        f"{payload['machine']} (x: classes, log-log)",
        fill="black",
    )
    xs = sorted({r["classes"] for r in rows})
    for qi, (key, label) in enumerate(quantities):
        values = [r[key] for r in rows if r.get(key)]
        if not values:
            continue
        lo, hi = math.log10(min(values)), math.log10(max(values)) + 1e-9
        for ci, res in enumerate(resolutions):
            x0, y0 = margin + ci * (pw + margin), 40 + qi * (ph + margin)
            draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline="black")
            draw.text((x0 + 4, y0 + 4), f"{label}, {res} px", fill="black")
            draw.text((x0 - 55, y0 + ph - 12), f"1e{lo:.1f}", fill="gray")
            draw.text((x0 - 55, y0 + 16), f"1e{hi:.1f}", fill="gray")

            def at(classes, value, x0=x0, y0=y0, lo=lo, hi=hi):
                fx = (math.log10(classes) - math.log10(xs[0])) / max(
                    1e-9, math.log10(xs[-1]) - math.log10(xs[0])
                )
                fy = (math.log10(value) - lo) / max(1e-9, hi - lo)
                return x0 + 10 + fx * (pw - 20), y0 + ph - 10 - fy * (ph - 30)

            for c in xs:
                x, _ = at(c, 10**lo)
                draw.text((x - 10, y0 + ph + 4), f"{c:g}", fill="gray")
            for method, color in COLORS.items():
                pts = [r for r in rows if r["method"] == method and r["image_size"] == res]
                line = [at(r["classes"], r[key]) for r in pts if r.get(key) and r["fits"]]
                if len(line) > 1:
                    draw.line(line, fill=color, width=2)
                for x, y in line:
                    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
                for r in pts:
                    if r["fits"] is False:
                        x, _ = at(r["classes"], 10**hi)
                        y = y0 + 22
                        draw.line([x - 4, y - 4, x + 4, y + 4], fill=color, width=2)
                        draw.line([x - 4, y + 4, x + 4, y - 4], fill=color, width=2)
    for i, (method, color) in enumerate(COLORS.items()):
        draw.text((img.width - legend, 40 + 14 * i), method, fill=color)
    draw.text((img.width - legend, 40 + 14 * len(COLORS)), "x: does not fit", fill="black")
    img.save(path)
