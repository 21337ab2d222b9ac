"""The stages a user runs: pretrain -> condense -> synthesize -> evaluate. Each reads and
writes the files of the contract and returns a summary for the closing table."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torchvision.utils import save_image

from common import fsio
from common.console import log
from common.errors import ConfigError, DataError
from data_prep.loaders import Normalizer
from data_prep.meta import DatasetMeta, load_meta
from engine import artifact, checkpoint, distributed, preflight
from engine.class_plan import ClassPlan
from engine.condense import condense
from engine.config import EvalConfig, RunConfig, with_defaults
from engine.coreset_init import FIT_FILE
from engine.distributed import DistEnv
from engine.evaluate import diversity, evaluate_sets, herding, random_real
from engine.gan import pretrain_gan
from engine.generator import condition_table, generate, init_codebook
from engine.teacher import build_teacher, class_embeddings, train_teacher

SYNTHETIC_DIR = "synthetic"


def run_pretrain(cfg: RunConfig, data_dir: str | Path, out: Path) -> dict:
    """Teacher, class embeddings and the GAN-pretrained generator -> PRE/pretrained.pt.
    PRE/pretrain_checkpoint.pt is written every gan.checkpoint_every steps and on SIGTERM /
    SIGUSR2 (then Preempted); a run that finds one made with the same settings resumes."""
    from engine import condense_diagnostics as diag

    meta = load_meta(data_dir)
    device = torch.device(cfg.device)
    identity = artifact.data_identity(meta.to_dict())
    path = out / checkpoint.PRETRAIN_CHECKPOINT_FILE
    saved = None
    if path.is_file():
        saved = checkpoint.Checkpoint.read(path, stage="pretrain")
        _check_pretrain_resumable(saved, cfg, identity, path)
        log(
            f"Resuming from {path} at {_PHASE_STEP[saved.modules['phase']]} {saved.step} (saved by "
            f"{saved.world_size} rank(s))"
        )
    ckpt = checkpoint.Checkpointer(
        path,
        cfg.gan.checkpoint_every,
        "pretrain",
        cfg.to_dict(),
        device,
        saved.seconds if saved else 0.0,
    )
    modules = saved.modules if saved else {"phase": "teacher", "teacher": None}

    def on_step(phase: str, extra: dict):
        def step_done(step: int, state) -> None:
            ckpt.step_done(
                step,
                lambda: {"phase": phase, phase: state(), **extra, "data_identity": identity},
                _PHASE_STEP[phase],
            )

        return step_done

    try:
        if modules["phase"] == "teacher":
            log(
                f"Training the teacher ConvNet (width {cfg.teacher.width}, "
                f"{cfg.teacher.epochs} epochs)"
            )
            teacher, teacher_acc = train_teacher(
                data_dir,
                meta,
                cfg.teacher,
                cfg.seed,
                device,
                resume=modules["teacher"],
                on_step=on_step("teacher", {}),
            )
            embeddings = class_embeddings(teacher, data_dir, meta, device)
        else:
            teacher = build_teacher(meta, cfg.teacher.width)
            teacher.load_state_dict(modules["trained_teacher"])
            teacher = teacher.to(device).eval()
            teacher_acc, embeddings = modules["teacher_accuracy"], modules["class_embeddings"]
        log(f"Teacher test accuracy {teacher_acc:.2f} %")
        trained = {
            "trained_teacher": {k: v.cpu() for k, v in teacher.state_dict().items()},
            "teacher_accuracy": teacher_acc,
            "class_embeddings": embeddings,
        }
        conditions = condition_table(cfg.gan.condition, embeddings, cfg.gan.condition_norm)
        if modules["phase"] == "teacher" and cfg.gan.checkpoint_every:  # the teacher is done
            ckpt.save(0, {"phase": "gan", "gan": None, **trained, "data_identity": identity})
        log(f"Pretraining the conditional GAN ({cfg.gan.steps} steps)")
        G, gan_log = pretrain_gan(
            data_dir,
            meta,
            cfg.gan,
            conditions,
            cfg.seed,
            device,
            resume=modules.get("gan"),
            on_step=on_step("gan", trained),
        )
    finally:
        ckpt.close()
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
        seconds=ckpt.seconds,
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
        fsio.write_json(out / "pretrain.json", summary)
        path.unlink(missing_ok=True)  # finished: nothing left to resume
    distributed.barrier()
    return summary


_PHASE_STEP = {"teacher": "teacher step", "gan": "GAN step"}
# settings that do not change what the pretrain stage makes
_PRETRAIN_FREE = {"gan": ("checkpoint_every",)}


def _check_pretrain_resumable(
    saved: checkpoint.Checkpoint, cfg: RunConfig, identity: str, path: Path
) -> None:
    """A pretrain checkpoint is resumed only with the same seed, teacher.* and gan.* settings
    (gan.checkpoint_every and the device may change) and the same data."""
    theirs = RunConfig.from_dict(saved.config)
    differ = [] if theirs.seed == cfg.seed else [("seed", theirs.seed, cfg.seed)]
    for section in ("teacher", "gan"):
        mine, old = getattr(cfg, section).__dict__, getattr(theirs, section).__dict__
        differ += [
            (f"{section}.{k}", old.get(k), v)
            for k, v in mine.items()
            if k not in _PRETRAIN_FREE.get(section, ()) and old.get(k) != v
        ]
    if differ:
        key, old, new = differ[0]
        raise ConfigError(
            f"{path} was written with {key}={old}, this run asks for {new}; use a new --out "
            f"folder (or delete the checkpoint to start over)"
        )
    if saved.modules.get("data_identity") != identity:
        raise DataError(
            f"{path} was written for other data (dataset identity "
            f"{str(saved.modules.get('data_identity'))[:12]}, this data's {identity[:12]}); use "
            f"a new --out folder (or delete the checkpoint to start over)"
        )


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
# what a condensation leaves in RUN/ and what is made from it: replaced together or not at all
RUN_OUTPUTS = (
    artifact.CONDENSED_FILE,
    checkpoint.CHECKPOINT_FILE,
    FIT_FILE,
    "metrics.jsonl",
    "diagnostics.json",
    "eval.json",
    "eval_parts",
    SYNTHETIC_DIR,
    PROVENANCE_FILE,
)
# keys a finished or checkpointed run may change and still be the same run
RESUMABLE_KEYS = ("max_steps", "device", "eval")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _differs(mine: dict, theirs: dict, ignore: tuple[str, ...] = RESUMABLE_KEYS) -> str | None:
    """The first config key (dotted) on which two recorded configs differ, else None."""
    for key in sorted({*mine, *theirs} - set(ignore)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differs(a, b, ())
            if inner:
                return f"{key}.{inner}"
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            return key
    return None


def check_replace(cfg: RunConfig, out: Path, force: bool, is_main: bool = True) -> None:
    """A run folder holding a run (condensed.pt or a checkpoint) made with another config is
    refused unless `force`; with `force` that run's outputs (condensed.pt, checkpoint, metrics,
    synthetic/, eval.json, eval_parts/, ...) are removed first, so nothing of it stays beside
    the new one. The same config resumes or redoes the run as before."""
    recorded = None
    for path, read in (
        (out / artifact.CONDENSED_FILE, lambda p: artifact.CondensedArtifact.read(p).config),
        (out / checkpoint.CHECKPOINT_FILE, lambda p: checkpoint.Checkpoint.read(p).config),
    ):
        if path.is_file():
            try:
                key = _differs(cfg.to_dict(), with_defaults(read(path)))
            except DataError:
                if not force:
                    raise
                key = "(unreadable)"
            if key:
                recorded = (path, key)
                break
    if recorded is None:
        return
    path, key = recorded
    if not force:
        raise ConfigError(
            f"{path}: a run made with another config ({key} differs) is in this folder; use a "
            f"new --out, or pass --force to replace it (its synthetic/ and eval.json go too)"
        )
    log(f"--force: removing the run made with another config from {out} ({key} differed)")
    if is_main:
        _remove([out / name for name in RUN_OUTPUTS])
    distributed.barrier()


def _same_stage(
    cfg: RunConfig,
    meta: DatasetMeta,
    stage: artifact.PretrainedStage,
    keys: tuple[str, ...] = ("teacher", "gan", "seed"),
) -> str | None:
    """The first setting on which a pretrain stage differs from what cfg and the data would
    make (the dataset, then `keys` of the config), else None."""
    if artifact.data_identity(stage.meta) != artifact.data_identity(meta.to_dict()):
        return "the dataset"
    mine, theirs = cfg.to_dict(), stage.config
    return _differs({k: mine[k] for k in keys}, {k: theirs.get(k) for k in keys}, ())


def existing_pretrain(cfg: RunConfig, data_dir: str | Path, out: Path, force: bool) -> dict | None:
    """`pretrain` into a folder that holds a stage: the same settings reuse it (its summary;
    rewriting it would change the sha256 the runs made from it record), other settings are
    refused unless `force`, which removes the old stage first."""
    path = out / artifact.PRETRAINED_FILE
    if not path.is_file():
        return None
    meta = load_meta(data_dir)
    try:
        differs = _same_stage(cfg, meta, artifact.PretrainedStage.read(path))
    except DataError:
        if not force:
            raise
        differs = "(unreadable)"
    if differs is None:
        log(f"{path} was made with these settings: reused (pass another --out to redo it)")
        summary_path = out / "pretrain.json"
        summary = fsio.read_json(summary_path, "pretrain summary") if summary_path.is_file() else {}
        return {**summary, "path": str(path), "reused": True, "warnings": []}
    if not force:
        raise ConfigError(
            f"{path}: a pretrain stage made with other settings ({differs} differs) is here, and "
            "the runs made from it record its sha256; use a new --out, or pass --force to "
            "replace it (those runs can then no longer be evaluated)"
        )
    if distributed.world()[0] == 0:
        _remove([path, out / "pretrain.json"])
    distributed.barrier()
    return None


def _check_provenance(out: Path, record: dict, allow_other: bool) -> None:
    """RUN/provenance.json ties a run folder to its data and pretrain stage: a resume or a
    rerun with other ones is refused (checkpoint and metrics would mix two runs)."""
    path = out / PROVENANCE_FILE
    if not path.is_file() or allow_other:
        return
    old = fsio.read_json(path, "run provenance")
    for key, what in (("data_identity", "dataset"), ("pretrained_sha256", "pretrain stage")):
        if key in record and old.get(key) and old[key] != record[key]:
            raise DataError(
                f"{out}: this run folder was made with another {what} ({key} "
                f"{old[key][:12]}, now {record[key][:12]}); use a new --out, or pass "
                f"{artifact.MISMATCH_FLAG} to continue it anyway"
            )


def _replace_own_pretrain(cfg: RunConfig, meta: DatasetMeta, pre_dir: Path, is_main: bool) -> None:
    """condense --force: RUN/pretrained made with other teacher / GAN settings (or data) is
    removed with the run made from it, to be redone with this config."""
    if not (pre_dir / artifact.PRETRAINED_FILE).is_file():
        return
    try:  # the seed may differ: a run's own stage is reused across seeds (_check_same_pretrain)
        stage = artifact.PretrainedStage.read(pre_dir / artifact.PRETRAINED_FILE)
        differs = _same_stage(cfg, meta, stage, ("teacher", "gan"))
    except DataError:
        differs = "(unreadable)"
    if differs:
        log(f"--force: removing {pre_dir} ({differs} differed) and the run made from it")
        if is_main:
            _remove([pre_dir, *(pre_dir.parent / name for name in RUN_OUTPUTS)])
        distributed.barrier()


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
    force: bool = False,
    fit_cache: Path | None = None,
) -> dict:
    """Condense into RUN/condensed.pt; without --pretrained the stage runs into RUN/pretrained
    (and is reused when a previous run left it there). Every rank calls this; rank 0 writes.
    fit_cache: a folder where a coreset start is kept for other runs with the same fit."""
    cfg.validate()
    env = env or DistEnv(device=torch.device(cfg.device))
    meta = load_meta(data_dir)
    plan = ClassPlan.of(cfg.condense, meta.num_classes, cfg.seed, env.rank, env.world_size)
    preflight.check_condense(cfg, meta, plan)
    out.mkdir(parents=True, exist_ok=True)
    pre_dir = pretrained or out / "pretrained"
    if force and pretrained is None:
        _replace_own_pretrain(cfg, meta, pre_dir, env.is_main)
    check_replace(cfg, out, force, env.is_main)
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
    if pretrained is not None:
        moot = stage_settings_not_applied(cfg, pre, pre_dir)
        if moot:
            provenance["not_applied"] = moot
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
        cfg,
        data_dir,
        meta,
        generator,
        pre.conditions,
        out,
        plan=plan,
        teacher=teacher,
        env=env,
        fit_cache=fit_cache,
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
            (out / FIT_FILE).unlink(missing_ok=True)
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
    set's spread in the teacher's features against random real images (at least
    diag.REAL_PER_CLASS a class); terms that cannot apply (IPC 1, a weight of 0) are not judged."""
    from engine import condense_diagnostics as diag

    metrics = out / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    c = cfg.condense
    weights = {"adv": c.weight_gan, "cls": c.weight_gan * c.weight_cls}
    weights |= {"feature": c.weight_feature, "intra": c.weight_intra, "inter": c.weight_inter}
    skip = diag.terms_that_cannot_apply(
        meta.num_classes,
        c.ipc,
        weights,
        disc_fresh_every_step=c.disc_reinit and c.inner_iterations * c.gen_steps == 1,
        head_classifier=c.classifier == "head",
    )
    terms = diag.loss_terms(records, meta.num_classes, c.ipc, skip)
    images, labels = synthetic_set(payload)
    smallest = int(np.diff(meta.class_offsets).min())
    real = random_real(data_dir, max(c.ipc, min(diag.REAL_PER_CLASS, smallest)), seed=cfg.seed)
    teacher = teacher_from(pre, meta)
    spread = diag.set_spread(images, labels, *real, teacher)
    normalizer = Normalizer(meta.mean, meta.std)
    pixels = diag.pixel_extremes(normalizer.denormalize(images), normalizer.denormalize(real[0]))
    with torch.no_grad():
        guesses = torch.cat([teacher(x).argmax(1) for x in images.split(512)])
    agree = float((guesses == labels).float().mean())
    conditions = diag.condition_similarity(payload.class_embeddings)
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


