"""`gencond bench speed`: the speed switches (condense.precision, channels_last,
compile, fused_optimizer), each timed against the reference step on the same shape, in-process,
on generated data (no dataset needed: real images are random tensors of the right shape).

Also holds StepHarness, the in-process condensation step the profile benchmark, the tests and
the GPU script share.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from benchmarks import cost_model
from benchmarks.config import VARIANTS, SpeedConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log
from data_prep.meta import DatasetMeta
from engine.augment import DiffAugment
from engine.config import RunConfig
from engine.gan import build_generator
from engine.nets import ConvNet, reinit_
from engine.step import (
    PHI_STREAM,
    StepInput,
    StepModules,
    condense_step,
    keyed_generator,
    phi_update,
)


def fake_meta(channels: int, image_size: int, num_classes: int) -> DatasetMeta:
    return DatasetMeta(
        dataset="generated",
        num_classes=num_classes,
        image_size=image_size,
        channels=channels,
        train_count=0,
        test_count=0,
        train_class_counts=[],
        test_class_counts=[],
        mean=[0.5] * channels,
        std=[0.25] * channels,
        class_names=[],
        sources=[],
    )


def tiny_config(**condense) -> RunConfig:
    """The smallest step with every part of the real one (tests and CPU smoke runs)."""
    cfg = RunConfig()
    cfg.teacher.width, cfg.gan.width, cfg.gan.z_dim, cfg.gan.proj_dim = 8, 4, 8, 4
    c = cfg.condense
    c.ipc, c.phi_width, c.assoc_per_image, c.phi_batch, c.gen_steps = 3, 8, 2, 16, 2
    for key, value in condense.items():
        setattr(c, key, value)
    cfg.validate()
    return cfg


@dataclass
class StepHarness:
    """One condensation step of `cfg` on generated tensors: `step(i)` runs condense_step and,
    every gen_steps steps, phi's update, exactly as the loop of engine.condense does."""

    cfg: RunConfig
    channels: int
    image_size: int
    num_classes: int
    device: str = "cpu"
    seed: int = 0
    m: StepModules = field(init=False)

    def __post_init__(self) -> None:
        cfg, dev = self.cfg, torch.device(self.device)
        c = cfg.condense
        meta = fake_meta(self.channels, self.image_size, self.num_classes)
        gen = torch.Generator().manual_seed(self.seed)
        cond_dim = self.num_classes if cfg.gan.condition == "one_hot" else cfg.teacher.width
        conditions = torch.randn(self.num_classes, cond_dim, generator=gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            G = build_generator(meta, cfg.gan, cond_dim).eval()
            teacher = ConvNet(
                self.channels, self.num_classes, self.image_size, width=cfg.teacher.width
            )
        self.teacher = teacher.to(dev).eval().requires_grad_(False)
        self.m = StepModules(cfg, meta, G, conditions, dev)
        # as the loop's first step does
        reinit_(self.m.phi, keyed_generator(cfg.seed, PHI_STREAM, 0))
        self.augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
        classes, _, n_real = cost_model.step_sizes(cfg, self.num_classes)
        self.classes = list(range(classes))
        shape = (self.channels, self.image_size, self.image_size)
        self.real = torch.randn(n_real, *shape, generator=gen).to(dev)
        per_class = c.ipc * c.assoc_per_image
        self.real_labels = torch.arange(classes).repeat_interleave(per_class).to(dev)
        self.phi_x = torch.randn(c.phi_batch, *shape, generator=gen).to(dev)
        self.phi_y = torch.randint(0, self.num_classes, (c.phi_batch,), generator=gen).to(dev)

    def step(self, i: int, phi: bool | None = None) -> dict:
        """Step i; phi's update follows when i closes a group of gen_steps (or when `phi`)."""
        batch = StepInput(i, self.classes, self.classes, self.real, self.real_labels)
        record = condense_step(
            cfg=self.cfg, m=self.m, teacher=self.teacher, augment=self.augment, batch=batch
        )
        M = self.cfg.condense.gen_steps
        if phi if phi is not None else i % M == M - 1 and self.cfg.condense.phi_trains:
            phi_update(self.cfg, self.m, self.phi_x, self.phi_y)
        return record

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


# --- the benchmark ---------------------------------------------------------------------------


class _Timer:
    """Seconds of a region: CUDA events on CUDA (after the queue drains), else perf_counter."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


def time_step(h: StepHarness, repeats: int, warmup: int, start: int = 0) -> dict:
    """Median seconds of condense_step and of phi's update; a loop step costs
    step + phi / gen_steps. Also peak device memory (CUDA) over the timed steps."""
    cuda = h.device.startswith("cuda")
    timer, i = _Timer(cuda), start
    for _ in range(warmup):
        h.step(i, phi=True)
        i += 1
    h.sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    steps, phis, losses = [], [], []
    for _ in range(repeats):
        record: dict = {}
        steps.append(timer(lambda i=i, r=record: r.update(h.step(i, phi=False))))
        phis.append(timer(lambda: phi_update(h.cfg, h.m, h.phi_x, h.phi_y)))
        losses.append(record["loss"])
        i += 1
    step_s, phi_s = statistics.median(steps), statistics.median(phis)
    c = h.cfg.condense
    per_step = 1 / c.gen_steps if c.phi_trains else 0.0  # phi's updates a step
    return {
        "step_s": step_s + phi_s * per_step,
        "zg_dh_s": step_s,
        "min_step_s": min(steps) + min(phis) * per_step,
        "phi_update_s": phi_s,
        "step_s_all": steps,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "losses": losses,
    }


def _peak_rows(path: str) -> list[dict]:
    import json

    return json.loads(Path(path).read_text())["rows"] if path else []


def run(cfg: SpeedConfig, out: Path | None = None) -> dict:
    from benchmarks.peak import peak_tflops
    from engine.presets import load_preset

    peaks = _peak_rows(cfg.peak_json)
    kind = "cuda" if cfg.device.startswith("cuda") else "cpu"
    note = (
        "CPU measurement: the issue-7 targets are GPU ones" if kind == "cpu" else "GPU measurement"
    )
    path = out or RESULTS_DIR / f"speed_switches_{kind}.json"
    rows, reference, payload = [], None, {}
    # the reference once more at the end: the spread of one version timed twice
    order = [*cfg.variants, "reference"] if "reference" in cfg.variants else cfg.variants
    for k, name in enumerate(order):
        run_cfg = load_preset(cfg.preset, [*cfg.overrides, *VARIANTS[name]])
        run_cfg.device = cfg.device
        with torch.random.fork_rng(devices=[]):
            h = StepHarness(run_cfg, cfg.channels, cfg.image_size, cfg.num_classes, cfg.device)
            timing = time_step(h, cfg.repeats, cfg.warmup)
        cost = cost_model.condense_step_cost(run_cfg, cfg.channels, cfg.image_size, cfg.num_classes)
        peak = peak_tflops(peaks, run_cfg.condense.precision, cfg.device) if peaks else None
        achieved = cost.flops / timing["step_s"]
        reference = reference or timing["step_s"]
        label = name if k < len(cfg.variants) else "reference (again)"
        row = {
            "variant": label,
            "overrides": VARIANTS[name],
            **timing,
            "speedup": reference / timing["step_s"],
            "flops_per_step": cost.flops,
            "bytes_per_step": cost.bytes,
            "tflops": achieved / 1e12,
            "mfu": achieved / (peak * 1e12) if peak else None,
            "peak_tflops": peak,
        }
        rows.append(row)
        mfu = f", MFU {row['mfu']:.1%}" if row["mfu"] is not None else ""
        log(
            f"{label:>26}: {row['step_s']:.3f} s/step (x{row['speedup']:.2f}), "
            f"{achieved / 1e9:.1f} GFLOP/s{mfu}"
        )
        del h
        # after every variant, so that a run stopped by a time limit keeps what it measured
        payload = write_result(
            path,
            asdict(cfg),
            rows,
            note=note,
            complete=k == len(order) - 1,
            torch_threads=torch.get_num_threads(),
            load_average=os.getloadavg(),
        )
    return payload
