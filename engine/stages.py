"""The stages a user runs: pretrain -> condense -> synthesize -> evaluate. Each reads and
writes the files of the contract and returns a summary for the closing table."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from common import fsio
from common.console import log
from common.errors import ConfigError, DataError
from data_prep.loaders import Normalizer
from data_prep.meta import DatasetMeta, load_meta
from engine import artifact, checkpoint, distributed, preflight
from engine.class_plan import ClassPlan
from engine.condense import condense
from engine.config import EvalConfig, RunConfig
from engine.distributed import DistEnv
from engine.evaluate import diversity, evaluate_sets, herding, random_real
from engine.gan import pretrain_gan
from engine.generator import condition_table, generate, init_codebook
from engine.teacher import build_teacher, class_embeddings, train_teacher

SYNTHETIC_DIR = "synthetic"


def run_pretrain(cfg: RunConfig, data_dir: str | Path, out: Path) -> dict:
    """Teacher, class embeddings and the GAN-pretrained generator -> PRE/pretrained.pt."""
    from engine import condense_diagnostics as diag

    meta = load_meta(data_dir)
    device = torch.device(cfg.device)
    start = time.perf_counter()
    log(f"Training the teacher ConvNet (width {cfg.teacher.width}, {cfg.teacher.epochs} epochs)")
    teacher, teacher_acc = train_teacher(data_dir, meta, cfg.teacher, cfg.seed, device)
    log(f"Teacher test accuracy {teacher_acc:.2f} %")
    embeddings = class_embeddings(teacher, data_dir, meta, device)
    conditions = condition_table(cfg.gan.condition, embeddings, cfg.gan.condition_norm)
    log(f"Pretraining the conditional GAN ({cfg.gan.steps} steps)")
    G, gan_log = pretrain_gan(data_dir, meta, cfg.gan, conditions, cfg.seed, device)
    stage = artifact.PretrainedStage(
        generator=G.cpu().state_dict(),
        generator_spec=artifact.generator_spec(G, cfg.gan.proj_dim, cfg.gan.width),
        teacher=teacher.cpu().state_dict(),
        teacher_width=cfg.teacher.width,
        teacher_accuracy=teacher_acc,
        class_embeddings=embeddings,
        conditions=conditions,
        gan_log=gan_log,
        config=cfg.to_dict(),
        meta=meta.to_dict(),
        version=artifact.version(),
        seconds=time.perf_counter() - start,
    )
    similarity = diag.condition_similarity(conditions)
    summary = {
        "teacher_accuracy": teacher_acc,
        "condition_cosine_mean": similarity["mean_cosine"],
        "condition_cosine_max": similarity["max_cosine"],
        "gan_steps": cfg.gan.steps,
        "seconds": stage.seconds,
        "path": str(out / artifact.PRETRAINED_FILE),
        "warnings": similarity["warnings"],
    }
    if distributed.world()[0] == 0:
        stage.save(out / artifact.PRETRAINED_FILE)
        (out / "pretrain.json").write_text(json.dumps(summary, indent=1) + "\n")
    distributed.barrier()
    return summary


def load_pretrained(
    pre_dir: Path, meta: DatasetMeta, allow_other: bool = False, expected_sha256: str | None = None
) -> artifact.PretrainedStage:
    """PRE/pretrained.pt, refused when made from other data or when it is not the stage a
    run recorded (expected_sha256)."""
    path = pre_dir / artifact.PRETRAINED_FILE
    stage = artifact.PretrainedStage.read(path)
    artifact.check_matches(stage, meta, path, allow_other)
    artifact.check_pretrained(expected_sha256, stage.sha256, path, allow_other)
    return stage


PROVENANCE_FILE = "provenance.json"


def _check_provenance(out: Path, record: dict, allow_other: bool) -> None:
    """RUN/provenance.json ties a run folder to its data and pretrain stage: a resume or a
    rerun with other ones is refused (checkpoint and metrics would mix two runs)."""
    path = out / PROVENANCE_FILE
    if not path.is_file() or allow_other:
        return
    old = json.loads(path.read_text())
    for key, what in (("data_identity", "dataset"), ("pretrained_sha256", "pretrain stage")):
        if key in record and old.get(key) and old[key] != record[key]:
            raise DataError(
                f"{out}: this run folder was made with another {what} ({key} "
                f"{old[key][:12]}, now {record[key][:12]}); use a new --out, or pass "
                f"{artifact.MISMATCH_FLAG} to continue it anyway"
            )


def teacher_from(pre: artifact.PretrainedStage, meta: DatasetMeta) -> torch.nn.Module:
    net = build_teacher(meta, pre.teacher_width)
    net.load_state_dict(pre.teacher)
    return net.eval()


def run_condense(
    cfg: RunConfig,
    data_dir: str | Path,
    out: Path,
    pretrained: Path | None = None,
    env: DistEnv | None = None,
    allow_mismatch: bool = False,
) -> dict:
    """Condense into RUN/condensed.pt; without --pretrained the stage runs into RUN/pretrained
    (and is reused when a previous run left it there). Every rank calls this; rank 0 writes."""
    cfg.validate()
    env = env or DistEnv(device=torch.device(cfg.device))
    meta = load_meta(data_dir)
    plan = ClassPlan.of(cfg.condense, meta.num_classes, cfg.seed, env.rank, env.world_size)
    preflight.check_condense(cfg, meta, plan)
    out.mkdir(parents=True, exist_ok=True)
    pre_dir = pretrained or out / "pretrained"
    missing = pretrained is None and not (pre_dir / artifact.PRETRAINED_FILE).is_file()
    if distributed.broadcast_object(missing):
        run_pretrain(cfg, data_dir, pre_dir)
    pre = artifact.PretrainedStage.read(pre_dir / artifact.PRETRAINED_FILE)
    provenance = {
        "dataset": meta.dataset,
        "data_identity": artifact.data_identity(meta.to_dict()),
        "pretrained": str(pre_dir.resolve()),
        "pretrained_sha256": pre.sha256,
    }
    # the run folder's own record first: other data in a run folder is named as such
    _check_provenance(out, provenance, allow_mismatch)
    artifact.check_matches(pre, meta, pre_dir / artifact.PRETRAINED_FILE, allow_mismatch)
    if pretrained is None:
        _check_same_pretrain(cfg, pre, pre_dir)
    if env.is_main:
        fsio.write_json(out / PROVENANCE_FILE, provenance)
    c = cfg.condense
    needs_teacher = c.soft_labels or c.classifier == "teacher" or c.coreset_init == "herding"
    teacher = (
        teacher_from(pre, meta).to(cfg.device).requires_grad_(False) if needs_teacher else None
    )
    log(
        f"Condensing {meta.dataset} into IPC {cfg.condense.ipc} ({cfg.condense.total_steps} steps"
        f"{f', stopping at {cfg.max_steps}' if cfg.max_steps else ''})"
    )
    generator = artifact.rebuild_generator(pre)
    state = condense(
        cfg, data_dir, meta, generator, pre.conditions, out, plan=plan, teacher=teacher, env=env
    )
    payload = artifact.CondensedArtifact(
        generator=state["generator"].state_dict(),
        generator_spec=pre.generator_spec,
        codebook=state["codebook"],
        class_embeddings=state["conditions"],
        teacher_class_embeddings=pre.class_embeddings,
        config=cfg.to_dict(),
        meta=meta.to_dict(),
        version=artifact.version(),
        steps=state["steps"],
        seconds=state["seconds"],
        pretrained=artifact.CondensedArtifact.relative_pretrained(pre_dir, out),
        provenance=provenance,
    )
    path = out / artifact.CONDENSED_FILE
    if env.is_main:
        payload.save(path)
        if state["steps"] == cfg.condense.total_steps:  # finished: nothing left to resume
            (out / checkpoint.CHECKPOINT_FILE).unlink(missing_ok=True)
    distributed.barrier()
    params = sum(v.numel() for v in payload.generator.values() if v.is_floating_point())
    params += payload.codebook.numel()
    pixels = meta.num_classes * cfg.condense.ipc * meta.channels * meta.image_size**2
    summary = {
        "artifact": str(path),
        "artifact_bytes": path.stat().st_size,
        "pixel_set_bytes": pixels * 4,
        "generator_and_codebook_params": params,
        "pixel_set_params": pixels,
        "steps": state["steps"],
        "seconds": round(state["seconds"], 1),
    }
    if env.is_main:
        summary["diagnostics"] = condense_diagnostics(cfg, data_dir, meta, out, payload, pre)
    return summary


def condense_diagnostics(
    cfg: RunConfig,
    data_dir: str | Path,
    meta: DatasetMeta,
    out: Path,
    payload: artifact.CondensedArtifact,
    pre: artifact.PretrainedStage,
) -> dict:
    """RUN/diagnostics.json: each loss term against its chance level, D's accuracy, and the
    set's spread in the teacher's features against random real images of the same IPC."""
    from engine import condense_diagnostics as diag

    metrics = out / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    terms = diag.loss_terms(records, meta.num_classes, cfg.condense.ipc)
    images, labels = synthetic_set(payload)
    real = random_real(data_dir, cfg.condense.ipc, seed=cfg.seed)
    teacher = teacher_from(pre, meta)
    spread = diag.set_spread(images, labels, *real, teacher)
    normalizer = Normalizer(meta.mean, meta.std)
    pixels = diag.pixel_extremes(normalizer.denormalize(images), normalizer.denormalize(real[0]))
    with torch.no_grad():
        guesses = torch.cat([teacher(x).argmax(1) for x in images.split(512)])
    agree = float((guesses == labels).float().mean())
    conditions = diag.condition_similarity(payload.class_embeddings)
    c = cfg.condense
    codes = init_codebook(c.ipc, pre.generator_spec["z_dim"], c.codebook, c.truncation, cfg.seed)
    start = dataclasses.replace(
        payload, generator=pre.generator, class_embeddings=pre.conditions, codebook=codes
    )
    movement = diag.set_movement(
        synthetic_set(start)[0], images, labels, spread["within_class_real"], teacher
    )
    warnings = (
        diag.term_warnings(terms)
        + spread["warnings"]
        + pixels["warnings"]
        + conditions["warnings"]
        + movement["warnings"]
    )
    report = {
        "terms": terms,
        "spread": spread,
        "movement": movement,
        "pixels": pixels,
        "conditions": {k: v for k, v in conditions.items() if k != "warnings"},
        "teacher_agreement": agree,
        "warnings": warnings,
    }
    _write_json(out / "diagnostics.json", report)
    return report


def _check_same_pretrain(cfg: RunConfig, pre: artifact.PretrainedStage, pre_dir: Path) -> None:
    """RUN/pretrained is reused only if it was made with this run's teacher / GAN settings."""
    theirs = RunConfig.from_dict(pre.config)
    for section in ("teacher", "gan"):
        mine, old = getattr(cfg, section).__dict__, getattr(theirs, section).__dict__
        for key, value in mine.items():
            if old.get(key) != value:
                raise ConfigError(
                    f"{pre_dir}: made with {section}.{key}={old.get(key)}, this run asks for "
                    f"{value} (remove that folder, or pass --pretrained to reuse it as it is)"
                )


