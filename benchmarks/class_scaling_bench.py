"""`gencond bench classes`: does one condensation step cost the same with 100 or 2000 classes?

For each class count a generated 64 px, 3-channel dataset (ImageNet-64's shape, a few images
per class) is prepared, a small pretrain stage runs once, and `gencond condense` runs in a child
process with a fixed number of classes per step. Recorded per class count: median seconds per
step (from metrics.jsonl, after warm-up), images generated and read per step, the parameters
that grow with the class count (condition table, head), and the child's peak RSS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil

from benchmarks.config import ClassScalingConfig
from benchmarks.prep_bench import tree_memory
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log
from data_prep.options import PrepOptions
from data_prep.prepare import prepare_arrays
from data_prep.splits import RawDataset, Segment, Split

SMALL = [
    "teacher.width=16",
    "teacher.epochs=1",
    "gan.steps=20",
    "gan.width=8",
    "gan.disc_width=8",
    "gan.z_dim=32",
    "gan.proj_dim=16",
    "condense.phi_width=32",
    "condense.phi_batch=64",
    "condense.assoc_per_image=2",
    "condense.log_every=1",
    "condense.checkpoint_every=0",
    "condense.outer_iterations=1",
    "condense.inner_iterations=20",
    "condense.gen_steps=2",
]


def _dataset(folder: Path, classes: int, cfg: ClassScalingConfig) -> Path:
    rng = np.random.default_rng(classes)
    size = cfg.image_size

    def split(n: int) -> Split:
        labels = np.repeat(np.arange(classes), n)
        images = rng.integers(0, 256, (len(labels), size, size, 3), dtype=np.uint8)
        return Split([Segment(images, labels, Path("<generated>"))])

    raw = RawDataset(
        "imagenet64", [str(c) for c in range(classes)], split(cfg.per_class), split(1), []
    )
    prepare_arrays(raw, folder, PrepOptions(workers=1))
    return folder


def _monitored(cmd: list[str]) -> int:
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_memory(proc)[1])
        time.sleep(0.05)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:5])} failed: {child.stderr.read()[-2000:]}")
    return peak


def measure(classes: int, cfg: ClassScalingConfig) -> dict:
    work = Path(cfg.workdir) / str(classes)
    shutil.rmtree(work, ignore_errors=True)
    log(f"{classes} classes: preparing data and a small pretrain stage")
    data = _dataset(work / "data", classes, cfg)
    sets = [
        a
        for s in [
            *SMALL,
            f"ipc={cfg.ipc}",
            f"max_steps={cfg.steps}",
            f"condense.classes_per_step={cfg.classes_per_step}",
        ]
        for a in ("--set", s)
    ]
    base = [sys.executable, "-m", "launch.cli"]
    _monitored(
        [
            *base,
            "pretrain",
            "--preset",
            "imagenet64-ipc10",
            "--data",
            str(data),
            "--out",
            str(work / "pre"),
            *sets,
        ]
    )
    log(f"{classes} classes: {cfg.steps} condensation steps, {cfg.classes_per_step} per step")
    peak = _monitored(
        [
            *base,
            "condense",
            "--preset",
            "imagenet64-ipc10",
            "--data",
            str(data),
            "--out",
            str(work / "run"),
            "--pretrained",
            str(work / "pre"),
            *sets,
        ]
    )
    records = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    seconds = np.diff([r["seconds"] for r in records])[cfg.warmup :]
    from engine.stages import load_condensed

    cond = load_condensed(work / "run").class_embeddings
    row = {
        "classes": classes,
        "classes_per_step": cfg.classes_per_step,
        "ipc": cfg.ipc,
        "step_s_median": round(float(np.median(seconds)), 4),
        "step_s_p90": round(float(np.percentile(seconds, 90)), 4),
        "synthetic_images_per_step": records[-1]["synthetic_images"],
        "real_images_per_step": records[-1]["real_images"],
        "class_table_params": cond.numel(),
        "head_params": cond.shape[1] * classes + classes,
        "peak_rss_bytes": peak,
    }
    shutil.rmtree(work, ignore_errors=True)
    return row


def run(cfg: ClassScalingConfig, out: str | Path | None = None) -> dict:
    rows = [measure(c, cfg) for c in cfg.classes]
    config = asdict(cfg)
    config["overrides"] = SMALL
    config["command"] = "gencond condense --preset imagenet64-ipc10 (small widths, see overrides)"
    path = Path(out) if out else RESULTS_DIR / "class_scaling_cpu.json"
    return write_result(path, config, rows, benchmark="classes")
