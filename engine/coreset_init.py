"""Optional start of Algorithm 1 from a real coreset (`condense.coreset_init`).

The paper starts from the GAN-pretrained G and Gaussian codes. With a CPU budget that G's plain
samples are only as good as random real images, so the loop has little room to improve them.
This start first fits the shared codebook and G so that G(z_k, c_y) reproduces the k-th image
of class y of a real coreset (herding on the teacher's embeddings, or random), then
Algorithm 1 runs as usual from there. Classes are split over ranks like a condensation step;
each rank's MSE is scaled by its share, so the summed gradients are the one-process ones."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common import fsio
from common.console import log, progress_bar
from common.errors import ConfigError, DataError
from engine import distributed
from engine.config import RunConfig
from engine.evaluate import herding, random_real
from engine.generator import generate


def coreset(cfg: RunConfig, data_dir: str | Path, teacher: torch.nn.Module | None):
    """The real coreset the fit reproduces: (images, labels), class-major, K per class."""
    c = cfg.condense
    if c.coreset_init == "herding":
        if teacher is None:
            raise ConfigError("condense.coreset_init=herding needs the pretrain stage's teacher")
        return herding(data_dir, c.ipc, teacher, cfg.device)
    return random_real(data_dir, c.ipc, cfg.seed, cfg.device)


def _named(c) -> str:
    """The set the fit reproduces, in words."""
    n = c.coreset_refine_updates
    return f"{c.coreset_init} coreset" + (f" refined by {n} DM updates" if n else "")


def warmup_cosine(warmup: int, steps: int) -> Callable[[int], float]:
    """lr factor: linear from 1/warmup to 1 over `warmup` steps, then cosine to 0 at `steps`.
    Full-lr Adam steps from the pretrained G can saturate it at once (a dead fit whose MSE never
    moves again, seen on Fashion-MNIST at lr 0.002 with one thread but not with two)."""

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return ramp * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

    return factor


def fit_to_coreset(
    G: torch.nn.Module,
    codebook: torch.nn.Parameter,
    conditions: torch.Tensor,
    images: torch.Tensor,
    mine: list[int],
    num_classes: int,
    cfg: RunConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Adam (warmed up, then cosine-decayed) on the codebook (unless fixed) and, with
    coreset_fit_generator, on G for coreset_fit_steps steps, minimising the pixel MSE between
    G(z_k, c_y) and images[y * K + k] over this rank's classes `mine`. G's requires_grad is
    restored afterwards (Algorithm 1 may freeze it). on_step(step, this rank's MSE) follows
    each step (probes). The parameters of the lowest global MSE seen are kept: with few images
    (IPC 1 on Fashion-MNIST) Adam's steps can throw a fit at MSE 0.003 to 0.26 for good.
    Returns that lowest global MSE."""
    c = cfg.condense
    groups = []
    if codebook.requires_grad:
        groups.append({"params": [codebook], "lr": 10 * c.coreset_fit_lr})
    trains_generator = [p.requires_grad for p in G.parameters()]
    if c.coreset_fit_generator:
        G.requires_grad_(True)
        groups.append({"params": list(G.parameters()), "lr": c.coreset_fit_lr})
    if not groups:
        raise ConfigError(
            "condense.coreset_init: nothing to fit (codebook=fixed and coreset_fit_generator=false)"
        )
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(c.coreset_fit_warmup, c.coreset_fit_steps)
    )
    K = len(codebook)
    rows = torch.cat([torch.arange(y * K, (y + 1) * K) for y in mine]).to(images.device)
    target = images[rows]
    share = len(mine) / num_classes
    first, best, kept = None, math.inf, [p.detach().clone() for p in params]
    with progress_bar() as bar:
        task = bar.add_task(f"Fitting G to the {_named(c)}", total=c.coreset_fit_steps)
        for step in range(c.coreset_fit_steps):
            syn, _ = generate(G, codebook, conditions, mine)
            loss = F.mse_loss(syn, target)
            now = float(distributed.all_sum(share * loss.detach().double()))
            first = now if first is None else first
            if now < best:  # these parameters made it: keep them
                best = now
                for k, p in zip(kept, params, strict=True):
                    k.copy_(p.detach())
            opt.zero_grad(set_to_none=True)
            (share * loss).backward()
            distributed.sum_gradients(params)
            opt.step()
            sched.step()
            bar.advance(task)
            if on_step is not None:
                on_step(step, float(loss.detach()))
    with torch.no_grad():  # the last step's result, unless an earlier state was better
        final = F.mse_loss(generate(G, codebook, conditions, mine)[0], target)
        final = float(distributed.all_sum(share * final.double()))
        if final > best:
            for k, p in zip(kept, params, strict=True):
                p.copy_(k)
        best = min(best, final)
    for p, trains in zip(G.parameters(), trains_generator, strict=True):
        p.requires_grad_(trains)
    mse, start = best, first
    log(f"Fitted to the {_named(c)}: pixel MSE {mse:.4f}")
    if mse > 0.5 * start:
        log(
            f"Warning: the fit barely moved (pixel MSE {start:.3f} -> {mse:.3f}): "
            "condensation starts from a poor fit; lower condense.coreset_fit_lr or raise "
            "condense.coreset_fit_steps"
        )
    return float(mse)