def load_condensed(run: Path) -> artifact.CondensedArtifact:
    return artifact.CondensedArtifact.read(run / artifact.CONDENSED_FILE)


@torch.no_grad()
def synthetic_set(payload: artifact.CondensedArtifact) -> tuple[torch.Tensor, torch.Tensor]:
    G = artifact.rebuild_generator(payload)
    classes = list(range(payload.meta["num_classes"]))
    images, labels = [], []
    for start in range(0, len(classes), 100):
        x, y = generate(G, payload.codebook, payload.class_embeddings, classes[start : start + 100])
        images.append(x)
        labels.append(y)
    return torch.cat(images), torch.cat(labels).long()


def plain_generator(
    payload: artifact.CondensedArtifact, pre: artifact.PretrainedStage
) -> artifact.CondensedArtifact:
    """The run as its pretrained G would make it with fixed Gaussian codes (the paper's 'uniform
    sample', the `plain` baseline)."""
    ipc, seed = payload.config["condense"]["ipc"], payload.config["seed"]
    codes = init_codebook(ipc, pre.generator_spec["z_dim"], "fixed", 0, seed)
    return dataclasses.replace(
        payload, generator=pre.generator, class_embeddings=pre.conditions, codebook=codes
    )


def save_grid(pixels: torch.Tensor, num_classes: int, ipc: int, path: Path) -> None:
    """uint8 NCHW images, class-major, as a PNG with one row per class (the first 100)."""
    shown = pixels[: min(num_classes, 100) * ipc].float() / 255
    save_image(shown, str(path), nrow=ipc, padding=1)


