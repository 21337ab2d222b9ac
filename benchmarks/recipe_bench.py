"""`gencond bench recipe`: a recipe's condensed set beside the paper's preset as it is
(`faithful`), random real, herding and the pretrained G's plain samples, at one IPC, N seeds
each, from one pretrain stage; with --ablate, the recipe minus each of its departures too.

Each run is condensed into WORKDIR/<row>/ and evaluated there with the engine's own commands
(`run_condense`, `run_evaluate`), so a rerun skips a finished condensation or evaluation and
finishes a stopped one. The result file (benchmarks/results/recipe_<dataset>_ipc<K>_<device>
.json) is rewritten after every evaluated run, `partial: true` until the last.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from benchmarks.config import RecipeBenchConfig
from benchmarks.results import RESULTS_DIR, write_result
from common.console import log

__all__ = ["RecipeBenchConfig", "run", "default_out"]

RECIPE_ROW, FAITHFUL_ROW = "condensed", "faithful"


def default_out(cfg: RecipeBenchConfig, dataset: str, ipc: int) -> Path:
    return RESULTS_DIR / f"recipe_{dataset}_ipc{ipc}_{cfg.device.split(':')[0]}.json"


def planned_runs(cfg: RecipeBenchConfig) -> list[tuple[str, list[str], int, tuple[str, ...]]]:
    """(row, --set items, seeds, baselines) of every run, in the order they are made: the
    recipe (with the coresets), the faithful preset, then the recipe minus each departure."""
    from engine.recipes import get_recipe

    sets = list(cfg.preset_overrides)
    runs = [(RECIPE_ROW, [f"recipe={cfg.recipe}", *sets], cfg.seeds, cfg.baselines)]
    if not cfg.no_faithful:
        runs.append((FAITHFUL_ROW, ["recipe=paper", *sets], cfg.seeds, ()))
    if cfg.ablate:
        for d in get_recipe(cfg.recipe).departures:
            without = [f"recipe={cfg.recipe}", f"recipe_without={d.name}", *sets]
            runs.append((f"without_{d.name}", without, cfg.ablate_seeds, ()))
    return runs


def _finished(run_dir: Path, run_cfg) -> bool:
    """condensed.pt holds this config (a run of another config is refused by run_condense)."""
    from engine import artifact
    from engine.config import same_condensation

    path = run_dir / artifact.CONDENSED_FILE
    if not path.is_file():
        return False
    recorded = artifact.CondensedArtifact.read(path).config
    return same_condensation(run_cfg.to_dict(), recorded)


def _evaluated(run_dir: Path, eval_cfg) -> dict | None:
    """RUN/eval.json when it was made with this protocol, seeds and baselines, else None."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return (
        report
        if report.get("eval") == json.loads(json.dumps(dataclasses.asdict(eval_cfg)))
        else None
    )


def _artifact_size(run_dir: Path, meta) -> dict:
    """The artifact's stored values (codebook, G's weights and normalisation statistics, class
    conditions) and bytes beside the pixel set's (float32) of the same IPC."""
    from engine.stages import load_condensed

    payload = load_condensed(run_dir)
    ipc = payload.config["condense"]["ipc"]
    tensors = [*payload.generator.values(), payload.codebook, payload.class_embeddings]
    values = sum(t.numel() for t in tensors if t.is_floating_point())
    pixels = meta.num_classes * ipc * meta.channels * meta.image_size**2
    return {
        "artifact_values": int(values),
        "artifact_bytes": (run_dir / "condensed.pt").stat().st_size,
        "pixel_set_values": int(pixels),
        "pixel_set_bytes_float32": int(4 * pixels),
    }


def _rows(row: str, report: dict) -> list[dict]:
    names = {"condensed": row, "plain_generator": "plain_generator"}
    out = []
    for name, models in report["results"].items():
        r = models["convnet"] if "convnet" in models else next(iter(models.values()))
        out.append(
            {
                "set": names.get(name, name),
                "accs": r["accs"],
                "mean": r["mean"],
                "std": r["std"],
                "seeds": len(r["accs"]),
            }
        )
    return out


def run(cfg: RecipeBenchConfig, out: Path | None = None) -> dict:
    from data_prep.meta import load_meta
    from engine.presets import load_preset_for
    from engine.stages import existing_pretrain, run_condense, run_evaluate, run_pretrain

    cfg.check()
    meta = load_meta(cfg.data)
    work = Path(cfg.workdir)
    runs = planned_runs(cfg)
    recipe_cfg = load_preset_for(cfg.preset, runs[0][1], cfg.data)
    out = out or default_out(cfg, meta.dataset, recipe_cfg.condense.ipc)
    pre = Path(cfg.pretrained) if cfg.pretrained else work / "pretrained"
    if not cfg.pretrained and existing_pretrain(recipe_cfg, cfg.data, pre, False) is None:
        run_pretrain(recipe_cfg, cfg.data, pre)
    rows, runs_info, extra = [], {}, {}
    for i, (row, sets, seeds, baselines) in enumerate(runs):
        run_cfg = load_preset_for(cfg.preset, sets, cfg.data)
        run_cfg.device = cfg.device
        run_dir = work / row
        started = time.perf_counter()
        if not _finished(run_dir, run_cfg):
            log(f"[{row}] condensing into {run_dir}")
            run_condense(run_cfg, cfg.data, run_dir, pre, fit_cache=work / "fit-cache")
        condense_s = time.perf_counter() - started
        e = run_cfg.eval
        eval_cfg = dataclasses.replace(
            e, seeds=seeds, epochs=cfg.epochs or e.epochs, baselines=tuple(baselines)
        )
        report = _evaluated(run_dir, eval_cfg) or run_evaluate(
            run_dir, cfg.data, eval_cfg, cfg.device
        )
        rows += _rows(row, report)
        runs_info[row] = {
            "config": run_cfg.to_dict(),
            "condense_seconds_this_call": round(condense_s, 1),
            "run_dir": str(run_dir),
            **_run_summary(run_dir),
        }
        if row == RECIPE_ROW:
            extra = _artifact_size(run_dir, meta)
        config = {
            **dataclasses.asdict(cfg),
            "resolved": recipe_cfg.to_dict(),
            "recipe": recipe_cfg.recipe,
        }
        result = write_result(
            out,
            config,
            rows,
            runs=runs_info,
            protocol=report["protocol"],
            partial=i < len(runs) - 1,
            **extra,
        )
        log(f"[{row}] written to {out}")
    return result


def _run_summary(run_dir: Path) -> dict:
    """Steps and seconds of the condensation as its artifact records them."""
    from engine.stages import load_condensed

    payload = load_condensed(run_dir)
    return {"steps": payload.steps, "condense_seconds": round(payload.seconds, 1)}
