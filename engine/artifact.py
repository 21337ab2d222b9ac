"""Files a run leaves: the pretrain stage (PRE/pretrained.pt) and the condensed artifact
(RUN/condensed.pt), each one torch file written atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from data_prep import fsio
from data_prep.errors import DataError
from data_prep.meta import DatasetMeta, gencond_version
from engine.generator import Generator

PRETRAINED_FILE = "pretrained.pt"
CONDENSED_FILE = "condensed.pt"
CONDENSED_WHAT = "condensed artifact (condensed.pt)"


def require(path: str | Path, what: str) -> Path:
    """The path, or one DataError line when no file is there."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no {what} here")
    return path


def load(path: str | Path, what: str) -> dict:
    path = require(path, what)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise DataError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or "generator" not in payload:
        raise DataError(f"{path}: not a gencond {what}")
    return payload


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


def rebuild_generator(payload: dict) -> Generator:
    g = Generator(**payload["generator_spec"])
    g.load_state_dict(payload["generator"])
    return g.eval()


MISMATCH_FLAG = "--allow-mismatch"
IDENTITY_KEYS = (
    "dataset", "num_classes", "image_size", "channels", "train_count", "test_count",
    "train_class_counts", "test_class_counts", "mean", "std", "class_names",
)  # fmt: skip


def data_identity(meta: dict) -> str:
    """What identifies a prepared dataset, wherever its folder lies: the sources' sha256 that
    meta.json records, plus the counts and exact pixel statistics prep computed from them
    (generated data has no source files). Paths and dates are left out: the same sources
    prepared twice, or a moved folder, keep their identity."""
    described = {k: meta.get(k) for k in IDENTITY_KEYS}
    described["sources"] = [s.get("sha256") for s in meta.get("sources", [])]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def check_matches(payload: dict, meta: DatasetMeta, path: Path, allow_other: bool = False) -> None:
    """Refuse an artifact made for another dataset: another shape always, other data of the
    same shape unless allow_other (the user's explicit --allow-mismatch)."""
    theirs = payload["meta"]
    for key in ("num_classes", "image_size", "channels"):
        if theirs[key] != getattr(meta, key):
            raise DataError(
                f"{path}: made for {theirs['dataset']} ({key} {theirs[key]}), but the data is "
                f"{meta.dataset} ({key} {getattr(meta, key)})"
            )
    mine, made = data_identity(meta.to_dict()), data_identity(theirs)
    if mine != made and not allow_other:
        what = (f"{theirs['dataset']}, but the data is {meta.dataset}"
                if theirs["dataset"] != meta.dataset else
                f"other {meta.dataset} data (dataset identity {made[:12]}, this data's "
                f"{mine[:12]})")  # fmt: skip
        raise DataError(f"{path}: made from {what}; pass {MISMATCH_FLAG} to use it anyway")


def check_pretrained(expected: str | None, path: Path, allow_other: bool = False) -> str:
    """sha256 of a pretrain stage file, refused when a run recorded another one."""
    actual = fsio.sha256_file(path)
    if expected and actual != expected and not allow_other:
        raise DataError(
            f"{path}: not the pretrain stage this run used (sha256 {actual[:12]}, the run "
            f"recorded {expected[:12]}; it was replaced since); pass {MISMATCH_FLAG} to use it "
            f"anyway"
        )
    return actual


def version() -> str:
    return gencond_version()