def run_synthesize(run: Path) -> dict:
    """RUN/synthetic/: images.pt (normalised float32), labels.pt, train.beton (uint8), grid.png."""
    from data_prep.beton import write_beton
    from data_prep.splits import Segment, Split

    payload = load_condensed(run)
    meta = DatasetMeta(**payload.meta)
    images, labels = synthetic_set(payload)
    target = run / SYNTHETIC_DIR
    ipc = payload.config["condense"]["ipc"]
    fsio.remove_leftovers(target)  # of a killed synthesize (the caller holds RUN's lock)
    with fsio.build_dir(target) as out:  # replaces RUN/synthetic/ as a whole once complete
        for name, tensor in (("images.pt", images), ("labels.pt", labels)):
            fsio.save_torch(tensor, out / name)
        pixels = Normalizer(meta.mean, meta.std).denormalize(images)  # uint8 NCHW
        split = Split([Segment(pixels.permute(0, 2, 3, 1).numpy(), labels.numpy(), out)])
        write_beton(out / "train.beton", split, workers=1, description="Writing synthetic beton")
        save_grid(pixels, meta.num_classes, ipc, out / "grid.png")
    return {
        "images": len(labels),
        "classes": meta.num_classes,
        "ipc": ipc,
        "folder": str(target),
        "grid": str(target / "grid.png"),
    }


