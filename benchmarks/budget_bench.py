"""`gencond bench budget`: what a wall-clock budget buys. Each method runs alone, from zero, on
one dataset at one IPC, and its set is snapshotted when the clock passes each mark; every
snapshot is trained on with the engine's evaluation protocol (eval.*: ConvNet-3 width 128, 300
epochs, the field's DSA, final epoch) over several seeds. Random real and herding are the
zero-cost lines.

- ours: the faithful smoke preset, its pretraining counted (`gencond pretrain`, then
  `gencond condense` in chunks of `ours_chunk` steps, resuming from its checkpoint; the set at a
  mark is the one that existed when the clock passed it: G(codebook) after the last chunk that
  ended before the mark, or no set). A schedule that ends before the last mark gives its final
  set to the later marks (`finished_s` says when).
- dm / dsa / mtt: the pixel baselines with their papers' settings (`budget=paper`), MTT's
  expert trajectories counted; the set at a mark is the pixel tensor after the update that
  crossed it. The condenser's whole state is saved with each snapshot, so an interrupted run
  resumes from its last snapshot (the clock resumes from there too).

Every snapshot and every (method, mark, seed) accuracy is written as soon as it exists (the
accuracies as one file each under WORK/rows/), and a rerun skips them. `phase` splits the work:
`condense` only makes snapshots, `evaluate` only trains on them (`shard` K/N takes every N-th
evaluation, so several processes share them safely), `all` does both, `report` only rebuilds
the result files from the rows. Each snapshot records the
threads, CPUs and load average it ran with. Writes RESULT.json, RESULT.md and RESULT.png
(accuracy against wall-clock) from every row in WORK.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.config import BUDGET_METHODS as METHODS
from benchmarks.config import BudgetConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.errors import ConfigError

NO_SET_OURS = "no set yet: the mark passed while G was pretrained"
NO_SET_FIRST = "no set yet: the mark passed before ours' first chunk of condensation ended"
NO_SET_MTT = "no set yet: the mark passed while the expert trajectories were trained"


def _snap_path(cfg: BudgetConfig, method: str, mark: float) -> Path:
    return Path(cfg.workdir) / method / f"snapshot_{mark:g}min.pt"


def _save_snapshot(cfg, method, mark, images, labels, elapsed, info, state=None) -> None:
    from common import fsio

    payload = {
        "images": None if images is None else images.detach().cpu(),
        "labels": None if labels is None else labels.cpu(),
        "elapsed_s": elapsed,
        "mark_min": mark,
        "info": info,
        "state": state,
    }
    fsio.save_torch(payload, _snap_path(cfg, method, mark))


def _resources() -> dict:
    """What a snapshot was made with: torch threads, the CPUs it may run on, the load."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"threads": torch.get_num_threads(), "cpus": cpus, "load_1m": os.getloadavg()[0]}


def _missing_marks(cfg: BudgetConfig, method: str) -> list[float]:
    return [m for m in cfg.marks_min if not _snap_path(cfg, method, m).is_file()]


