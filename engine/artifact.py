"""Files a run leaves: the pretrain stage (PRE/pretrained.pt) and the condensed artifact
(RUN/condensed.pt), each a typed class written atomically as one torch file: a dict of its
fields plus `format_version` (docs/data_formats.md). Paths inside a run are relative to it, so
a run folder copied elsewhere still synthesizes and evaluates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import fsio
from common.errors import DataError
from data_prep.meta import DatasetMeta, gencond_version
from engine.generator import Generator

PRETRAINED_FILE = "pretrained.pt"
CONDENSED_FILE = "condensed.pt"
CONDENSED_WHAT = "condensed artifact (condensed.pt)"
PRETRAINED_WHAT = "pretrained stage (run `gencond pretrain` first)"
FORMAT_VERSION = 1  # of pretrained.pt and condensed.pt; files without the key are version 0


def require(path: str | Path, what: str) -> Path:
    """The path, or one DataError line when no file is there."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no {what} here")
    return path


def load(path: str | Path, what: str) -> dict:
    """The dict a gencond torch file holds, refused in one line when unreadable, not ours, or
    written by a newer gencond (a format_version above FORMAT_VERSION)."""
    path = require(path, what)
    payload = fsio.load_torch(path, what)  # data only: never runs what the file names
    if not isinstance(payload, dict) or "generator" not in payload:
        raise DataError(f"{path}: not a gencond {what}")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"{path}: {what} in format version {version}; this gencond reads up to "
            f"{FORMAT_VERSION} (upgrade gencond)"
        )
    return payload


def _from_payload(cls, payload: dict, path: Path, what: str):
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in payload]
    if missing:
        raise DataError(f"{path}: not a complete {what} (no {missing[0]!r} key)")
    for key in ("generator", "codebook", "class_embeddings", "conditions", "teacher"):
        bad = non_finite(payload.get(key), key)
        if bad:
            raise DataError(
                f"{path}: {bad} holds NaN or inf values (a diverged or damaged {what}); "
                "it would only produce NaN images: redo the stage"
            )
    return cls(**{k: payload[k] for k in names if k in payload})


def non_finite(obj: Any, name: str) -> str | None:
    """The name of the first floating tensor in obj (a tensor or a dict of them) holding a NaN
    or an inf, else None."""
    if torch.is_tensor(obj):
        return name if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        for key, value in obj.items():
            bad = non_finite(value, f"{name}[{key!r}]")
            if bad:
                return bad
    return None


def _stored(obj) -> dict:
    """The dict written to disk: every stored field plus the format version."""
    out = {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.metadata.get("stored", True)
    }
    out["format_version"] = FORMAT_VERSION
    return out


@dataclass
class PretrainedStage:
    """PRE/pretrained.pt: the teacher, the class embeddings and the GAN-pretrained generator."""

    generator: dict[str, torch.Tensor]
    generator_spec: dict[str, Any]
    teacher: dict[str, torch.Tensor]
    teacher_width: int
    class_embeddings: torch.Tensor
    conditions: torch.Tensor
    config: dict[str, Any]
    meta: dict[str, Any]
    version: str
    seconds: float
    teacher_accuracy: float = float("nan")
    gan_log: Any = None
    sha256: str = field(default="", metadata={"stored": False})  # of the file it was read from

    def save(self, path: Path) -> None:
        fsio.save_torch(_stored(self), path)

    @classmethod
    def read(cls, path: Path) -> PretrainedStage:
        stage = _from_payload(cls, load(path, PRETRAINED_WHAT), path, PRETRAINED_WHAT)
        stage.sha256 = fsio.sha256_file(path)
        return stage