def _finite(value):
    """Strict JSON: NaN / inf (e.g. a diversity ratio with one class) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def run_evaluate(
    run: Path,
    data_dir: str | Path,
    eval_cfg: EvalConfig | None = None,
    device: str = "cpu",
    seed_index: int | None = None,
    allow_mismatch: bool = False,
) -> dict:
    """Fresh nets trained on the condensed set and on the baselines of the same IPC, N seeds,
    final-epoch accuracy; plus the diagnostics (plain generator samples, diversity).
    `eval_cfg` defaults to the run's own (its preset's `eval` section)."""
    payload = load_condensed(run)
    meta = load_meta(data_dir)
    artifact.check_matches(payload, meta, run / artifact.CONDENSED_FILE, allow_mismatch)
    cfg = RunConfig.from_dict(payload.config)
    eval_cfg = dataclasses.replace(eval_cfg or cfg.eval)  # a copy, checked on creation
    seeds, epochs = eval_cfg.seeds, eval_cfg.epochs
    ipc = cfg.condense.ipc
    recorded = payload.provenance.get("pretrained_sha256")
    pre = load_pretrained(payload.pretrained_dir(run), meta, allow_mismatch, recorded)
    teacher = teacher_from(pre, meta)
    sets = {"condensed": synthetic_set(payload)}
    for name in eval_cfg.baselines:
        if name == "random":
            sets["random"] = random_real(data_dir, ipc, seed=cfg.seed)
        elif name == "herding":
            sets["herding"] = herding(data_dir, ipc, teacher)
        else:
            sets["plain_generator"] = synthetic_set(plain_generator(payload, pre))
    soft = None
    if cfg.condense.soft_labels:
        with torch.no_grad():
            soft = {"condensed_soft_labels": torch.softmax(teacher(sets["condensed"][0]), 1)}
        sets["condensed_soft_labels"] = sets["condensed"]
    if seed_index is not None:  # one seed of N (a job-array element): RUN/eval_parts/
        if not 0 <= seed_index < seeds:
            raise ConfigError(f"--seed-index {seed_index} outside 0..{seeds - 1}")
        eval_cfg.seeds = 1
    results = evaluate_sets(
        sets, data_dir, eval_cfg, seed_offset=seed_index or 0, soft=soft, device=device
    )
    diagnostics = {name: diversity(x, y, teacher) for name, (x, y) in sets.items()}
    report = {
        "ipc": ipc,
        "epochs": epochs,
        "protocol": f"fresh nets trained {epochs} epochs on each set with DSA "
        f"({eval_cfg.dsa_strategy}, {protocol_mode(eval_cfg.dsa_mode)}), SGD lr {eval_cfg.lr} "
        f"momentum {eval_cfg.momentum} wd "
        f"{eval_cfg.weight_decay}, lr x0.1 at half, batch {eval_cfg.batch_size}; final-epoch "
        f"test accuracy (%), mean and population std over {seeds} seeds; hard labels"
        + ("; 'condensed_soft_labels': the same images with teacher soft labels" if soft else ""),
        "results": results,
        "diagnostics": {
            "plain_generator": "the pretrained generator with fixed Gaussian codes, before "
            "condensation (the paper's 'uniform sample')",
            "diversity_teacher_features": diagnostics,
        },
        "dataset": meta.dataset,
        "eval": dataclasses.asdict(eval_cfg),
        "config": cfg.to_dict(),
        "version": artifact.version(),
    }
    report["ranks"] = distributed.world()[1]
    if distributed.world()[0] == 0:
        if seed_index is None:
            _write_json(run / "eval.json", report)
        else:
            report["seed_index"], report["seeds"] = seed_index, seeds
            _write_json(run / EVAL_PARTS / f"seed_{seed_index}.json", report)
    return report


EVAL_PARTS = "eval_parts"


def protocol_mode(mode: str) -> str:
    if mode == "single":
        return "single-op mode: one op per batch, parameters per image, as the field's code"
    return "all-ops mode: every op on every image, not the field's protocol"


def _write_json(path: Path, report: dict) -> None:
    fsio.write_json(path, _finite(report), allow_nan=False)


def gather_evaluation(run: Path, seeds: int) -> dict:
    """Merge RUN/eval_parts/seed_{0..N-1}.json (one job-array element each) into RUN/eval.json,
    exactly what one `gencond evaluate --seeds N` writes (seed i trains with seed i)."""
    parts = []
    for i in range(seeds):
        path = run / EVAL_PARTS / f"seed_{i}.json"
        if not path.is_file():
            raise DataError(f"{path}: missing (evaluation seed {i} did not finish)")
        parts.append(json.loads(path.read_text()))
    report = {k: v for k, v in parts[0].items() if k not in ("seed_index", "seeds")}
    results: dict = {}
    for name, by_model in parts[0]["results"].items():
        results[name] = {}
        for model in by_model:
            accs = [p["results"][name][model]["accs"][0] for p in parts]
            results[name][model] = {
                "mean": float(np.mean(accs)),
                "std": float(np.std(accs)),
                "accs": accs,
            }
    report["results"] = results
    report["array_elements"] = seeds
    _write_json(run / "eval.json", report)
    return report
