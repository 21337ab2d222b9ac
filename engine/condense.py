"""Algorithm 1: learn the codebook Z and fine-tune the generator G against a feature net phi
that is re-initialised every outer iteration and trained on real data in between.

    for outer in range(O):                    re-initialise phi (seeded by (seed, outer))
        for n in range(N):
            for i in range(M):                one step: update (Z, G), then D and the head
            update phi on a real batch
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from data_prep.loaders import ClassGroupedLoader, TrainLoader
from data_prep.meta import DatasetMeta
from engine import losses
from engine.augment import DiffAugment
from engine.config import RunConfig
from engine.console import progress_bar
from engine.errors import ConfigError
from engine.generator import Generator, generate, init_codebook
from engine.nets import ConvNet, reinit_

PHI_STREAM, AUG_STREAM = 0xF1, 0xA6


class FeatureDiscriminator(nn.Module):
    """The paper's D: an MLP on (phi features, class condition), a logit (sigmoid in the loss)."""

    def __init__(self, feat_dim: int, cond_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim + cond_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, condition], 1)).squeeze(1)


def class_schedule(num_classes: int, per_step: int, seed: int):
    """Classes of each step: all of them, or consecutive blocks of a permutation of the classes
    redrawn every sweep (keyed by (seed, sweep)), so every class is visited once per sweep."""
    if per_step <= 0 or per_step >= num_classes:
        everything = list(range(num_classes))
        return lambda step: everything
    blocks = num_classes // per_step

    def schedule(step: int) -> list[int]:
        sweep, block = divmod(step, blocks)
        perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + sweep))  # fmt: skip
        return sorted(perm[block * per_step : (block + 1) * per_step].tolist())

    return schedule


