"""`gencond bench prep`: convert a generated ImageNet-64 npz set (the real file format) with
`gencond prep imagenet64` in a child process, and record wall time and peak memory.

Memory is sampled every 0.1 s as the sum over the whole process tree of RssAnon (anonymous
resident memory: what the conversion itself holds; memory-mapped staging files and the page
cache are file-backed and reclaimable, so they are not counted) and, separately, total RSS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil

from benchmarks.config import PrepBenchConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log, progress_bar


def write_npz_set(folder: Path, cfg: PrepBenchConfig, batches: int) -> int:
    """train_data_batch_{1..B}.npz + val_data.npz: data (N, 12288) channel-major, labels 1..1000."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    total = 0
    with progress_bar(transient=True) as bar:
        task = bar.add_task("Generating npz batches", total=batches + 1)
        for b in range(1, batches + 2):
            n = cfg.images_per_batch if b <= batches else cfg.val_images
            name = f"train_data_batch_{b}.npz" if b <= batches else "val_data.npz"
            labels = rng.permutation(np.arange(n) % 1000) + 1
            data = rng.integers(0, 256, (n, 12288), dtype=np.uint8)
            np.savez(folder / name, data=data, labels=list(labels))
            total += data.nbytes
            bar.advance(task)
    return total


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    anon = rss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except (OSError, psutil.Error):
            pass
    return anon, rss


def _idle_anon_bytes() -> int:
    """RssAnon of a process that has only imported what `gencond prep` imports."""
    code = (
        "import data_prep.prepare, data_prep.beton, pathlib; print(next(l.split()[1] for l in "
        "pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('RssAnon')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout) * 1024


def convert(cfg: PrepBenchConfig, batches: int) -> dict:
    work = Path(cfg.workdir)
    src, dst = work / "npz", work / "prepared"
    shutil.rmtree(work, ignore_errors=True)
    log(f"Writing {batches} npz batches of {cfg.images_per_batch} images + val")
    raw_bytes = write_npz_set(src, cfg, batches)
    cmd = [
        sys.executable,
        "-m",
        "launch.cli",
        "prep",
        "imagenet64",
        "--source",
        str(src),
        "--out",
        str(dst),
        "--workers",
        str(cfg.workers),
    ]
    log(f"Converting ({' '.join(cmd[3:6])} ...)")
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    peak_anon = peak_rss = peak_procs = 0
    while child.poll() is None:
        anon, rss = tree_memory(proc)
        peak_anon, peak_rss = max(peak_anon, anon), max(peak_rss, rss)
        try:
            peak_procs = max(peak_procs, 1 + len(proc.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"gencond prep failed: {child.stderr.read()[-2000:]}")
    images = batches * cfg.images_per_batch + cfg.val_images
    beton_bytes = (dst / "train.beton").stat().st_size + (dst / "test.beton").stat().st_size
    shutil.rmtree(work, ignore_errors=True)
    return {
        "npz_batches": batches,
        "images": images,
        "raw_bytes": raw_bytes,
        "seconds": round(elapsed, 2),
        "images_per_s": round(images / elapsed, 1),
        "peak_anon_bytes": peak_anon,
        "peak_rss_bytes": peak_rss,
        "peak_processes": peak_procs,
        "npz_batch_bytes": cfg.images_per_batch * 12288,
        "beton_bytes": beton_bytes,
    }


def run(cfg: PrepBenchConfig, out: str | Path | None = None) -> dict:
    rows = [convert(cfg, b) for b in cfg.batches]
    config = asdict(cfg)
    config["command"] = "gencond prep imagenet64 --source NPZ_DIR --out DIR --workers N"
    path = Path(out) if out else RESULTS_DIR / "prep_imagenet64_cpu.json"
    return write_result(
        path, config, rows, benchmark="prep", idle_process_anon_bytes=_idle_anon_bytes()
    )