FIT_FILE = "coreset_fit.pt"


def fit_key(
    *,
    cfg: RunConfig,
    G: torch.nn.Module,
    codebook: torch.Tensor,
    conditions: torch.Tensor,
    images: torch.Tensor,
    world_size: int,
) -> str:
    """A hash of everything the fit's result depends on: its settings, G's and the codebook's
    starting values, the conditions, the coreset, and what changes its rounding (device type,
    ranks, threads, torch version). Equal keys: the fit would compute the same start."""
    c = cfg.condense
    h = hashlib.sha256()
    settings = {
        "coreset_init": c.coreset_init,
        "steps": c.coreset_fit_steps,
        "lr": c.coreset_fit_lr,
        "warmup": c.coreset_fit_warmup,
        "generator": c.coreset_fit_generator,
        "codebook_trained": bool(codebook.requires_grad),
        "device": images.device.type,
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if c.coreset_refine_updates:  # the images are the coreset before its refinement
        settings["refine"] = {
            "updates": c.coreset_refine_updates,
            "lr": c.coreset_refine_lr,
            "batch": c.coreset_refine_batch,
            "width": c.coreset_refine_width,
            "dsa": [c.dsa_strategy, c.dsa_mode],
            "seed": cfg.seed,
        }
    h.update(json.dumps(settings, sort_keys=True).encode())
    tensors = [*G.state_dict().items(), ("codebook", codebook), ("conditions", conditions)]
    for name, t in [*tensors, ("images", images)]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _read_fit(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        saved = fsio.load_torch(path, "fitted start")
    except DataError as e:
        log(f"Warning: {e}; fitting again")
        return None
    return saved if isinstance(saved, dict) and saved.get("key") == key else None


def fitted_start(
    *,
    run_dir: Path,
    cache_dir: Path | None = None,
    world_size: int = 1,
    is_main: bool = True,
    refine: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **fit: Any,
) -> None:
    """fit_to_coreset(**fit) on refine(images) (the coreset itself without `refine`), or its
    result reused: RUN/coreset_fit.pt (a run stopped before its first checkpoint resumes without
    refining or fitting again) or CACHE/<key>.pt (runs of a sweep or bench that share the fit's
    inputs). A file of another key is ignored; rank 0 writes both files."""
    G, codebook = fit["G"], fit["codebook"]
    key = fit_key(
        cfg=fit["cfg"], G=G, codebook=codebook, conditions=fit["conditions"],
        images=fit["images"], world_size=world_size,
    )  # fmt: skip
    places = [run_dir / FIT_FILE] + ([cache_dir / f"{key}.pt"] if cache_dir else [])
    held = {p: s for p in places if (s := _read_fit(p, key)) is not None}  # read once each
    found = next(iter(held.items()), None)
    # every rank must take the same branch: the fit's gradients are summed over ranks
    if int(distributed.all_sum(torch.tensor(float(found is not None)))) == world_size:
        path, saved = found
        G.load_state_dict(saved["G"])
        with torch.no_grad():
            codebook.copy_(saved["codebook"])
        log(f"Reusing the fitted start in {fsio.shown(path)} (pixel MSE {saved['mse']:.4f})")
    else:
        if refine is not None:
            fit["images"] = refine(fit["images"])
        mse = fit_to_coreset(**fit)
        saved = {"key": key, "G": G.state_dict(), "codebook": codebook.detach().cpu(), "mse": mse}
    if is_main:
        for path in places:
            if path not in held:
                fsio.make_dir(path.parent)
                fsio.save_torch(saved, path, "fitted start")
    distributed.barrier()