def _seeded(*key: int) -> torch.Generator:
    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def _cycle(loader: TrainLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def _linear_decay(total: int):
    return lambda step: max(0.0, 1.0 - step / max(1, total))


def condense(
    cfg: RunConfig,
    data_dir: str | Path,
    meta: DatasetMeta,
    generator: Generator,
    conditions: torch.Tensor,
    out_dir: Path,
    teacher: ConvNet | None = None,
) -> dict:
    """Run Algorithm 1; returns the state the artifact needs and writes metrics.jsonl."""
    c = cfg.condense
    device = torch.device(cfg.device)
    K, classes = c.ipc, meta.num_classes
    G = copy.deepcopy(generator).to(device).eval()  # BN on running statistics
    G.requires_grad_(c.finetune_generator)
    codebook = nn.Parameter(
        init_codebook(K, G.z_dim, c.codebook, c.truncation, cfg.seed).to(device),
        requires_grad=c.codebook != "fixed",
    )
    conditions = conditions.clone().to(device)
    phi = ConvNet(meta.channels, classes, meta.image_size, width=c.phi_width).to(device)
    if c.soft_labels and teacher is None:
        raise ConfigError("condense.soft_labels needs the teacher from the pretrain stage")
    if cfg.gan.condition == "online_feature" and conditions.shape[1] != phi.feature_channels:
        raise ConfigError(
            f"gan.condition=online_feature needs teacher.width == condense.phi_width "
            f"({conditions.shape[1]} != {phi.feature_channels})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        D = FeatureDiscriminator(phi.feature_channels, conditions.shape[1]).to(device)
        head = nn.Linear(phi.feature_channels, classes).to(device)

    trainable = [{"params": [codebook], "lr": c.lr_codebook}] if codebook.requires_grad else []
    if c.finetune_generator:
        trainable.append({"params": list(G.parameters()), "lr": c.lr_generator})
    if not trainable:
        raise ConfigError("nothing to learn: codebook=fixed and finetune_generator=false")
    total = c.total_steps if not cfg.max_steps else min(c.total_steps, cfg.max_steps)
    opt_zg = torch.optim.SGD(trainable, momentum=c.momentum)
    opt_dh = torch.optim.SGD([*D.parameters(), *head.parameters()], c.lr_disc, momentum=c.momentum)
    decay = _linear_decay(c.total_steps)
    sched_zg = torch.optim.lr_scheduler.LambdaLR(opt_zg, decay)
    sched_dh = torch.optim.lr_scheduler.LambdaLR(opt_dh, decay)

    schedule = class_schedule(classes, c.classes_per_step, cfg.seed)
    per_class = K * c.assoc_per_image
    associations = ClassGroupedLoader(data_dir, per_class, cfg.seed, device).iterate(schedule, 0)
    real_batches = _cycle(TrainLoader(data_dir, c.phi_batch, seed=cfg.seed + 1, device=device))
    augment = DiffAugment(c.dsa_strategy, batch_mode=True)
    metrics = open(out_dir / "metrics.jsonl", "w")
    step, start = 0, time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("Condensing", total=total)
        for outer in range(c.outer_iterations):
            reinit_(phi, _seeded(cfg.seed, PHI_STREAM, outer))
            opt_phi = torch.optim.SGD(phi.parameters(), c.lr_phi * decay(step), momentum=0.9)
            for _ in range(c.inner_iterations):
                for _ in range(c.gen_steps):
                    if step >= total:
                        break
                    _, real, real_labels = next(associations)
                    step_classes = schedule(step)
                    nets = (G, codebook, conditions, phi, D, head, teacher, augment)
                    record = _step(cfg, nets, real, real_labels, step_classes, step, opt_zg, opt_dh)
                    sched_zg.step()
                    sched_dh.step()
                    step += 1
                    bar.advance(task)
                    if step % c.log_every == 0 or step == total:
                        record.update(step=step, outer=outer, seconds=time.perf_counter() - start)
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                if step >= total:
                    break
                x, y = next(real_batches)
                phi.requires_grad_(True)
                loss = F.cross_entropy(phi(x), y)
                opt_phi.zero_grad(set_to_none=True)
                loss.backward()
                opt_phi.step()
            if step >= total:
                break
    metrics.close()
    return {"generator": G.cpu(), "codebook": codebook.detach().cpu(),
            "conditions": conditions.cpu(), "steps": step,
            "seconds": time.perf_counter() - start}  # fmt: skip


def _step(cfg, nets, real, real_labels, step_classes, step, opt_zg, opt_dh) -> dict:
    """One (Z, G) update on this step's classes, then one D / head update."""
    G, codebook, conditions, phi, D, head, teacher, augment = nets
    c = cfg.condense
    K = c.ipc
    phi.requires_grad_(False)
    aug_state = _seeded(cfg.seed, AUG_STREAM, step).get_state()
    real_gen, syn_gen = torch.Generator(), torch.Generator()
    real_gen.set_state(aug_state)
    syn_gen.set_state(aug_state)  # siamese: the same transform for real and synthetic
    with torch.no_grad():
        real_feats = phi.features(augment(real, real_gen))
    real_pooled = real_feats[-1].mean(dim=(2, 3))
    n_cls = len(step_classes)
    centers_real = real_pooled.view(n_cls, -1, real_pooled.shape[1]).mean(1)
    if cfg.gan.condition == "online_feature":
        conditions[torch.as_tensor(step_classes, device=conditions.device)] = centers_real

    syn, labels = generate(G, codebook, conditions, step_classes)
    syn_feats = phi.features(augment(syn, syn_gen))
    if c.feature_match == "image":  # each image: the mean of its own association subset
        targets = [f.view(n_cls, K, c.assoc_per_image, *f.shape[1:]).mean(2).flatten(0, 1)
                   for f in real_feats]  # fmt: skip
    else:  # class means on both sides
        targets = [f.view(n_cls, -1, *f.shape[1:]).mean(1).repeat_interleave(K, 0)
                   for f in real_feats]  # fmt: skip
    loss_f = losses.feature_matching(syn_feats, targets)
    syn_pooled = syn_feats[-1].mean(dim=(2, 3))
    origin = centers_real.mean(0)  # the mean real feature of the step's classes
    loss_intra = losses.intra_class_diversity(
        syn_pooled, centers_real, K, c.intra_temperature, origin
    )
    loss_inter = losses.inter_class_discrimination(
        losses.class_centers(syn_pooled, K, origin), c.inter_margin
    )
    cond = conditions[labels]
    d_fake = D(syn_pooled, cond)
    loss_adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    if c.soft_labels:
        with torch.no_grad():
            target = F.softmax(teacher(syn), dim=1)
        loss_cls = losses.soft_cross_entropy(head(syn_pooled), target)
    else:
        loss_cls = F.cross_entropy(head(syn_pooled), labels)
    loss = (c.weight_gan * (loss_adv + c.weight_cls * loss_cls) + c.weight_feature * loss_f
            + c.weight_intra * loss_intra + c.weight_inter * loss_inter)  # fmt: skip
    opt_zg.zero_grad(set_to_none=True)
    loss.backward()
    opt_zg.step()
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"condensation loss is {loss.item()} at step {step}")

    # discriminator and classifier head: real associations vs the (detached) synthetic images
    d_real = D(real_pooled, conditions[real_labels])
    d_fake = D(syn_pooled.detach(), cond)
    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
              + F.cross_entropy(head(real_pooled), real_labels)
              + F.cross_entropy(head(syn_pooled.detach()), labels))  # fmt: skip
    opt_dh.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_dh.step()
    return {"loss": loss.item(), "feature": loss_f.item(), "intra": loss_intra.item(),
            "inter": loss_inter.item(), "adv": loss_adv.item(), "cls": loss_cls.item(),
            "disc": loss_d.item()}  # fmt: skip