@dataclass
class CondensedArtifact:
    """RUN/condensed.pt: the codebook and the fine-tuned class-conditional generator, with the
    config and dataset they came from. `pretrained` is the pretrain folder relative to the run
    folder (absolute in version-0 files)."""

    generator: dict[str, torch.Tensor]
    generator_spec: dict[str, Any]
    codebook: torch.Tensor
    class_embeddings: torch.Tensor
    config: dict[str, Any]
    meta: dict[str, Any]
    version: str
    teacher_class_embeddings: torch.Tensor | None = None
    steps: int = 0
    seconds: float = 0.0
    pretrained: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        fsio.save_torch(_stored(self), path)

    @classmethod
    def read(cls, path: Path) -> CondensedArtifact:
        return _from_payload(cls, load(path, CONDENSED_WHAT), path, CONDENSED_WHAT)

    @staticmethod
    def relative_pretrained(pre_dir: Path, run: Path) -> str:
        """The pretrain folder as the artifact stores it: relative to the run folder."""
        return Path(os.path.relpath(pre_dir.resolve(), run.resolve())).as_posix()

    def pretrained_dir(self, run: Path) -> Path:
        """Where the pretrain stage is: beside the run as recorded (it moved with the run), else
        at the absolute path the run was made with (only the run folder moved)."""
        recorded = Path(self.pretrained)
        here = recorded if recorded.is_absolute() else run / recorded
        if (here / PRETRAINED_FILE).is_file():
            return here
        made_at = self.provenance.get("pretrained")
        if made_at and (Path(made_at) / PRETRAINED_FILE).is_file():
            return Path(made_at)
        raise DataError(
            f"{run / CONDENSED_FILE}: its pretrain stage is neither at {here} nor at "
            f"{made_at or here} (copy the pretrain folder beside the run as {self.pretrained})"
        )


def generator_spec(g: Generator, proj_dim: int, width: int) -> dict:
    return {
        "z_dim": g.z_dim,
        "cond_dim": g.cond_dim,
        "proj_dim": proj_dim,
        "channels": g.out[1].out_channels,
        "image_size": g.image_size,
        "width": width,
        "mean": g.mean.flatten().tolist(),
        "std": g.std.flatten().tolist(),
    }


def rebuild_generator(stage: PretrainedStage | CondensedArtifact) -> Generator:
    g = Generator(**stage.generator_spec)
    g.load_state_dict(stage.generator)
    return g.eval()


MISMATCH_FLAG = "--allow-mismatch"
IDENTITY_KEYS = (
    "dataset",
    "num_classes",
    "image_size",
    "channels",
    "train_count",
    "test_count",
    "train_class_counts",
    "test_class_counts",
    "mean",
    "std",
    "class_names",
)


def data_identity(meta: dict) -> str:
    """What identifies a prepared dataset, wherever its folder lies: the sources' sha256 that
    meta.json records, plus the counts and exact pixel statistics prep computed from them
    (generated data has no source files). Paths and dates are left out: the same sources
    prepared twice, or a moved folder, keep their identity."""
    described = {k: meta.get(k) for k in IDENTITY_KEYS}
    described["sources"] = [s.get("sha256") for s in meta.get("sources", [])]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def check_matches(
    stage: PretrainedStage | CondensedArtifact,
    meta: DatasetMeta,
    path: Path,
    allow_other: bool = False,
) -> None:
    """Refuse an artifact made for another dataset: another shape always, other data of the
    same shape unless allow_other (the user's explicit --allow-mismatch)."""
    theirs = stage.meta
    for key in ("num_classes", "image_size", "channels"):
        if theirs[key] != getattr(meta, key):
            raise DataError(
                f"{path}: made for {theirs['dataset']} ({key} {theirs[key]}), but the data is "
                f"{meta.dataset} ({key} {getattr(meta, key)})"
            )
    mine, made = data_identity(meta.to_dict()), data_identity(theirs)
    if mine != made and not allow_other:
        what = (
            f"{theirs['dataset']}, but the data is {meta.dataset}"
            if theirs["dataset"] != meta.dataset
            else f"other {meta.dataset} data (dataset identity {made[:12]}, this data's "
            f"{mine[:12]})"
        )
        raise DataError(f"{path}: made from {what}; pass {MISMATCH_FLAG} to use it anyway")


def check_pretrained(
    expected: str | None, actual: str, path: Path, allow_other: bool = False
) -> None:
    """A pretrain stage file (of sha256 `actual`) refused when a run recorded another one."""
    if expected and actual != expected and not allow_other:
        raise DataError(
            f"{path}: not the pretrain stage this run used (sha256 {actual[:12]}, the run "
            f"recorded {expected[:12]}; it was replaced since); pass {MISMATCH_FLAG} to use it "
            f"anyway"
        )


def version() -> str:
    return gencond_version()