def stage_settings_not_applied(
    cfg: RunConfig, pre: artifact.PretrainedStage, pre_dir: Path
) -> dict[str, dict]:
    """teacher.* and gan.* values of cfg that a given pretrain stage makes moot (it was made
    with others): {key: {"asked", "stage"}}, warned about once here and recorded in the run's
    provenance, so the config a run records is not mistaken for what made its stage."""
    theirs = RunConfig.from_dict(pre.config)
    moot = {}
    for section in ("teacher", "gan"):
        mine, old = getattr(cfg, section).__dict__, getattr(theirs, section).__dict__
        for key, value in mine.items():
            if old.get(key) != value:
                moot[f"{section}.{key}"] = {"asked": value, "stage": old.get(key)}
    if moot:
        shown = ", ".join(f"{k}={v['asked']} (stage: {v['stage']})" for k, v in moot.items())
        log(
            f"[bold yellow]warning:[/] {escape(shown)} did not apply: --pretrained {pre_dir} "
            f"was made with the stage's values (recorded as not applied in {PROVENANCE_FILE})"
        )
    return moot


def _check_same_pretrain(cfg: RunConfig, pre: artifact.PretrainedStage, pre_dir: Path) -> None:
    """RUN/pretrained is reused only if it was made with this run's teacher / GAN settings."""
    theirs = RunConfig.from_dict(pre.config)
    for section in ("teacher", "gan"):
        mine, old = getattr(cfg, section).__dict__, getattr(theirs, section).__dict__
        for key, value in mine.items():
            if key not in _PRETRAIN_FREE.get(section, ()) and old.get(key) != value:
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
    fsio.write_file(path, lambda f: save_image(shown, f, format="png", nrow=ipc, padding=1))


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
    condensed_sha256 = fsio.sha256_file(run / artifact.CONDENSED_FILE)
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
    progress = _EvalProgress(run, payload, pre, meta, eval_cfg, device, seed_index or 0, sets)
    if progress.done:
        log(f"{len(progress.done)} of {progress.total} trainings done before, kept")
    try:
        results = evaluate_sets(
            sets,
            data_dir,
            eval_cfg,
            seed_offset=seed_index or 0,
            soft=soft,
            device=device,
            done=progress.done,
            on_result=progress.record,
        )
    except checkpoint.StopSignal as e:
        raise checkpoint.Stopped(
            e.signal_name,
            f"stopped by {e.signal_name}: run the same command again to finish "
            f"({progress.finished()} of {progress.total} trainings done, kept in "
            f"{progress.folder})",
        ) from None
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
        "condensed_sha256": condensed_sha256,
        "version": artifact.version(),
    }
    report["ranks"] = distributed.world()[1]
    if distributed.world()[0] == 0:
        if seed_index is None:
            _write_json(run / "eval.json", report)
        else:
            report["seed_index"], report["seeds"] = seed_index, seeds
            _write_json(run / EVAL_PARTS / f"seed_{seed_index}.json", report)
        progress.remove()
    return report


