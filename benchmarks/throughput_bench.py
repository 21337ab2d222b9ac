"""`gencond bench throughput`: one condensation step of ours and of each pixel baseline at
CIFAR-10, Tiny-ImageNet and ImageNet-1K shapes, in the same run.

Each (method, shape, IPC) point runs in its own spawned child process, so its peak memory is
its own: CUDA max_memory_allocated on a GPU, the child's peak RSS (VmHWM) on a CPU, next to
the RSS the child had before building anything (`base_rss_bytes`: interpreter + torch). The
learnable state is allocated at full size (every class x IPC); the real data is generated noise
made on demand (speed does not depend on pixel values) and MTT's experts are random parameter
vectors for the same reason.

Time: every method's work is linear in the classes it touches per step, so a step is timed on
`timed_classes` classes (median over `repeats` after `warmup`) and the sweep over every class
is extrapolated from it; rows say so (`sweep_from`). A sweep is the same work for every method
(SWEEP): every synthetic image of every class updated once, so `images_per_s` (classes x IPC
over the sweep's seconds) compares. In steps:
  ours   classes / classes_per_step generator steps (+ one phi update per gen_steps steps)
  dm     one iteration (every class matched once)
  dsa    one image update of every class + the network training DC does after it
         (inner_loop epochs over the synthetic set, skipped after the last of outer_loop)
  mtt    ceil(classes x IPC / (syn_steps x batch_syn)) iterations (every synthetic image used
         once); an iteration is timed with `timed_syn_steps` student steps and scaled linearly
FLOPs are counted, not modelled, for every method alike: torch's FlopCounterMode over one call
of the same step functions that are timed (matmuls and convolutions, forward and backward),
scaled to a sweep the way its time is. MFU is those FLOPs over the sweep's seconds against the
fp32 peak `gencond bench peak` recorded on this machine (none where there is none).
MTT's memory grows with syn_steps: it is measured at 1 and 2 student steps and extrapolated
linearly (`peak_mem_from`: "extrapolated"); TESLA's should not grow, and is extrapolated the same
way so that the claim is checked, not assumed.

A point that does not fit reports `fits: false` and why: the pixel / gradient / momentum state
alone over --mem-limit-gb (predicted, not attempted), an allocation failure under the limit
(the child's RLIMIT_DATA on CPU, torch.cuda.OutOfMemoryError on GPU), a killed child or a child
over its time limit.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.config import SHAPES, ThroughputConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log, progress_bar

GIB = 1 << 30
SWEEP = (
    "a sweep = every synthetic image of every class updated once (ours: classes / "
    "classes_per_step generator steps + their phi updates; DM: one iteration; DSA: one "
    "image update of every class + DC's network training; MTT / TESLA: ceil(classes x IPC "
    "/ (syn_steps x batch_syn)) iterations)"
)


@dataclass(frozen=True)
class Point:
    method: str
    shape: str
    ipc: int
    channels: int
    image_size: int
    classes: int
    width: int  # matching / feature net width (128 in every paper)
    dataset: str


def points(cfg: ThroughputConfig) -> list[Point]:
    out = []
    for shape in cfg.shapes:
        channels, size, classes, dataset = SHAPES[shape]
        size = cfg.shrink.get("image_size", size)
        classes = cfg.shrink.get("classes", classes)
        width = cfg.shrink.get("width", 128)
        for ipc in cfg.ipcs:
            for method in cfg.methods:
                out.append(Point(method, shape, ipc, channels, size, classes, width, dataset))
    return out


def throughput_row(point: Point, measured: dict) -> dict:
    """The one place a result row is built."""
    row = {
        "method": point.method,
        "shape": point.shape,
        "classes": point.classes,
        "ipc": point.ipc,
        "image_size": point.image_size,
        "params": measured.get("params"),
        "bytes": measured.get("bytes"),
        "fits": measured.get("fits", True),
        "step_s": measured.get("step_s"),
        "sweep_s": measured.get("sweep_s"),
        "images_per_s": None,
        "peak_mem_bytes": measured.get("peak_mem_bytes"),
        "base_rss_bytes": measured.get("base_rss_bytes"),
        "mfu": None,
    }
    if row["sweep_s"]:
        row["images_per_s"] = point.classes * point.ipc / row["sweep_s"]
    # counted FLOPs over the measured sweep, against the peak `gencond bench peak` recorded on
    # this machine (None where there is none)
    if measured.get("flops_per_sweep") and row["sweep_s"]:
        from benchmarks.peak import recorded_peak_tflops

        row["flops_per_step"] = measured["flops_per_step"]
        row["flops_per_sweep"] = measured["flops_per_sweep"]
        row["flops_per_image"] = measured["flops_per_sweep"] / (point.classes * point.ipc)
        row["tflops"] = measured["flops_per_sweep"] / row["sweep_s"] / 1e12
        peak = recorded_peak_tflops("fp32")
        row["mfu"] = row["tflops"] / peak if peak else None
    for key in (
        "step_covers",
        "sweep_from",
        "peak_mem_from",
        "reason",
        "note",
        "cost_model_flops_per_sweep",
    ):
        if measured.get(key) is not None:
            row[key] = measured[key]
    return row


# ---- in the child ---------------------------------------------------------------------------


def _limit_memory(limit_bytes: int, device: str) -> None:
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit_bytes / total))
    else:  # anonymous memory (torch's CPU allocations included) beyond the soft limit fails
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def _unlimit_memory(device: str) -> None:
    """Lift the soft limit again, so that reporting (a queue thread) cannot fail."""
    if not device.startswith("cuda"):
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated()
    return _peak_rss()


def _peak_rss() -> int:
    """This process's peak resident set: VmHWM (reset by exec, so a spawned child's own), else
    ru_maxrss (which Linux carries over exec from the parent: a child would report at least
    the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _median_time(fn, cfg: ThroughputConfig) -> float:
    for i in range(cfg.warmup):
        fn(i)
    times = []
    for i in range(cfg.repeats):
        _sync(cfg.device)
        start = time.perf_counter()
        fn(cfg.warmup + i)
        _sync(cfg.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _count_flops(fn, i: int) -> float:
    """FLOPs of one call of fn(i) (torch's FlopCounterMode: matmuls and convolutions, forward
    and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(i)
    return float(counter.get_total_flops())


def _measure_ours(p: Point, cfg: ThroughputConfig) -> dict:
    import torch

    from engine.augment import DiffAugment
    from engine.class_plan import ClassPlan
    from engine.generator import Generator
    from engine.nets import ConvNet
    from engine.presets import PRESETS, load_preset
    from engine.step import StepInput, StepModules, condense_step, phi_update

    name = (
        f"{p.dataset}-ipc{p.ipc}" if f"{p.dataset}-ipc{p.ipc}" in PRESETS else f"{p.dataset}-ipc10"
    )
    run = load_preset(name, [f"device={cfg.device}", f"ipc={p.ipc}"])
    c = run.condense
    if "width" in cfg.shrink:
        run.gan.width, c.phi_width, run.teacher.width = cfg.shrink["width"], p.width, p.width
    device = torch.device(cfg.device)
    meta = _Meta(p.channels, p.classes, p.image_size)
    torch.manual_seed(cfg.seed)
    gen = Generator(
        run.gan.z_dim,
        run.teacher.width,
        run.gan.proj_dim,
        p.channels,
        p.image_size,
        run.gan.width,
        [0.5] * p.channels,
        [0.25] * p.channels,
    )
    conditions = torch.randn(p.classes, run.teacher.width)
    teacher = None
    if c.soft_labels or c.classifier == "teacher":
        teacher = ConvNet(p.channels, p.classes, p.image_size, width=run.teacher.width).to(device)
        teacher.eval().requires_grad_(False)
    m = StepModules(run, meta, gen, conditions, device)
    augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
    timed = list(range(min(cfg.timed_classes, p.classes)))
    n_real = c.ipc * c.assoc_per_image
    real = torch.randn(len(timed) * n_real, p.channels, p.image_size, p.image_size, device=device)
    labels = torch.as_tensor(timed, device=device).repeat_interleave(n_real)

    def one_step(i: int) -> None:
        batch = StepInput(i, timed, timed, real, labels)
        condense_step(cfg=run, m=m, teacher=teacher, augment=augment, batch=batch)

    step_s = _median_time(one_step, cfg)
    x_phi = torch.randn(c.phi_batch, p.channels, p.image_size, p.image_size, device=device)
    y_phi = torch.randint(p.classes, (c.phi_batch,), device=device)

    def one_phi_update(i: int) -> None:  # the engine's own phi step
        phi_update(run, m, x_phi, y_phi)

    phi_s = _median_time(one_phi_update, cfg)
    plan = ClassPlan.of(c, p.classes, run.seed)
    steps = plan.sweep_steps  # the engine's schedule: every class once
    sweep = step_s / len(timed) * p.classes + steps / c.gen_steps * phi_s
    learned = [m.codebook] + (list(m.G.parameters()) if c.finetune_generator else [])
    from benchmarks.cost_model import condense_step_cost, steps_per_sweep

    modelled = condense_step_cost(run, p.channels, p.image_size, p.classes).flops
    step_flops, phi_flops = _count_flops(one_step, 0), _count_flops(one_phi_update, 0)
    stored = sum(t.numel() for t in [m.codebook, *m.G.parameters(), conditions])
    return {
        "params": sum(t.numel() for t in learned),
        "bytes": stored * 4,
        "step_s": step_s,
        "sweep_s": sweep,
        "step_covers": f"{len(timed)} of {plan.largest} classes of a step",
        "flops_per_step": step_flops,
        "flops_per_sweep": (step_flops / len(timed) * p.classes + steps / c.gen_steps * phi_flops),
        "cost_model_flops_per_sweep": modelled * steps_per_sweep(run, p.classes),
        "sweep_from": f"whole {len(timed)}-class steps (per-step part included: an upper "
        f"bound) x {p.classes} classes + {steps}/"
        f"{c.gen_steps} phi updates ({phi_s:.3g} s each)",
        "note": f"preset {run.preset}; generator G, codebook and class conditions stored; "
        f"learned: codebook{' + G' if c.finetune_generator else ''}",
    }


class _Meta:
    def __init__(self, channels: int, num_classes: int, image_size: int):
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size


def _build_baseline(p: Point, cfg: ThroughputConfig, overrides: dict | None = None):
    from benchmarks.baselines.base import NoisePool, SetShape
    from benchmarks.baselines.mtt import random_trajectories
    from benchmarks.baselines.presets import build_condenser, load_baseline_preset

    preset = load_baseline_preset(
        p.method, p.dataset, p.ipc, "paper", {"net_width": p.width, **(overrides or {})}
    )
    shape = SetShape(p.classes, p.ipc, p.channels, p.image_size)
    trajectories = (
        random_trajectories(shape, preset.config, cfg.seed)
        if p.method in ("mtt", "tesla")
        else None
    )
    condenser = build_condenser(preset, shape, cfg.seed, cfg.device, trajectories)
    pool = NoisePool(p.channels, p.image_size, cfg.device)
    condenser.init_from(pool, "noise")
    return preset, condenser, pool


def _measure_baseline(p: Point, cfg: ThroughputConfig) -> dict:
    timed = list(range(min(cfg.timed_classes, p.classes)))
    n_syn = p.classes * p.ipc
    if p.method in ("mtt", "tesla"):
        return _measure_mtt(p, cfg, n_syn)
    preset, condenser, pool = _build_baseline(p, cfg)
    out = {"params": condenser.params, "bytes": condenser.bytes}
    # a step = a per-step part (zeroing the full-size gradient, the SGD update of every pixel,
    # DM's fresh network) + a per-class part; both timed, only the per-class part scaled
    if p.method == "dm":
        update = lambda i, classes: condenser.step(i, pool, classes)  # noqa: E731
    else:
        condenser.net = condenser.fresh_net(0)
        condenser.net_opt = __import__("torch").optim.SGD(condenser.net.parameters(), lr=0.01)
        update = lambda i, classes: condenser.match(i, pool, classes)  # noqa: E731
    out["step_s"] = _median_time(lambda i: update(i, timed), cfg)
    fixed_s = min(out["step_s"], _median_time(lambda i: update(i, []), cfg))
    per_class = (out["step_s"] - fixed_s) / len(timed)
    out["sweep_s"] = fixed_s + per_class * p.classes
    out["flops_per_step"] = _count_flops(lambda i: update(i, timed), 0)
    fixed_flops = min(out["flops_per_step"], _count_flops(lambda i: update(i, []), 0))
    per_class_flops = (out["flops_per_step"] - fixed_flops) / len(timed)
    out["flops_per_sweep"] = fixed_flops + per_class_flops * p.classes
    out["sweep_from"] = (
        f"per-step part {fixed_s:.3g} s + {len(timed)}-class part scaled to {p.classes} classes"
    )
    if p.method != "dm":  # DSA: plus the network's training on the synthetic set
        batch_s = _median_time(lambda i: condenser.train_net(i, 1, max_batches=1), cfg)
        batches = math.ceil(n_syn / preset.config.batch_train)
        outer, inner = condenser.outer_loop, condenser.inner_loop
        out["sweep_s"] += batch_s * batches * inner * (outer - 1) / outer
        batch_flops = _count_flops(lambda i: condenser.train_net(i, 1, max_batches=1), 0)
        out["flops_per_sweep"] += batch_flops * batches * inner * (outer - 1) / outer
        out["sweep_from"] += (
            f" + {inner} x {batches} net batches x {outer - 1}/{outer} ({batch_s:.3g} s each)"
        )
    out["step_covers"] = f"{len(timed)} classes"
    out["peak_mem_bytes"] = _peak_bytes(cfg.device)
    return out


def _measure_mtt(p: Point, cfg: ThroughputConfig, n_syn: int) -> dict:
    from benchmarks.baselines.presets import load_baseline_preset

    full = load_baseline_preset(p.method, p.dataset, p.ipc, "paper").config
    batch = full.batch_syn or n_syn
    peaks, step_s = [], None
    condenser = _build_baseline(p, cfg, {"syn_steps": 1})[1]
    condenser.step(0)  # untimed: the gradient and momentum buffers exist before both peaks
    # two step counts >= 2: from the second student step on, backward also holds a full-size
    # image-gradient temporary (accumulation into .grad), so 1 -> 2 is not the per-step slope
    low = min(max(2, cfg.timed_syn_steps - 1), full.syn_steps)
    for steps in sorted({low, min(low + 1, full.syn_steps)}):
        # the same condenser (state allocated once): the peak grows only by the student graph
        condenser.cfg.syn_steps = steps
        if cfg.device.startswith("cuda"):
            __import__("torch").cuda.reset_peak_memory_stats()
        step_s = _median_time(condenser.step, cfg)
        peaks.append((steps, _peak_bytes(cfg.device)))
    flops_timed = _count_flops(condenser.step, 0)  # at the larger timed step count
    params, nbytes = condenser.params, condenser.bytes
    (s1, m1), (s2, m2) = peaks[0], peaks[-1]
    slope = (m2 - m1) / (s2 - s1) if s2 > s1 else 0.0
    peak = int(m2 + slope * (full.syn_steps - s2))
    iterations = math.ceil(n_syn / (full.syn_steps * batch))
    per_iteration = step_s / s2 * full.syn_steps
    gib1, gib2 = m1 / GIB, m2 / GIB
    flops_per_iteration = flops_timed / s2 * full.syn_steps
    out = {
        "params": params,
        "bytes": nbytes,
        "step_s": per_iteration,
        "sweep_s": per_iteration * iterations,
        "peak_mem_bytes": peak,
        "flops_per_step": flops_per_iteration,
        "flops_per_sweep": flops_per_iteration * iterations,
        "step_covers": f"one iteration: {full.syn_steps} student steps of {batch} images",
        "sweep_from": f"{s2} timed student steps scaled to {full.syn_steps}, x {iterations} "
        f"iterations",
        "peak_mem_from": f"extrapolated from {s1} and {s2} student steps ("
        f"{gib1:.2f}, {gib2:.2f} GiB) to {full.syn_steps}",
    }
    limit = cfg.mem_limit_gb * GIB
    if peak > limit:
        out.update(
            fits=False,
            reason=f"extrapolated peak {peak / GIB:.1f} GiB over the "
            f"{cfg.mem_limit_gb:.1f} GiB limit at syn_steps={full.syn_steps}",
        )
    return out


def _child(p: Point, cfg: ThroughputConfig, results) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    out: dict = {}
    try:
        out["base_rss_bytes"] = _peak_rss()
        _limit_memory(int(cfg.mem_limit_gb * GIB), cfg.device)
        out.update(_measure_ours(p, cfg) if p.method == "ours" else _measure_baseline(p, cfg))
        out.setdefault("peak_mem_bytes", _peak_bytes(cfg.device))
    except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        if "memory" not in text.lower() and not isinstance(e, MemoryError):
            out.update(fits=None, reason=f"error: {text}")
        else:
            out.update(
                fits=False,
                reason=f"out of memory under the {cfg.mem_limit_gb:.1f} GiB limit: {text}",
                peak_mem_bytes=_peak_bytes(cfg.device),
            )
    except Exception as e:  # any other failure is a row, never a crash of the bench
        out.update(fits=None, reason=f"error: {type(e).__name__}: {str(e)[:300]}")
    _unlimit_memory(cfg.device)
    results.put(out)


# ---- in the parent --------------------------------------------------------------------------


def predicted_state_bytes(p: Point) -> int:
    """Pixels, their gradient and SGD momentum: what a pixel method holds at the least."""
    if p.method == "ours":
        return 0
    return 3 * 4 * p.classes * p.ipc * p.channels * p.image_size**2


def measure(p: Point, cfg: ThroughputConfig) -> dict:
    out = _measure_in_child(p, cfg)
    if p.method != "ours" and out.get("params") is None:  # counted, not measured
        pixels = p.classes * p.ipc * p.channels * p.image_size**2
        extra = 1 if p.method in ("mtt", "tesla") else 0  # the learned learning rate
        out.update(params=pixels + extra, bytes=4 * (pixels + extra))
    return out


def _measure_in_child(p: Point, cfg: ThroughputConfig) -> dict:
    state = predicted_state_bytes(p)
    limit = cfg.mem_limit_gb * GIB
    if state > limit:
        return {
            "fits": False,
            "peak_mem_from": "predicted",
            "reason": f"pixels + gradient + momentum alone need {state / GIB:.1f} GiB, over "
            f"the {cfg.mem_limit_gb:.1f} GiB limit (not attempted)",
        }
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_child, args=(p, cfg, results), daemon=True)
    # a fixed mmap threshold: glibc returns freed large blocks at once, so the child's peak RSS
    # follows its live memory instead of the allocator's fragmentation
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    try:
        child.start()
    finally:
        if saved is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    deadline = time.monotonic() + cfg.point_timeout_s
    out = None
    while out is None:
        try:
            out = results.get(timeout=1.0)
        except queue.Empty:
            if not child.is_alive() and child.exitcode == -9:
                out = {
                    "fits": False,
                    "reason": "child killed (SIGKILL: the kernel's "
                    "out-of-memory killer, most likely)",
                }
            elif not child.is_alive():
                out = {"fits": None, "reason": f"child exited with status {child.exitcode}"}
            elif time.monotonic() > deadline:
                child.kill()
                out = {
                    "fits": None,
                    "reason": f"over the {cfg.point_timeout_s:.0f} s limit "
                    "per point (not measured)",
                }
    child.join(timeout=10)
    return out


def measure_all(todo: list[Point], cfg: ThroughputConfig, title: str, on_row=None) -> list[dict]:
    """A row per point (each in its own child), with baseline / ours ratios; `on_row(rows)`
    after each point (the runs write partial result files with it)."""
    rows = []
    with progress_bar() as bar:
        task = bar.add_task(title, total=len(todo))
        for p in todo:
            bar.update(
                task, description=f"{p.method} {p.classes} classes {p.image_size} px IPC {p.ipc}"
            )
            rows.append(throughput_row(p, measure(p, cfg)))
            bar.advance(task)
            if on_row:
                on_row(rows)
    add_ratios(rows)
    return rows


def run(cfg: ThroughputConfig, out: str | Path | None = None) -> dict:
    cfg.check()
    began = time.perf_counter()
    config = asdict(cfg)
    config["load_average_start"] = os.getloadavg()
    path = Path(out) if out else RESULTS_DIR / f"throughput_{cfg.device.split(':')[0]}.json"

    def save(rows: list[dict], complete: bool) -> dict:
        payload = write_result(
            path,
            config,
            rows,
            benchmark="throughput",
            complete=complete,
            load_average_end=os.getloadavg(),
            wall_s=round(time.perf_counter() - began, 1),
        )
        path.with_suffix(".md").write_text(markdown(payload))
        return payload

    rows = measure_all(points(cfg), cfg, "Throughput points", lambda r: save(r, False))
    log(f"{len(rows)} points in {time.perf_counter() - began:.0f} s")
    return save(rows, True)


def add_ratios(rows: list[dict]) -> None:
    """Each baseline row gets <quantity>_vs_ours = baseline / ours at the same shape and IPC."""
    ours = {(r["shape"], r["ipc"]): r for r in rows if r["method"] == "ours"}
    for r in rows:
        mine = ours.get((r["shape"], r["ipc"]))
        if r["method"] == "ours" or mine is None:
            continue
        for key in ("params", "bytes", "peak_mem_bytes", "sweep_s"):
            a, b = r.get(key), mine.get(key)
            ok = a and b and r.get("fits") is not False and mine.get("fits") is not False
            r[f"{key}_vs_ours"] = a / b if ok else None


def _human(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "bytes":
        return f"{value / GIB:.3g} GiB" if value >= GIB / 10 else f"{value / (1 << 20):.3g} MiB"
    if kind == "s":
        return f"{value:.3g} s" if value < 3600 else f"{value / 3600:.3g} h"
    if kind == "x":
        return f"{value:.3g}x"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3g}"


def markdown(payload: dict) -> str:
    partial = "" if payload.get("complete", True) else " **Partial: the run has not finished.**"
    lines = [
        f"# Throughput: ours vs pixel baselines ({payload['machine']}, torch "
        f"{payload['torch']}, commit {payload['commit']})",
        "",
        f"Created {payload['created']}; load average at start "
        f"{payload['config'].get('load_average_start')}. Steps timed on "
        f"{payload['config']['timed_classes']} class(es); sweeps extrapolated (see "
        "`sweep_from` in the JSON). Ratios: baseline / ours." + partial,
        "",
        f"The same work for every method: {SWEEP}. images/s = classes x IPC / sweep; "
        "GFLOP: counted (torch FlopCounterMode) over the same calls; MFU against the "
        "recorded fp32 peak.",
        "",
        "| shape | IPC | method | params | bytes | step | sweep | images/s | GFLOP/sweep | "
        "MFU | peak mem | params x | mem x | sweep x | fits |",
        "|" + " --- |" * 15,
    ]
    for r in payload["rows"]:
        fits = {True: "yes", False: "no", None: "?"}[r.get("fits")]
        gflop = r["flops_per_sweep"] / 1e9 if r.get("flops_per_sweep") else None
        mfu = "-" if r.get("mfu") is None else f"{r['mfu']:.1%}"
        lines.append(
            f"| {r['shape']} | {r['ipc']} | {r['method']} | {_human(r['params'], 'n')} | "
            f"{_human(r['bytes'], 'bytes')} | {_human(r['step_s'], 's')} | "
            f"{_human(r['sweep_s'], 's')} | {_human(r['images_per_s'], 'n')} | "
            f"{_human(gflop, 'n')} | {mfu} | "
            f"{_human(r['peak_mem_bytes'], 'bytes')} | {_human(r.get('params_vs_ours'), 'x')} | "
            f"{_human(r.get('peak_mem_bytes_vs_ours'), 'x')} | "
            f"{_human(r.get('sweep_s_vs_ours'), 'x')} | {fits} |"
        )
    reasons = [r for r in payload["rows"] if r.get("reason")]
    if reasons:
        lines += ["", "Points that did not fit or were not measured:", ""]
        lines += [f"- {r['method']} {r['shape']} IPC {r['ipc']}: {r['reason']}" for r in reasons]
    return "\n".join(lines) + "\n"


def merge_results(
    paths: list[str | Path], out: str | Path, drop: dict[str, set] | None = None
) -> dict:
    """One result file from several runs' files (rows concatenated, ratios recomputed); rows
    of file f whose (method, shape, ipc) are in drop[f] are left out (superseded by a later
    run), and each source's provenance is kept under `merged_from`."""
    drop = drop or {}
    import json

    rows, sources = [], []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        keys = ("machine", "torch", "commit", "created", "complete", "config")
        sources.append(
            {k: payload.get(k) for k in keys}
            | {"file": str(path), "dropped": sorted(map(list, drop.get(str(path), set())))}
        )
        for r in payload["rows"]:
            if (r["method"], r["shape"], r["ipc"]) not in drop.get(str(path), set()):
                rows.append({k: v for k, v in r.items() if not k.endswith("_vs_ours")})
    add_ratios(rows)
    out = Path(out)
    merged = write_result(
        out, {"merged": [str(p) for p in paths]}, rows, benchmark="throughput", merged_from=sources
    )
    out.with_suffix(".md").write_text(markdown({**merged, "config": sources[0]["config"]}))
    return merged
