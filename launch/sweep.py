"""Sweeps: the points of a grid (and of named variants), each condensed into OUT/<point> and
evaluated there, one after the other or as a SLURM array.

A variant is a named set of overrides read from a TOML file, one table per variant:

    [it-gan]                          # G frozen, no L_intra / L_inter
    "condense.finetune_generator" = false
    "condense.weight_intra" = 0

A rerun skips what is finished: a point's condense when OUT/<point>/condensed.pt was made with
the point's config, each evaluation seed whose OUT/<point>/eval_parts/seed_I.json exists.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from common import fsio
from common.errors import ConfigError

VARIANT = "variant"
FIT_CACHE_DIR = "fit-cache"  # OUT/fit-cache: fitted coreset starts shared by the points


def sweep_points(grid: list[str], variants: dict[str, list[str]] | None = None) -> list[dict]:
    """`key=v1,v2` axes (and the variants' names, as a first axis) -> the Cartesian product as
    a list of {key: value}."""
    from engine.config import RunConfig

    axes = [[(VARIANT, name) for name in variants]] if variants else []
    seen: dict[str, str] = {}  # the key each axis sets (shortcuts resolved) -> how it was given
    for item in grid:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2,...")
        key, values = item.split("=", 1)
        key = key.strip()
        options = [v.strip() for v in values.split(",") if v.strip()]
        if not options:
            raise ConfigError(f"--grid {item!r}: no values")
        full = RunConfig.SHORTCUTS.get(key, key)
        if full in seen or key == VARIANT:
            other = seen.get(full, "the variants")
            raise ConfigError(
                f"--grid {item!r}: sets {full} again (also {other}); one axis per key"
            )
        seen[full] = repr(item)
        axes.append([(key, v) for v in options])
    points = [dict(point) for point in itertools.product(*axes)] or [{}]
    named: dict[str, dict] = {}
    for point in points:
        name = point_name(point)
        if name in named:
            raise ConfigError(
                f"sweep points {named[name]} and {point} would share the folder {name} (a value "
                "given twice, or variant names or keys that read alike): make them distinct"
            )
        named[name] = point
    return points


def point_name(point: dict[str, str]) -> str:
    text = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in point.items()) or "default"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


@dataclass
class SweepPlan:
    """What a sweep runs: its points and, for each, the preset and overrides."""

    preset: str
    data: Path
    out: Path
    pretrained: Path | None = None
    grid: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=dict)
    eval_seeds: int | None = None
    eval_epochs: int | None = None
    baselines: str | None = None

    @property
    def points(self) -> list[dict]:
        return sweep_points(self.grid, self.variants)

    def settings(self, point: dict) -> tuple[str, list[str]]:
        """(preset, --set items) of a point: fixed overrides, then its variant's, then its own."""
        sets = list(self.overrides)
        if VARIANT in point:
            sets += self.variants[point[VARIANT]]
        preset = point.get("preset", self.preset)
        for key, value in point.items():
            if key == "preset":
                continue
            if key == VARIANT:
                preset = _preset_of(self.variants[value], preset)
                continue
            sets.append(f"{key}={value}")
        return preset, [s for s in sets if not s.startswith("preset=")]

    def config(self, point: dict):
        from engine.presets import load_preset

        preset, sets = self.settings(point)
        cfg = load_preset(preset, sets)
        e = cfg.eval
        e.seeds, e.epochs = self.eval_seeds or e.seeds, self.eval_epochs or e.epochs
        if self.baselines is not None:
            e.baselines = tuple(t.strip() for t in self.baselines.split(",") if t.strip())
        e.check()
        return cfg

    def run_dir(self, point: dict) -> Path:
        return self.out / point_name(point)

    def condense_argv(self, point: dict) -> list[str]:
        """The point's condensation: its resolved config written to OUT/configs/<point>.json
        and handed over as --config (a job parses no preset and no --set)."""
        path = self.out / "configs" / f"{point_name(point)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.config(point).to_file(path)
        argv = ["condense", "--config", str(path), "--data", str(self.data)]
        argv += ["--out", str(self.run_dir(point)), "--fit-cache", str(self.out / FIT_CACHE_DIR)]
        if self.pretrained:
            argv += ["--pretrained", str(self.pretrained)]
        return argv

    def evaluate_argv(self, point: dict, seed_index: int | None = None) -> list[str]:
        e = self.config(point).eval
        argv = [
            "evaluate",
            str(self.run_dir(point)),
            "--data",
            str(self.data),
            "--seeds",
            str(e.seeds),
            "--epochs",
            str(e.epochs),
            "--baselines",
            ",".join(e.baselines),
        ]
        return argv if seed_index is None else [*argv, "--seed-index", str(seed_index)]

    def check(self) -> None:
        """Every point's config is valid, before anything runs or is queued."""
        for point in self.points:
            self.config(point)


def _preset_of(sets: list[str], default: str) -> str:
    for item in sets:
        if item.startswith("preset="):
            return item.split("=", 1)[1]
    return default


def finished_condense(plan: SweepPlan, point: dict) -> bool:
    """True if OUT/<point>/condensed.pt holds this point's config; a file made with another
    config is refused (the variants file or --set changed under a finished point)."""
    from engine.config import same_condensation
    from engine.stages import load_condensed

    path = plan.run_dir(point) / "condensed.pt"
    if not path.is_file():
        return False
    recorded = load_condensed(plan.run_dir(point)).config
    if not same_condensation(plan.config(point).to_dict(), recorded):
        raise ConfigError(
            f"{path} was condensed with another config than sweep point {point_name(point)} "
            "now has; use a new --out folder or delete that point's folder"
        )
    return True


def finished_seed(plan: SweepPlan, point: dict, seed_index: int) -> bool:
    """True if the seed's eval part exists and used this point's protocol."""
    import dataclasses

    path = plan.run_dir(point) / "eval_parts" / f"seed_{seed_index}.json"
    if not path.is_file():
        return False
    wanted = json.loads(json.dumps(dataclasses.asdict(plan.config(point).eval)))
    wanted["seeds"] = 1  # a part is one seed of N
    recorded = fsio.read_json(path, "evaluation part").get("eval")
    if recorded != wanted:
        raise ConfigError(
            f"{path} was evaluated with another protocol than sweep point {point_name(point)} "
            "now has; delete it (or the point's eval_parts) to redo it"
        )
    return True


def gather_sweep(root: Path, points: list[dict]) -> dict:
    """One JSON over the sweep's points: each point's overrides and eval.json results."""
    from common import fsio

    rows = []
    for point in points:
        run = root / point_name(point)
        report = fsio.read_json(run / "eval.json", "evaluation report")
        for name, by_model in report["results"].items():
            for model, r in by_model.items():
                row = {"point": point_name(point), **point, "set": name, "model": model}
                row.update(mean=r["mean"], std=r["std"], seeds=len(r["accs"]))
                rows.append(row)
    payload = {"points": points, "rows": rows}
    fsio.write_json(root / "sweep.json", payload)
    return payload
