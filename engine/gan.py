"""Generator pretraining: a class-conditional GAN on the task dataset, in pixel space.

Hinge loss with a projection discriminator (spectral norm), an auxiliary classifier (AC-GAN)
and a mode-seeking term (Mao et al., CVPR 2019) that rewards distinct images for distinct codes
of one class: the safeguard against the collapse that turns IPC K into IPC 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from common.console import progress_bar
from common.errors import ConfigError
from data_prep.loaders import TrainLoader
from data_prep.meta import DatasetMeta
from engine import checkpoint, distributed
from engine.config import GanConfig
from engine.discriminators import PixelDiscriminator
from engine.generator import Generator


def _in_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """x in `layout`; one channel needs its strides set by hand (torch calls it both)."""
    if layout != torch.channels_last:
        return x.contiguous()
    if x.shape[1] == 1:
        n, _, h, w = x.shape
        return x.contiguous().as_strided(x.shape, (h * w, 1, w, 1))
    return x.contiguous(memory_format=torch.channels_last)


def build_generator(meta: DatasetMeta, cfg: GanConfig, cond_dim: int) -> Generator:
    return Generator(
        cfg.z_dim,
        cond_dim,
        cfg.proj_dim,
        meta.channels,
        meta.image_size,
        cfg.width,
        meta.mean,
        meta.std,
    )


def pretrain_gan(
    data_dir: str | Path,
    meta: DatasetMeta,
    cfg: GanConfig,
    conditions: torch.Tensor,
    seed: int,
    device: torch.device,
    max_steps: int = 0,
    resume: dict | None = None,
    on_step: Callable[[int, Callable[[], dict]], None] | None = None,
) -> tuple[Generator, list[dict]]:
    """Train G(z, proj(condition[y])) against D for cfg.steps steps; returns G and a log.
    on_step(step, state) after every step (the checkpoints); `resume` is such a state."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = build_generator(meta, cfg, conditions.shape[1]).to(device)
        D = PixelDiscriminator(meta.channels, meta.num_classes, meta.image_size, cfg.disc_width)
        D = D.to(device)
    # D has no normalisation layer, and on the CPU its convolutions run about 25 % faster on
    # channels_last inputs (measured in CPU time at the smoke preset's sizes)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    D = D.to(memory_format=layout)

    def disc(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return D(_in_layout(x, layout), y)

    conditions = conditions.to(device)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr_g, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr_d, betas=cfg.betas)
    rank, world = distributed.world()
    if cfg.batch_size % world:
        raise ConfigError(f"gan.batch_size={cfg.batch_size} does not split over {world} ranks")
    # data parallel over a global batch: rank r takes slice r of the real batch and of the codes
    # (drawn for the whole global batch), BatchNorm uses global statistics, losses are scaled
    # by 1/world and the gradients summed: the same run whatever the number of ranks
    loader = TrainLoader(
        data_dir, cfg.batch_size // world, seed=seed, device=device, rank=rank, world_size=world
    )

    def codes(n: int) -> torch.Tensor:
        everyone = torch.randn(n * world, cfg.z_dim, generator=gen)
        return everyone[rank * n : (rank + 1) * n].to(device)

    steps = cfg.steps if not max_steps else min(cfg.steps, max_steps)
    log: list[dict] = []
    step = skip = 0
    if resume:  # the order is keyed by (seed, epoch): back to the epoch, skip what it took
        G.load_state_dict(resume["G"])
        D.load_state_dict(resume["D"])
        opt_g.load_state_dict(resume["opt_g"])
        opt_d.load_state_dict(resume["opt_d"])
        gen.set_state(resume["codes"])
        step, log = resume["step"], list(resume["log"])
        loader.epoch, skip = resume["loader"]["epoch"], resume["loader"]["batch"]
        checkpoint.set_rng_states(resume["rng"])

    def state() -> dict:
        return {
            "G": G.state_dict(),
            "D": D.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "codes": gen.get_state(),
            "step": step,
            "log": list(log),
            "loader": checkpoint.loader_position(step, len(loader)),
            "rng": checkpoint.rng_states(),
        }

    with progress_bar() as bar:
        task = bar.add_task("GAN pretraining", total=steps, completed=step)
        while step < steps:
            for real, y in loader:
                if skip:
                    skip -= 1
                    continue
                if step >= steps:
                    break
                n = len(y)
                with torch.no_grad():
                    fake = G(codes(n), conditions[y])
                d_real, aux_real = disc(real, y)
                d_fake, _ = disc(fake, y)
                loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
                loss_d = loss_d + cfg.aux_weight * F.cross_entropy(aux_real, y)
                opt_d.zero_grad(set_to_none=True)
                (loss_d / world).backward()
                distributed.sum_gradients(D.parameters())
                opt_d.step()

                # two codes per class pair for the mode-seeking ratio
                z1, z2 = codes(n), codes(n)
                fake = G(torch.cat([z1, z2]), conditions[y].repeat(2, 1))
                score, aux = disc(fake, y.repeat(2))
                loss_g = -score.mean() + cfg.aux_weight * F.cross_entropy(aux, y.repeat(2))
                f1, f2 = fake[:n], fake[n:]
                ratio = (f1 - f2).abs().mean(dim=(1, 2, 3)) / (z1 - z2).abs().mean(1)
                mean_ratio = distributed.sum_replicated(ratio.sum()) / (n * world)
                loss_ms = 1 / (mean_ratio + 1e-5)  # the same on every rank
                opt_g.zero_grad(set_to_none=True)
                (loss_g / world + cfg.mode_seeking_weight * loss_ms).backward()
                distributed.sum_gradients(G.parameters())
                opt_g.step()
                step += 1
                bar.advance(task)
                if step % 100 == 0 or step == steps:
                    totals = distributed.all_sum(torch.stack([loss_d, loss_g]).detach() / world)
                    loss_total_g = totals[1].item() + cfg.mode_seeking_weight * loss_ms.item()
                    log.append(
                        {
                            "gan_step": step,
                            "loss_d": totals[0].item(),
                            "loss_g": loss_total_g,
                            "mode_seeking_ratio": mean_ratio.item(),
                        }
                    )
                    if not math.isfinite(loss_total_g):
                        raise FloatingPointError(f"GAN diverged at step {step}")
                if on_step:
                    on_step(step, state)
    # settle BatchNorm running statistics on a few batches of fresh codes
    G.train()
    with torch.no_grad():
        classes = torch.arange(meta.num_classes).repeat(max(1, 256 // meta.num_classes))
        per_rank = math.ceil(len(classes) / world)
        classes = torch.cat([classes, classes[: per_rank * world - len(classes)]])
        mine = classes[rank * per_rank : (rank + 1) * per_rank].to(device)
        for _ in range(20):
            G(codes(per_rank), conditions[mine])
    return G.eval(), log
