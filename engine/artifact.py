"""Files a run leaves: the pretrain stage (PRE/pretrained.pt) and the condensed artifact
(RUN/condensed.pt), each one torch file written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from data_prep.meta import DatasetMeta, gencond_version
from engine.errors import DataError
from engine.generator import Generator

PRETRAINED_FILE = "pretrained.pt"
CONDENSED_FILE = "condensed.pt"
CONDENSED_WHAT = "condensed artifact (condensed.pt)"


def save_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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


def check_matches(payload: dict, meta: DatasetMeta, path: Path) -> None:
    """Refuse an artifact made from another dataset (classes, size, channels)."""
    theirs = payload["meta"]
    for key in ("num_classes", "image_size", "channels"):
        if theirs[key] != getattr(meta, key):
            raise DataError(
                f"{path}: made for {theirs['dataset']} ({key} {theirs[key]}), but the data is "
                f"{meta.dataset} ({key} {getattr(meta, key)})"
            )


def version() -> str:
    return gencond_version()
