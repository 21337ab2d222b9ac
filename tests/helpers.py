"""What several test modules share: paths, the toy dataset, tiny configs and command runners
(test modules import this, never each other)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from data_prep.options import PrepOptions
from data_prep.prepare import prepare_arrays
from data_prep.splits import RawDataset, Segment, Split

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def run_cli(
    *args: str, timeout: float = 300, env: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run the real `gencond` command in a fresh process (`env`: the whole environment; `kw`:
    more subprocess.run arguments)."""
    env = env or {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        **kw,
    )


TINY = [
    "teacher.width=8",
    "teacher.epochs=1",
    "teacher.batch_size=32",
    "gan.steps=6",
    "gan.width=4",
    "gan.disc_width=4",
    "gan.batch_size=16",
    "gan.z_dim=8",
    "gan.proj_dim=4",
    "condense.outer_iterations=2",
    "condense.inner_iterations=2",
    "condense.gen_steps=2",
    "condense.phi_width=8",
    "condense.phi_batch=32",
    "condense.assoc_per_image=2",
    "eval.width=8",
    "ipc=3",
    "condense.log_every=1",
]


def toy(
    out: Path, classes: int = 4, name: str = "mnist", size: int = 28, per_class: int = 30
) -> Path:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), per_class)
    base = rng.integers(0, 256, (classes, size, size, 1))
    images = np.clip(base[labels] + rng.integers(-20, 20, (len(labels), size, size, 1)), 0, 255)
    test_labels = np.repeat(np.arange(classes), max(1, per_class // 3))
    test = np.clip(
        base[test_labels] + rng.integers(-20, 20, (len(test_labels), size, size, 1)), 0, 255
    )
    raw = RawDataset(
        name,
        [str(c) for c in range(classes)],
        Split([Segment(images.astype(np.uint8), labels, Path("<generated>"))]),
        Split([Segment(test.astype(np.uint8), test_labels, Path("<generated>"))]),
        [],
    )
    prepare_arrays(raw, out, PrepOptions(workers=1))
    return out


def sets(*pairs: str) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


CONDENSE = [
    *TINY,
    "condense.finetune_generator=true",
    "condense.feature_match=image",
    "condense.checkpoint_every=0",
    "condense.log_every=1",
    "condense.intra_temperature=1.0",
    # Adam turns rounding-level differences of D's gradients into lr-sized steps (as in
    # GAN pretraining below); SGD keeps the cross-world difference at rounding level
    "condense.disc_optimizer=sgd",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env() -> dict:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def single_rank_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """One process, one intra-op thread like each torchrun rank (fewer rounding differences)."""
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=rank_env(),
    )


def torchrun(nproc: int, *args, extra: tuple = (), timeout: float = 600):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *extra,
        "-m",
        "launch.cli",
        *map(str, args),
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=rank_env()
    )


def condense_args(data: Path, pre: Path, out: Path, *overrides: str) -> list:
    return [
        "condense",
        "--preset",
        "mnist-smoke",
        "--data",
        data,
        "--out",
        out,
        "--pretrained",
        pre,
        *sets(*CONDENSE, *overrides),
    ]


def params(run: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run / "condensed.pt", weights_only=False)
    out = {"codebook": payload["codebook"], "conditions": payload["class_embeddings"]}
    out.update({f"G.{k}": v for k, v in payload["generator"].items() if v.is_floating_point()})
    return out


def toy_pretrained(root: Path) -> tuple[Path, Path]:
    """8 classes of toy data and one (single-process) pretrain stage on them."""
    data = toy(root / "data", classes=8)
    pre = root / "pre"
    r = single_rank_cli(
        "pretrain", "--preset", "mnist-smoke", "--data", data, "--out", pre, *sets(*TINY)
    )
    assert r.returncode == 0, r.stderr
    return data, pre


def assert_one_error(r, *needles):
    """A refused command: non-zero exit, one `error:` line holding every needle, no trace."""
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