def run_ours(cfg: BudgetConfig, log) -> None:
    """Pretrain, then condense chunk by chunk; the clock is persisted in WORK/ours/clock.json.

    The set at a mark is the one that existed when the clock passed it: the set after the last
    chunk that ended before the mark (WORK/ours/held_set.pt keeps it across the crossing chunk),
    or no set when none had ended.
    """
    from common import fsio
    from common.runlock import hold
    from engine.presets import load_preset_for
    from engine.stages import run_condense, run_pretrain

    todo = _missing_marks(cfg, "ours")
    if not todo:
        return
    work = Path(cfg.workdir) / "ours"
    clock_path = work / "clock.json"
    clock = json.loads(clock_path.read_text()) if clock_path.is_file() else {"elapsed_s": 0.0}
    sets = [*cfg.preset_overrides, f"seed={cfg.seed}"]
    total = load_preset_for(cfg.preset, sets, cfg.data).condense.total_steps

    def tick(began: float, **extra) -> float:
        clock["elapsed_s"] += time.perf_counter() - began
        clock.update(extra)
        if extra.get("pretrained"):
            clock["pretrained_s"] = clock["elapsed_s"]
        fsio.write_json(clock_path, clock)
        return clock["elapsed_s"]

    if not clock.get("pretrained"):
        began = time.perf_counter()
        with hold(work / "pre", "pretrain"):
            run_pretrain(load_preset_for(cfg.preset, sets, cfg.data), cfg.data, work / "pre")
        log(f"ours: pretrained in {tick(began, pretrained=True):.0f} s")
    step = clock.get("step", 0)
    if step and "pretrained_s" not in clock:  # an older gencond's clock: no held set
        raise ConfigError(
            f"{work} was condensed by an older gencond (no held_set.pt, so the set at a mark "
            "cannot be told): rerun ours with a fresh --workdir"
        )
    while todo:
        elapsed, mark = clock["elapsed_s"], todo[0]
        held = _held_set(work)  # made before the chunk that has just run, if any
        if elapsed >= mark * 60:  # the last chunk crossed the mark
            if held is None:
                _save_snapshot(
                    cfg, "ours", mark, None, None, elapsed, {"note": _no_set(clock, mark)}
                )
                log(f"ours: no set yet at {todo.pop(0):g} min ({elapsed:.0f} s on the clock)")
                continue
        elif held is None or held["steps"] != step:
            if step > 0:  # the set after the last chunk: hold it before the next one
                held = _hold_set(work, step=step, made_s=elapsed)
        if elapsed >= mark * 60 or step >= total:
            info = {
                "steps": held["steps"],
                "clock_s": elapsed,
                "finished_s": clock.get("finished_s"),
            }
            info.update(_resources())  # elapsed_s: when the set was made
            images, labels = held["images"], held["labels"]
            _save_snapshot(cfg, "ours", mark, images, labels, held["made_s"], info)
            log(f"ours: snapshot at {todo.pop(0):g} min (the set of step {held['steps']})")
            continue
        began = time.perf_counter()
        step = min(total, step + cfg.ours_chunk)
        run_cfg = load_preset_for(cfg.preset, [*sets, f"max_steps={step}"], cfg.data)
        with hold(work / "run", "condense"):
            run_condense(run_cfg, cfg.data, work / "run", work / "pre")
        tick(began, step=step)
        if step >= total and "finished_s" not in clock:
            clock["finished_s"] = clock["elapsed_s"]
            fsio.write_json(clock_path, clock)


def _held_set(work: Path) -> dict | None:
    path = work / "held_set.pt"
    return torch.load(path, weights_only=True) if path.is_file() else None


def _hold_set(work: Path, *, step: int, made_s: float) -> dict:
    """G(codebook) after `step` steps, saved as the set that exists until the next chunk ends."""
    from common import fsio
    from engine.stages import load_condensed, synthetic_set

    payload = load_condensed(work / "run")
    images, labels = synthetic_set(payload)
    held = {"images": images, "labels": labels, "steps": step, "made_s": made_s}
    fsio.save_torch(held, work / "held_set.pt")
    return held


def _no_set(clock: dict, mark: float) -> str:
    return NO_SET_OURS if clock.get("pretrained_s", 0) >= mark * 60 else NO_SET_FIRST


