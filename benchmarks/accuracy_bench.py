"""`gencond bench accuracy`: test accuracy of sets condensed by DM, DSA, MTT (and TESLA), of
random and herding coresets, and of ours (from a RUN's eval.json), next to published numbers.

Each (method, dataset, IPC) point condenses once (seed `condense_seed`) with the baseline's
preset at `budget` ("cpu": shrunk loops, see baselines/presets.py; "paper": the papers'
loops), then trains `seeds` fresh ConvNets on the set with the engine's evaluation harness
(DSA augmentation, SGD, lr x0.1 at half, final-epoch accuracy on the real test split). Herding
selects in the feature space of MTT's first expert (a ConvNet trained on the real data), which
is trained once per dataset and cached under --workdir, as are MTT's experts.

The result file is rewritten after every point (`complete: false` until the last one), so an
interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.config import ACCURACY_METHODS as METHODS
from benchmarks.config import AccuracyConfig
from benchmarks.results import RESULTS_DIR, write_result
from common import fsio
from common.console import log

# Published ConvNet accuracies (%), IPC -> value, with their source.
PUBLISHED = {
    ("ours", "mnist"): ({1: 93.7, 10: 98.4, 50: 99.2}, "GenCond (Zhang et al. 2023)"),
    ("ours", "fashion-mnist"): ({1: 79.2, 10: 87.3, 50: 88.8}, "GenCond (Zhang et al. 2023)"),
    ("dsa", "mnist"): ({1: 88.7, 10: 97.8, 50: 99.2}, "DSA (Zhao & Bilen 2021)"),
    ("dsa", "fashion-mnist"): ({1: 70.6, 10: 84.6, 50: 88.7}, "DSA (Zhao & Bilen 2021)"),
    ("random", "mnist"): ({1: 64.9, 10: 95.1, 50: 97.9}, "DC (Zhao et al. 2021) Table 1"),
    ("random", "fashion-mnist"): ({1: 51.4, 10: 73.8, 50: 82.5}, "DC (Zhao et al. 2021) Table 1"),
    ("herding", "mnist"): ({1: 89.2, 10: 93.7, 50: 94.8}, "DC (Zhao et al. 2021) Table 1"),
    ("herding", "fashion-mnist"): (
        {1: 67.0, 10: 71.1, 50: 71.9},
        "DC (Zhao et al. 2021) Table 1",
    ),
}
NOT_PUBLISHED = "not reported (DM and MTT/TESLA report no MNIST / Fashion-MNIST results)"


def load_pool(data_dir: str | Path):
    """The whole training split as a TensorPool of normalised float images."""
    from benchmarks.baselines.base import TensorPool
    from data_prep.loaders import read_all
    from data_prep.meta import load_meta

    meta = load_meta(data_dir)
    images, labels = read_all(data_dir, "train")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
    std = torch.tensor(meta.std).view(1, -1, 1, 1)
    return TensorPool((x - mean) / std, torch.from_numpy(labels)), meta


class Datasets:
    """Per-dataset things every point reuses: the real pool, MTT's experts (cached on disk)."""

    def __init__(self, cfg: AccuracyConfig):
        self.cfg, self.pools, self.experts = cfg, {}, {}

    def pool(self, name: str):
        if name not in self.pools:
            self.pools[name] = load_pool(self.cfg.datasets[name])
        return self.pools[name]

    def trajectories(self, name: str, ipc: int) -> list:
        from benchmarks.baselines.base import SetShape
        from benchmarks.baselines.mtt import train_experts

        if name in self.experts:
            return self.experts[name]
        preset = _preset("mtt", name, ipc, self.cfg)
        c = preset.config
        key = f"{c.num_experts}x{c.train_epochs}-{c.expert_images}-w{c.net_width}"
        path = Path(self.cfg.workdir) / f"experts_{name}_{key}_s{self.cfg.condense_seed}.pt"
        if path.is_file():
            self.experts[name] = fsio.load_torch(path, "expert trajectories")
        else:
            pool, meta = self.pool(name)
            shape = SetShape(meta.num_classes, 1, meta.channels, meta.image_size)
            log(f"{name}: training {c.num_experts} experts x {c.train_epochs} epochs")
            self.experts[name] = train_experts(
                pool, shape, c, self.cfg.condense_seed, self.cfg.device
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.experts[name], path)
        return self.experts[name]