EVAL_PARTS = "eval_parts"
EVAL_PROGRESS = "eval_progress"


class _EvalProgress:
    """RUN/eval_progress/SET-MODEL-seedN-KEY.json: the test accuracy of each training of an
    evaluation as soon as it ends (by the rank that ran it), so an evaluation stopped by a
    signal is finished by a rerun without training those again. KEY is a hash of everything
    the accuracy depends on (condensed.pt, the pretrain stage, the data, the eval.* protocol
    but its seeds / models / baselines, the device): a file of another protocol is never
    used. The evaluation's files are removed once eval.json (or its part) is written."""

    def __init__(self, run, payload, pre, meta, eval_cfg, device, seed_offset, sets):
        protocol = dataclasses.asdict(eval_cfg)
        for key in ("seeds", "models", "baselines"):
            protocol.pop(key)
        described = {
            "condensed": fsio.sha256_file(run / artifact.CONDENSED_FILE),
            "pretrained": pre.sha256,
            "data": artifact.data_identity(meta.to_dict()),
            "eval": protocol,
            "device": str(device),
        }
        text = json.dumps(_finite(described), sort_keys=True, default=str)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.folder, self.offset = run / EVAL_PROGRESS, seed_offset
        seeds = range(eval_cfg.seeds)
        self.jobs = [(s, m, i) for s in sets for m in eval_cfg.models for i in seeds]
        self.total = len(self.jobs)
        self.done = {}
        for job in self.jobs:
            path = self.path(job)
            try:
                self.done[job] = float(json.loads(path.read_text())["accuracy"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # absent, or torn by a crash outside fsio: trained again

    def path(self, job: tuple[str, str, int]) -> Path:
        name, model, i = job
        return self.folder / f"{name}-{model}-seed{self.offset + i}-{self.key}.json"

    def record(self, job: tuple[str, str, int], accuracy: float) -> None:
        name, model, i = job
        fsio.write_json(
            self.path(job),
            {"set": name, "model": model, "seed": self.offset + i, "accuracy": accuracy},
        )

    def finished(self) -> int:
        return sum(self.path(job).is_file() for job in self.jobs)

    def remove(self) -> None:
        for job in self.jobs:
            self.path(job).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: another evaluation's files
            self.folder.rmdir()


def protocol_mode(mode: str) -> str:
    if mode == "single":
        return "single-op mode: one op per batch, parameters per image, as the field's code"
    return "all-ops mode: every op on every image, not the field's protocol"


def _write_json(path: Path, report: dict) -> None:
    fsio.write_json(path, _finite(report), allow_nan=False)


PART_SETTINGS = ("eval", "epochs", "ipc", "dataset")


def check_parts(run: Path, parts: list[dict], seeds: int) -> None:
    """Every part is one seed of the same N-seed evaluation (the same protocol and epochs) of
    the run's current condensed.pt (its sha256): parts that are not refuse the merge."""
    current = fsio.sha256_file(run / artifact.CONDENSED_FILE)
    for i, part in enumerate(parts):
        name = f"{EVAL_PARTS}/seed_{i}.json"
        made = part.get("condensed_sha256")
        if made != current:
            what = f"condensed.pt {made[:12]}" if made else "no condensed.pt hash (older gencond)"
            raise DataError(
                f"{run}: {name} was evaluated from {what}, but {artifact.CONDENSED_FILE} is now "
                f"{current[:12]}; redo that seed (evaluate --seed-index {i})"
            )
        if part.get("seed_index") != i or part.get("seeds") != seeds:
            raise DataError(
                f"{run}: {name} is seed {part.get('seed_index')} of {part.get('seeds')}, not seed "
                f"{i} of {seeds}; redo it (evaluate --seeds {seeds} --seed-index {i})"
            )
        for key in PART_SETTINGS:
            first, mine = parts[0].get(key), part.get(key)
            if mine != first:
                if isinstance(first, dict) and isinstance(mine, dict):
                    key = next(k for k in sorted({*first, *mine}) if first.get(k) != mine.get(k))
                    first, mine = first.get(key), mine.get(key)
                    key = f"eval.{key}"
                raise DataError(
                    f"{run}: {EVAL_PARTS}/seed_0.json and {name} were made with different "
                    f"settings ({key} {first} vs {mine}); redo the parts with one setting"
                )


def gather_evaluation(run: Path, seeds: int) -> dict:
    """Merge RUN/eval_parts/seed_{0..N-1}.json (one job-array element each) into RUN/eval.json,
    exactly what one `gencond evaluate --seeds N` writes (seed i trains with seed i)."""
    parts = []
    for i in range(seeds):
        path = run / EVAL_PARTS / f"seed_{i}.json"
        if not path.is_file():
            raise DataError(f"{path}: missing (evaluation seed {i} did not finish)")
        parts.append(fsio.read_json(path, "evaluation part"))
    check_parts(run, parts, seeds)
    report = {k: v for k, v in parts[0].items() if k not in ("seed_index", "seeds")}
    report["eval"] = {**report["eval"], "seeds": seeds}  # each part trained 1 of the N
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