def run_baseline(cfg: BudgetConfig, method: str, log) -> None:
    """The pixel condenser until the last mark, snapshotting (with its state) at each."""
    from benchmarks.accuracy_bench import AccuracyConfig, Datasets, _preset
    from benchmarks.baselines.base import SetShape
    from benchmarks.baselines.presets import build_condenser

    todo = _missing_marks(cfg, method)
    if todo and len(todo) < len(cfg.marks_min):
        last = [m for m in cfg.marks_min if m not in todo][-1]
        if torch.load(_snap_path(cfg, method, last), weights_only=False)["state"] is None:
            todo = list(cfg.marks_min)  # only no-set marks were saved: start over
    if not todo:
        return
    acfg = AccuracyConfig(
        datasets={cfg.dataset: cfg.data},
        ipcs=(cfg.ipc,),
        budget=cfg.baseline_budget,
        condense_seed=cfg.seed,
        device=cfg.device,
        workdir=str(Path(cfg.workdir) / method),
    )
    data = Datasets(acfg)
    pool, meta = data.pool(cfg.dataset)
    done = [m for m in cfg.marks_min if m not in todo]
    if done:  # resume from the last snapshot's state and clock
        saved = torch.load(_snap_path(cfg, method, done[-1]), weights_only=False)
        condenser, iteration, elapsed = saved["state"]
        log(f"{method}: resuming at update {iteration} ({elapsed:.0f} s)")
    else:
        began = time.perf_counter()
        preset = _preset(method, cfg.dataset, cfg.ipc, acfg)
        for key, value in cfg.baseline_overrides.get(method, {}).items():
            setattr(preset.config, key, value)
        shape = SetShape(meta.num_classes, cfg.ipc, meta.channels, meta.image_size)
        trajectories = None
        if method == "mtt":  # trained here, with the overrides, on the clock
            from benchmarks.baselines.mtt import train_experts

            expert_shape = SetShape(meta.num_classes, 1, meta.channels, meta.image_size)
            trajectories = train_experts(pool, expert_shape, preset.config, cfg.seed, cfg.device)
        condenser = build_condenser(preset, shape, cfg.seed, cfg.device, trajectories)
        condenser.init_from(pool, preset.config.init)
        iteration, elapsed = 0, time.perf_counter() - began  # the experts count
        while todo and elapsed >= todo[0] * 60:
            _save_snapshot(cfg, method, todo[0], None, None, elapsed, {"note": NO_SET_MTT})
            log(f"{method}: no set yet at {todo.pop(0):g} min ({elapsed:.0f} s of set-up)")
    began = time.perf_counter() - elapsed
    while todo:
        condenser.step(iteration, pool)
        iteration += 1
        elapsed = time.perf_counter() - began
        while todo and elapsed >= todo[0] * 60:
            info = {"updates": iteration, **_resources()}
            _save_snapshot(
                cfg,
                method,
                todo[0],
                condenser.images,
                condenser.labels,
                elapsed,
                info,
                state=(condenser, iteration, elapsed),
            )
            log(f"{method}: snapshot at {todo.pop(0):g} min ({elapsed:.0f} s, {iteration} updates)")


def _coreset(cfg: BudgetConfig, kind: str):
    from engine.evaluate import herding, random_real
    from engine.teacher import build_teacher, train_teacher

    if kind == "random":
        return random_real(cfg.data, cfg.ipc, cfg.seed)
    from common import fsio
    from data_prep.meta import load_meta
    from engine.config import TeacherConfig

    path = Path(cfg.workdir) / "herding_net.pt"
    meta = load_meta(cfg.data)
    tcfg = TeacherConfig(width=cfg.eval.width, epochs=1)
    net = build_teacher(meta, tcfg.width)
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
    else:
        net, _ = train_teacher(cfg.data, meta, tcfg, cfg.seed, torch.device(cfg.device))
        fsio.save_torch(net.cpu().state_dict(), path)
    return herding(cfg.data, cfg.ipc, net.eval())


def _rows_dir(cfg: BudgetConfig) -> Path:
    return Path(cfg.workdir) / "rows"


def _row_path(cfg: BudgetConfig, method: str, mark: float, seed: int) -> Path:
    return _rows_dir(cfg) / f"{method}@{mark:g}min_seed{seed}.json"


def _claim_workdir(cfg: BudgetConfig, config: dict) -> None:
    """A workdir belongs to one configuration: refuse to mix snapshots of two."""
    from common import fsio

    mine = {k: v for k, v in config.items() if k not in cfg.PER_PROCESS}
    path = Path(cfg.workdir) / "budget_config.json"
    if path.is_file():
        theirs = json.loads(path.read_text())
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            raise ConfigError(
                f"{cfg.workdir} holds a budget run with another {', '.join(changed)}; "
                "give another --workdir or delete it"
            )
    else:
        fsio.write_json(path, mine)