def _preset(method: str, dataset: str, ipc: int, cfg: AccuracyConfig):
    from benchmarks.baselines.presets import load_baseline_preset

    overrides = {"net_width": cfg.net_width} if cfg.net_width else {}
    return load_baseline_preset(method, dataset, ipc, cfg.budget, overrides)


def condense_point(method: str, dataset: str, ipc: int, cfg: AccuracyConfig, data: Datasets):
    """(images, labels, info) of one point's set."""
    from benchmarks.baselines.base import SetShape
    from benchmarks.baselines.mtt import FlatNet
    from benchmarks.baselines.presets import build_condenser
    from engine.evaluate import herding, random_real
    from engine.nets import ConvNet

    data_dir = cfg.datasets[dataset]
    if method == "random":
        images, labels = random_real(data_dir, ipc, cfg.condense_seed)
        return images, labels, {"source": "random real images"}
    pool, meta = data.pool(dataset)
    if method == "herding":
        trajectory = data.trajectories(dataset, ipc)[0]
        net = ConvNet(
            meta.channels,
            meta.num_classes,
            meta.image_size,
            width=_preset("mtt", dataset, ipc, cfg).config.net_width,
        )
        flat = FlatNet(net)
        with torch.no_grad():
            for p, v in zip(net.parameters(), trajectory[-1].split(flat.sizes), strict=True):
                p.copy_(v.view_as(p))
        images, labels = herding(data_dir, ipc, net)
        return images, labels, {"source": "herding in the features of MTT's first expert"}
    preset = _preset(method, dataset, ipc, cfg)
    shape = SetShape(meta.num_classes, ipc, meta.channels, meta.image_size)
    trajectories = data.trajectories(dataset, ipc) if method in ("mtt", "tesla") else None
    condenser = build_condenser(preset, shape, cfg.condense_seed, cfg.device, trajectories)
    condenser.init_from(pool, preset.config.init)
    iterations = preset.config.iterations
    if method == "dsa":  # DC's iterations are outer iterations of outer_loop image updates
        iterations *= condenser.outer_loop
    began = time.perf_counter()
    losses = [condenser.step(i, pool)["loss"] for i in range(iterations)]
    info = {
        "updates": iterations,
        "condense_s": round(time.perf_counter() - began, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "preset": preset.to_dict(),
    }
    return condenser.images.detach().cpu(), condenser.labels.cpu(), info


def evaluate_point(images, labels, dataset: str, cfg: AccuracyConfig) -> dict:
    from engine.config import EvalConfig
    from engine.evaluate import evaluate_sets

    ecfg = EvalConfig(
        models=("convnet",), seeds=cfg.seeds, epochs=cfg.eval_epochs, width=cfg.eval_width
    )
    result = evaluate_sets(
        {"set": (images, labels)}, cfg.datasets[dataset], ecfg, device=cfg.device
    )
    return result["set"]["convnet"]


def published(method: str, dataset: str, ipc: int) -> tuple[float | None, str]:
    values, source = PUBLISHED.get((method, dataset), ({}, NOT_PUBLISHED))
    return values.get(ipc), source if ipc in values else NOT_PUBLISHED


def ours_rows(cfg: AccuracyConfig) -> list[dict]:
    rows = []
    for dataset, run in cfg.ours.items():
        report = json.loads((Path(run) / "eval.json").read_text())
        result = report["results"]["condensed"]["convnet"]
        value, source = published("ours", dataset, report["ipc"])
        rows.append(
            {
                "method": "ours",
                "dataset": dataset,
                "ipc": report["ipc"],
                "mean": result["mean"],
                "std": result["std"],
                "seeds": len(result["accs"]),
                "accs": result["accs"],
                "published": value,
                "published_source": source,
                "note": f"from {run}/eval.json: {report['protocol']}",
            }
        )
    return rows


def run(cfg: AccuracyConfig, out: str | Path | None = None) -> dict:
    cfg.check()
    path = Path(out) if out else RESULTS_DIR / f"accuracy_{cfg.device.split(':')[0]}.json"
    data = Datasets(cfg)
    rows = ours_rows(cfg)
    began = time.perf_counter()
    todo = all_points(cfg)
    if cfg.only:
        todo = [t for t in todo if point_name(*t) in cfg.only]
        rows = []  # ours is added where the parts are merged
    payload: dict = {}
    for n, (dataset, ipc, method) in enumerate(todo, 1):
        log(f"[{n}/{len(todo)}] {method} {dataset} IPC {ipc}")
        t0 = time.perf_counter()
        images, labels, info = condense_point(method, dataset, ipc, cfg, data)
        result = evaluate_point(images, labels, dataset, cfg)
        value, source = published(method, dataset, ipc)
        rows.append(
            {
                "method": method,
                "dataset": dataset,
                "ipc": ipc,
                "mean": result["mean"],
                "std": result["std"],
                "seeds": len(result["accs"]),
                "accs": result["accs"],
                "published": value,
                "published_source": source,
                "point_s": round(time.perf_counter() - t0, 1),
                **{k: v for k, v in info.items() if k != "preset"},
                "preset_source": info.get("preset", {}).get("source"),
            }
        )
        payload = _write(
            path, cfg, rows, complete=n == len(todo), wall_s=time.perf_counter() - began
        )
    return payload or _write(path, cfg, rows, True, time.perf_counter() - began)


def point_name(dataset: str, ipc: int, method: str) -> str:
    return f"{method}:{dataset}:{ipc}"


def all_points(cfg: AccuracyConfig) -> list[tuple[str, int, str]]:
    """(dataset, ipc, method) of every point, in run order."""
    return [(d, k, m) for d in cfg.datasets for k in cfg.ipcs for m in cfg.methods]


def merge_parts(
    cfg: AccuracyConfig, parts: list[Path], out: str | Path | None, wall_s: float
) -> dict:
    """One result file from the job array's per-point files (plus ours)."""
    rows = ours_rows(cfg)
    for part in parts:
        rows += json.loads(Path(part).read_text())["rows"]
    path = Path(out) if out else RESULTS_DIR / f"accuracy_{cfg.device.split(':')[0]}.json"
    return _write(path, cfg, rows, complete=True, wall_s=wall_s)


def _write(path: Path, cfg: AccuracyConfig, rows: list[dict], complete: bool, wall_s: float):
    protocol = (
        f"ConvNet width {cfg.eval_width}, {cfg.eval_epochs} epochs with DSA, SGD lr 0.01 "
        f"momentum 0.9 wd 5e-4, lr x0.1 at half, final epoch; mean and population std "
        f"over {cfg.seeds} training seeds of one condensed set (seed "
        f"{cfg.condense_seed}); condensation budget '{cfg.budget}'"
    )
    payload = write_result(
        path,
        asdict(cfg),
        rows,
        benchmark="accuracy",
        complete=complete,
        protocol=protocol,
        wall_s=round(wall_s, 1),
    )
    path.with_suffix(".md").write_text(markdown(payload))
    return payload


def markdown(payload: dict) -> str:
    lines = [
        f"# Accuracy: condensed sets on MNIST / Fashion-MNIST ({payload['machine']}, torch "
        f"{payload['torch']}, commit {payload['commit']})",
        "",
        f"Created {payload['created']}. Protocol: {payload['protocol']}."
        + ("" if payload.get("complete") else " **Partial: the run did not finish.**"),
        "",
        "Published numbers are the papers' (ConvNet width 128, their own loops and "
        "evaluation epochs: 300 or 1000), not comparable point for point with a CPU budget.",
        "",
        "| dataset | IPC | method | measured (%) | published (%) | published source |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    order = {m: i for i, m in enumerate(("ours", *METHODS))}
    for r in sorted(payload["rows"], key=lambda r: (r["dataset"], r["ipc"], order[r["method"]])):
        pub = "-" if r["published"] is None else f"{r['published']:.1f}"
        measured = f"{r['mean']:.2f} ± {r['std']:.2f} (n={r['seeds']})"
        lines.append(
            f"| {r['dataset']} | {r['ipc']} | {r['method']} | {measured} | {pub} | "
            f"{r['published_source']} |"
        )
    notes = [r for r in payload["rows"] if r.get("note")]
    lines += [""] + [f"- {r['method']} {r['dataset']}: {r['note']}" for r in notes]
    return "\n".join(lines) + "\n"