def _read_rows(cfg: BudgetConfig) -> list[dict]:
    order = {m: i for i, m in enumerate((*cfg.coresets, *METHODS))}
    rows = [json.loads(p.read_text()) for p in sorted(_rows_dir(cfg).glob("*.json"))]
    return sorted(rows, key=lambda r: (order.get(r["method"], 99), r["mark_min"], r["seed"]))


def _no_set_notes(cfg: BudgetConfig) -> dict[str, str]:
    notes = {}
    for method in METHODS:
        for mark in cfg.marks_min:
            path = _snap_path(cfg, method, mark)
            if path.is_file():
                snap = torch.load(path, weights_only=False)
                if snap["images"] is None:
                    notes[f"{method}@{mark:g}"] = snap["info"]["note"]
    return notes


def _ours_costs(cfg: BudgetConfig) -> dict:
    """Where ours' clock went: its pretrain stage's seconds against the clock at its final set."""
    work = Path(cfg.workdir) / "ours"
    pre, clock = work / "pre" / "pretrain.json", work / "clock.json"
    if not (pre.is_file() and clock.is_file()):
        return {}
    pretrain_s = json.loads(pre.read_text())["seconds"]
    finished_s = json.loads(clock.read_text()).get("finished_s")
    share = pretrain_s / finished_s if finished_s else None
    return {"pretrain_s": pretrain_s, "finished_s": finished_s, "pretrain_share": share}


def _resources_by_method(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        if "threads" not in r:
            continue
        got = out.setdefault(r["method"], {"threads": set(), "cpus": set(), "load_1m": []})
        got["threads"].add(r["threads"])
        got["cpus"].add(tuple(r["cpus"] or ()))
        got["load_1m"].append(r["load_1m"])
    return {
        m: {
            "threads": sorted(g["threads"]),
            "cpus": [list(c) for c in sorted(g["cpus"])],
            "load_1m": [round(min(g["load_1m"]), 2), round(max(g["load_1m"]), 2)],
        }
        for m, g in out.items()
    }


def run(cfg: BudgetConfig, out: str | Path | None = None, log=print) -> dict:
    """Condense every method to its marks, then evaluate every snapshot and coreset (as
    `phase` and `shard` say); the result files are rebuilt from every row in the workdir."""
    from common import fsio
    from engine.evaluate import train_and_test

    cfg.check()
    out = Path(out or RESULTS_DIR / f"budget_{cfg.dataset}_ipc{cfg.ipc}_{cfg.device}.json")
    config = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    _claim_workdir(cfg, config)

    no_set: dict[str, str] | None = None

    def save() -> dict:  # only ever after this process's condensing: no_set is read once
        nonlocal no_set
        if no_set is None:
            no_set = _no_set_notes(cfg)
        rows = _read_rows(cfg)
        summary = summarise(rows, cfg)
        payload = write_result(
            out,
            {k: v for k, v in config.items() if k not in cfg.PER_PROCESS},
            rows,
            summary=summary,
            protocol=_protocol(cfg),
            no_set=no_set,
            resources=_resources_by_method(rows),
            ours_costs=_ours_costs(cfg),
        )
        out.with_suffix(".md").write_text(markdown(payload))
        plot(payload, out.with_suffix(".png"))
        return payload

    if cfg.phase == "report":  # the result files from the rows there, nothing trained
        return save()
    if cfg.phase in ("all", "condense"):
        for method in cfg.methods:
            if method == "ours":
                run_ours(cfg, log)
            else:
                run_baseline(cfg, method, log)
    if cfg.phase == "condense":
        return save()

    # a snapshot holding the same set as an earlier mark (ours after its schedule ended) is
    # not trained on again: its rows copy the earlier mark's, with `same_set_as`
    sets: dict = {}
    for method in cfg.methods:
        seen: dict[str, float] = {}
        for mark in cfg.marks_min:
            path = _snap_path(cfg, method, mark)
            snap = torch.load(path, weights_only=False) if path.is_file() else None
            if snap is None:
                log(f"{method} @ {mark:g} min: not condensed yet, skipped")
            elif snap["images"] is not None:
                digest = _set_digest(snap["images"], snap["labels"])
                extra = {"elapsed_s": round(snap["elapsed_s"], 1), **snap["info"]}
                sets[method, mark] = (snap["images"], snap["labels"], extra, seen.get(digest))
                seen.setdefault(digest, mark)
    # seed-major (every point gets its first seed before any gets its second), sharded over
    # every point there will be, so K/N picks the same tasks whatever has been condensed yet
    tasks = [
        task
        for seed in range(cfg.eval.seeds)
        for task in [
            *[(kind, 0.0, seed) for kind in cfg.coresets],
            *[(method, mark, seed) for method in cfg.methods for mark in cfg.marks_min],
        ]
    ]
    k, n = cfg.shard
    mine = [t for i, t in enumerate(tasks) if i % n == k]

    def trained_on(task) -> bool:  # a coreset, or a snapshot with a set no earlier mark had
        return task[0] in cfg.coresets or (task[:2] in sets and sets[task[:2]][3] is None)

    tasks = [t for t in tasks if trained_on(t)]

    def write_copies(row: dict) -> None:
        method, mark, seed = row["method"], row["mark_min"], row["seed"]
        for (m, later), (_, _, its_extra, same) in sets.items():
            if m == method and same == mark and not _row_path(cfg, m, later, seed).is_file():
                copy = {**row, **its_extra, "mark_min": later, "eval_s": 0.0, "same_set_as": mark}
                fsio.write_json(_row_path(cfg, m, later, seed), copy)

    for task in tasks:  # copies that a crash left out
        if task[0] not in cfg.coresets and _row_path(cfg, *task).is_file():
            write_copies(json.loads(_row_path(cfg, *task).read_text()))
    mine = [t for t in mine if t in tasks and not _row_path(cfg, *t).is_file()]
    for method, mark, seed in mine:
        if method in cfg.coresets and (method, mark) not in sets:
            images, labels = _coreset(cfg, method)
            sets[method, mark] = (images, labels, {"elapsed_s": 0.0}, None)
        images, labels, extra, _ = sets[method, mark]
        began = time.perf_counter()
        acc = train_and_test("convnet", images, labels, cfg.data, cfg.eval, seed, device=cfg.device)
        row = {"method": method, "mark_min": mark, "seed": seed, "acc": acc}
        row.update(eval_s=round(time.perf_counter() - began, 1), **extra)
        fsio.write_json(_row_path(cfg, method, mark, seed), row)
        write_copies(row)
        log(f"{method} @ {mark:g} min, seed {seed}: {acc:.2f} %")
        save()
    return save()


def _set_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    import hashlib

    h = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes())
    h.update(labels.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _protocol(cfg: BudgetConfig) -> str:
    e = cfg.eval
    return (
        f"ConvNet-3 width {e.width}, {e.epochs} epochs, DSA {e.dsa_strategy} "
        f"({e.dsa_mode}-op), final-epoch test accuracy, {e.seeds} seeds"
    )


def summarise(rows: list[dict], cfg: BudgetConfig) -> list[dict]:
    out = []
    for method in (*cfg.coresets, *METHODS):
        for mark in sorted({r["mark_min"] for r in rows if r["method"] == method}):
            mine = [r for r in rows if (r["method"], r["mark_min"]) == (method, mark)]
            accs = [r["acc"] for r in mine]
            out.append(
                {
                    "method": method,
                    "mark_min": mark,
                    "elapsed_s": mine[0]["elapsed_s"],
                    "mean": float(np.mean(accs)),
                    "std": float(np.std(accs)),
                    "seeds": len(accs),
                    "same_set_as": mine[0].get("same_set_as"),
                }
            )
    return out


def markdown(payload: dict) -> str:
    cfg = payload["config"]
    marks = cfg["marks_min"]
    by = {(r["method"], r["mark_min"]): r for r in payload["summary"]}
    wanted = cfg.get("eval", {}).get("seeds", 0)
    lines = [
        f"# Accuracy against wall-clock: {cfg['dataset']} IPC {cfg['ipc']} "
        f"({payload['device']}, {payload['machine']}, commit {payload['commit']})",
        "",
        f"Protocol: {payload['protocol']}. Each method ran from zero (ours: pretraining "
        "counted; MTT: its experts counted). Accuracy (%) of the set each had when the "
        "clock passed the mark (`*`: no set yet); random real and herding cost nothing.",
        "",
        *_resource_lines(payload),
        "| method | " + " | ".join(f"{m:g} min" for m in marks) + " |",
        "| --- |" + " ---: |" * len(marks),
    ]
    present = {r["method"] for r in payload["summary"]} | {
        k.split("@")[0] for k in payload.get("no_set", {})
    }
    for method in (*cfg["coresets"], *METHODS):
        if method not in present:
            continue
        cells = []
        for m in marks:
            r = by.get((method, m)) or by.get((method, 0.0))
            if r is not None:
                short = r["seeds"] < wanted  # still being evaluated
                seeds = f" ({r['seeds']}/{wanted} seeds)" if short else ""
                cells.append(f"{r['mean']:.2f} ± {r['std']:.2f}{seeds}")
            else:
                cells.append("*" if f"{method}@{m:g}" in payload.get("no_set", {}) else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    gaps = []
    for m in marks:
        ours = by.get(("ours", m))
        pixel = [by[k, m]["mean"] for k in ("dm", "dsa", "mtt") if (k, m) in by]
        gaps.append(f"{ours['mean'] - max(pixel):+.2f}" if ours and pixel else "-")
    lines.append("| ours - best pixel method | " + " | ".join(gaps) + " |")
    notes = sorted(set(payload.get("no_set", {}).values()))
    lines += ["", *[f"`*` {n}." for n in notes]] if notes else []
    costs = payload.get("ours_costs") or {}
    if costs.get("pretrain_share") is not None:
        lines += [
            "",
            f"Ours' clock: pretraining (teacher and GAN) {costs['pretrain_s']:.0f} s of the "
            f"{costs['finished_s']:.0f} s to its final set ({costs['pretrain_share']:.0%}).",
        ]
    return "\n".join(lines) + "\n"


def _resource_lines(payload: dict) -> list[str]:
    res = payload.get("resources") or {}
    if not res:
        return []
    lines = ["| method | torch threads | CPUs | load average (1 min) at snapshots |"]
    lines.append("| --- | --- | --- | --- |")
    for method, r in res.items():
        cpus = "; ".join(",".join(map(str, c)) for c in r["cpus"])
        lo, hi = r["load_1m"]
        lines.append(f"| {method} | {', '.join(map(str, r['threads']))} | {cpus} | {lo}-{hi} |")
    return [*lines, ""]


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = payload["config"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in payload["summary"]:
        if r["method"] in cfg["coresets"]:
            ax.axhline(
                r["mean"],
                ls="--",
                lw=1,
                color="gray" if r["method"] == "random" else "black",
                label=f"{r['method']} (no cost)",
            )
    for method in METHODS:
        pts = [r for r in payload["summary"] if r["method"] == method]
        if pts:
            ax.errorbar(  # a set held on from an earlier mark is drawn at its mark
                [r["mark_min"] if r.get("same_set_as") else r["elapsed_s"] / 60 for r in pts],
                [r["mean"] for r in pts],
                yerr=[r["std"] for r in pts],
                marker="o",
                capsize=3,
                label=method,
            )
    ax.set_xlabel(f"wall-clock minutes from zero ({payload['device']})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['dataset']} IPC {cfg['ipc']}: accuracy against budget")
    missing: dict[str, list[str]] = {}
    for key in payload.get("no_set", {}):
        method, _, mark = key.partition("@")
        missing.setdefault(method, []).append(mark)
    if missing:
        text = "; ".join(f"{m} at {', '.join(v)} min" for m, v in missing.items())
        ax.text(0.01, 0.01, f"no set yet: {text}", transform=ax.transAxes, fontsize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
