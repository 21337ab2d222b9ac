"""Algorithm 1: learn the codebook Z and fine-tune the generator G against a feature net phi
that is re-initialised every outer iteration and trained on real data in between.

    for outer in range(O):                    re-initialise phi (seeded by (seed, outer))
        for n in range(N):
            for i in range(M):                one step: update (Z, G), then D and the head
            update phi on a real batch
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from common.console import log, progress_bar
from common.errors import ConfigError, DataError
from data_prep.loaders import ClassGroupedLoader, TrainLoader
from data_prep.meta import DatasetMeta
from engine import checkpoint, distributed, losses
from engine.augment import DiffAugment
from engine.config import RunConfig
from engine.coreset_init import coreset, fit_to_coreset
from engine.distributed import DistEnv
from engine.generator import Generator, generate, init_codebook
from engine.nets import ConvNet, reinit_

PHI_STREAM, AUG_STREAM, DISC_STREAM = 0xF1, 0xA6, 0xD1


class FeatureDiscriminator(nn.Module):
    """The paper's D: an MLP on (phi features, class condition), a logit (sigmoid in the loss)."""

    def __init__(self, feat_dim: int, cond_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim + cond_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, condition], 1)).squeeze(1)


class ImageDiscriminator(nn.Module):
    """Table 8's l_real: a real/fake D on the (augmented) images themselves, through its own
    small conv encoder rather than phi's features, conditioned as the feature D is."""

    def __init__(self, channels: int, image_size: int, width: int, cond_dim: int, depth: int = 3):
        super().__init__()
        layers, cin, size = [], channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            cin, size = width, size // 2
        self.body = nn.Sequential(*layers)
        self.mlp = FeatureDiscriminator(width * size * size, cond_dim)

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.body(images).flatten(1), condition)


def class_schedule(num_classes: int, steps: int, seed: int):
    """Classes of each step: all of them (steps == 1), or `steps` near-equal blocks of a
    permutation of the classes redrawn every sweep (keyed by (seed, sweep)), so that every
    class is visited once per sweep of `steps` steps."""
    if steps <= 1:
        everything = list(range(num_classes))
        return lambda step: everything

    def schedule(step: int) -> list[int]:
        sweep, block = divmod(step, steps)
        perm = torch.randperm(
            num_classes, generator=torch.Generator().manual_seed(seed * 1_000_003 + sweep)
        )
        return sorted(torch.tensor_split(perm, steps)[block].tolist())

    return schedule


def _seeded(*key: int) -> torch.Generator:
    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def _real_batches(loader: TrainLoader, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """phi's real batches from global batch number `start` on (epochs keyed by the seed)."""
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ConfigError("condense.phi_batch is larger than the training set")
    loader.epoch, skip = divmod(start, per_epoch)
    while True:
        for batch in loader:
            if skip:
                skip -= 1
                continue
            yield batch


def _linear_decay(total: int):
    return lambda step: max(0.0, 1.0 - step / max(1, total))


def _constant(step: int) -> float:
    return 1.0


def phi_feature_dim(phi: ConvNet, kind: str) -> int:
    return phi.embed_dim if kind == "flat" else phi.feature_channels


def phi_vector(last_block: torch.Tensor, kind: str) -> torch.Tensor:
    """The phi feature f of the GAN, intra- and inter-class terms: the flattened last block
    (flat, the ConvNet's embedding) or its spatial mean (pooled). Instance norm gives every
    channel of a map mean 0 and variance 1, so the pooled ReLU feature carries little of the
    image: measured on the toy data of the tests, D and the head stayed at chance on it."""
    return last_block.flatten(1) if kind == "flat" else last_block.mean(dim=(2, 3))


def reset_disc(m: StepModules, seed: int, outer: int) -> None:
    """A fresh D and classifier head (and optimizer state) for a fresh phi, seeded by
    (seed, outer) so every rank draws the same."""
    g = _seeded(seed, DISC_STREAM, outer)
    reinit_(m.D, g)
    reinit_(m.head, g)
    m.opt_dh.state.clear()


class StepModules:
    """Everything the loop trains, with one place to save and restore it."""

    def __init__(
        self,
        cfg: RunConfig,
        meta: DatasetMeta,
        generator: Generator,
        conditions: torch.Tensor,
        device: torch.device,
    ):
        c = cfg.condense
        self.G = copy.deepcopy(generator).to(device).eval()  # BN on running statistics
        self.G.requires_grad_(c.finetune_generator)
        self.codebook = nn.Parameter(
            init_codebook(c.ipc, self.G.z_dim, c.codebook, c.truncation, cfg.seed).to(device),
            requires_grad=c.codebook == "learned",
        )
        self.conditions = conditions.clone().to(device)
        self.phi = ConvNet(meta.channels, meta.num_classes, meta.image_size, width=c.phi_width).to(
            device
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            dim = phi_feature_dim(self.phi, c.phi_feature)
            if c.adversary == "pixel":
                self.D = ImageDiscriminator(
                    meta.channels, meta.image_size, cfg.gan.disc_width, conditions.shape[1]
                )
            else:
                self.D = FeatureDiscriminator(dim, conditions.shape[1])
            self.head = nn.Linear(dim, meta.num_classes)
        self.D, self.head = self.D.to(device), self.head.to(device)
        # speed switches; the defaults leave every module and optimizer as it was
        if c.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.phi.to(memory_format=torch.channels_last)
        self.opt_kwargs = {"fused": True} if c.fused_optimizer else {}
        # forward passes that may be compiled: the step never differentiates twice
        self.generator = torch.compile(self.G) if c.compile else self.G
        self.phi_features = torch.compile(self.phi.features) if c.compile else self.phi.features
        self.phi_logits = torch.compile(self.phi) if c.compile else self.phi
        trainable = []
        if c.codebook == "learned":
            trainable.append({"params": [self.codebook], "lr": c.lr_codebook})
        if c.finetune_generator:
            trainable.append({"params": list(self.G.parameters()), "lr": c.lr_generator})
        if not trainable:
            raise ConfigError(
                f"nothing to learn: codebook={c.codebook} (codes not trained) and "
                "finetune_generator=false"
            )
        self.zg_params = [p for group in trainable for p in group["params"]]
        self.dh_params = [*self.D.parameters(), *self.head.parameters()]
        self.opt_zg = torch.optim.SGD(trainable, momentum=c.momentum, **self.opt_kwargs)
        if c.disc_optimizer == "adam":
            self.opt_dh = torch.optim.Adam(self.dh_params, c.lr_disc, **self.opt_kwargs)
        else:
            self.opt_dh = torch.optim.SGD(
                self.dh_params, c.lr_disc, momentum=c.momentum, **self.opt_kwargs
            )
        decay = _linear_decay(c.total_steps)
        self.sched_zg = torch.optim.lr_scheduler.LambdaLR(self.opt_zg, decay)
        dh_decay = decay if c.disc_lr_decay else _constant
        self.sched_dh = torch.optim.lr_scheduler.LambdaLR(self.opt_dh, dh_decay)
        self.opt_phi = torch.optim.SGD(
            self.phi.parameters(), c.lr_phi, momentum=0.9, **self.opt_kwargs
        )

    NAMES = (
        "G",
        "codebook",
        "conditions",
        "phi",
        "D",
        "head",
        "opt_zg",
        "opt_dh",
        "sched_zg",
        "sched_dh",
        "opt_phi",
    )

    def state_dict(self) -> dict:
        out = {}
        for name in self.NAMES:
            obj = getattr(self, name)
            out[name] = obj.detach().cpu() if torch.is_tensor(obj) else obj.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        for name in self.NAMES:
            obj = getattr(self, name)
            if torch.is_tensor(obj):
                with torch.no_grad():
                    obj.copy_(state[name])
            else:
                obj.load_state_dict(state[name])


def condense(
    cfg: RunConfig,
    data_dir: str | Path,
    meta: DatasetMeta,
    generator: Generator,
    conditions: torch.Tensor,
    out_dir: Path,
    teacher: ConvNet | None = None,
    env: DistEnv | None = None,
) -> dict:
    """Run Algorithm 1 on this rank's share of every step's classes; returns the state the
    artifact needs. Rank 0 writes metrics.jsonl and the checkpoints; a run that finds
    RUN/checkpoint.pt made with the same config resumes from it."""
    c = cfg.condense
    env = env or DistEnv(device=torch.device(cfg.device))
    device = env.device
    M, per_outer = c.gen_steps, c.inner_iterations * c.gen_steps
    if (c.soft_labels or c.classifier == "teacher") and teacher is None:
        raise ConfigError(
            "condense.soft_labels / classifier=teacher need the pretrain stage's teacher"
        )
    distributed.check_split(c.step_classes(meta.num_classes)[1], env.world_size)
    if c.phi_batch % env.world_size:
        raise ConfigError(
            f"condense.phi_batch={c.phi_batch} does not split evenly over {env.world_size} ranks"
        )
    m = StepModules(cfg, meta, generator, conditions, device)
    if cfg.gan.condition == "online_feature" and m.conditions.shape[1] != m.phi.feature_channels:
        raise ConfigError(
            f"gan.condition=online_feature needs teacher.width == condense.phi_width "
            f"({m.conditions.shape[1]} != {m.phi.feature_channels})"
        )
    total = c.total_steps if not cfg.max_steps else min(c.total_steps, cfg.max_steps)
    ckpt_path = out_dir / checkpoint.CHECKPOINT_FILE
    start, seconds = 0, 0.0
    if ckpt_path.is_file():
        saved = checkpoint.Checkpoint.read(ckpt_path)
        _check_resumable(saved, cfg, ckpt_path)
        m.load_state_dict(saved.modules)
        start, seconds = saved.step, saved.seconds
        log(f"Resuming from {ckpt_path} at step {start} (saved by {saved.world_size} rank(s))")
    elif c.coreset_init != "none":
        images, _ = coreset(cfg, data_dir, teacher)
        all_classes = list(range(meta.num_classes))
        fit_to_coreset(
            m.G,
            m.codebook,
            m.conditions,
            images.to(device),
            distributed.my_share(all_classes, env.rank, env.world_size),
            meta.num_classes,
            cfg,
        )

    schedule = class_schedule(meta.num_classes, c.sweep_steps(meta.num_classes), cfg.seed)

    def my_classes(step: int) -> list[int]:
        return distributed.my_share(schedule(step), env.rank, env.world_size)

    associations = ClassGroupedLoader(
        data_dir, c.ipc * c.assoc_per_image, cfg.seed, device
    ).iterate(my_classes, start)
    real_loader = TrainLoader(
        data_dir,
        c.phi_batch // env.world_size,
        seed=cfg.seed + 1,
        device=device,
        rank=env.rank,
        world_size=env.world_size,
    )
    real_batches = _real_batches(real_loader, start // M)
    augment = DiffAugment(c.dsa_strategy, batch_mode=True, mode=c.dsa_mode)
    decay = _linear_decay(c.total_steps)
    metrics = checkpoint.open_metrics(out_dir / "metrics.jsonl", start) if env.is_main else None
    stop = checkpoint.StopFlag()
    began = time.perf_counter() - seconds

    def save_checkpoint(step: int) -> None:
        if env.is_main:
            checkpoint.Checkpoint(
                step=step,
                seconds=time.perf_counter() - began,
                world_size=env.world_size,
                config=cfg.to_dict(),
                modules=m.state_dict(),
            ).save(ckpt_path)
        distributed.barrier()

    try:
        with progress_bar() as bar:
            task = bar.add_task("Condensing", total=total, completed=start)
            for step in range(start, total):
                outer, within = divmod(step, per_outer)
                if within == 0:  # Algorithm 1: a fresh phi every outer iteration
                    reinit_(m.phi, _seeded(cfg.seed, PHI_STREAM, outer))
                    m.opt_phi = torch.optim.SGD(
                        m.phi.parameters(), c.lr_phi * decay(step), momentum=0.9, **m.opt_kwargs
                    )
                    if c.disc_reinit:
                        reset_disc(m, cfg.seed, outer)
                _, real, real_labels = next(associations)
                record = condense_step(
                    cfg,
                    m,
                    teacher,
                    augment,
                    real,
                    real_labels,
                    schedule(step),
                    my_classes(step),
                    step,
                )
                if within % M == M - 1:  # after M generator steps, one phi step on real data
                    x, y = next(real_batches)
                    phi_update(cfg, m, x, y, env.world_size)
                # one small all-reduce a step: global losses, a NaN anywhere, a stop signal
                summary = distributed.all_sum(
                    torch.tensor([*record.values(), float(stop.raised)], dtype=torch.float64)
                )
                record = dict(zip(record, summary[:-1].tolist(), strict=True))
                bar.advance(task)
                done = step + 1
                if not math.isfinite(record["loss"]):
                    raise FloatingPointError(f"condensation loss {record['loss']} at step {step}")
                if metrics and (done % c.log_every == 0 or done == total):
                    record.update(
                        step=done, outer=outer, seconds=round(time.perf_counter() - began, 3)
                    )
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                if summary[-1] > 0:
                    save_checkpoint(done)
                    raise checkpoint.Preempted(done, ckpt_path, stop.signal_name or "a signal")
                if c.checkpoint_every and done % c.checkpoint_every == 0 and done < total:
                    save_checkpoint(done)
        if start < total < c.total_steps:  # stopped early by max_steps: a larger one continues
            save_checkpoint(total)
    finally:
        stop.close()
        if metrics:
            metrics.close()
    return {
        "generator": m.G.cpu(),
        "codebook": m.codebook.detach().cpu(),
        "conditions": m.conditions.cpu(),
        "steps": total,
        "seconds": time.perf_counter() - began,
    }


def _check_resumable(saved: checkpoint.Checkpoint, cfg: RunConfig, path: Path) -> None:
    """Only the stopping point (max_steps) and the device may differ from the saved run, and
    max_steps cannot go back before the checkpoint's step."""
    if not isinstance(saved.step, int) or not 0 <= saved.step <= cfg.condense.total_steps:
        raise DataError(
            f"{path}: its step {saved.step} lies outside this run's 0..{cfg.condense.total_steps} "
            "steps (not this run's checkpoint, or damaged); delete it to start over"
        )
    if cfg.max_steps and cfg.max_steps < saved.step:
        raise ConfigError(
            f"max_steps={cfg.max_steps} is below the step of {path} ({saved.step}): a run "
            f"cannot go back; use a new --out folder (or max_steps >= {saved.step})"
        )
    mine, theirs = cfg.to_dict(), dict(saved.config)
    for key in ("max_steps", "device"):
        mine.pop(key, None)
        theirs.pop(key, None)
    if json.dumps(mine, sort_keys=True, default=str) != json.dumps(
        theirs, sort_keys=True, default=str
    ):
        raise ConfigError(
            f"{path} was written by a run with another config; use a new --out folder "
            f"(or delete the checkpoint to start over)"
        )


def _amp(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around forward passes when condense.precision=bf16, else nothing."""
    if cfg.condense.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _layout(cfg: RunConfig, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.condense.channels_last else x


def phi_update(
    cfg: RunConfig, m: StepModules, x: torch.Tensor, y: torch.Tensor, world_size: int = 1
) -> None:
    """phi's classification step on a real batch (the loop runs it every gen_steps steps)."""
    with record_function("phi_update"):
        m.phi.requires_grad_(True)
        with _amp(cfg, x.device):
            logits = m.phi_logits(_layout(cfg, x))
        loss = F.cross_entropy(logits.float(), y) / world_size
        m.opt_phi.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(m.phi.parameters())
        m.opt_phi.step()


def condense_step(
    cfg,
    m: StepModules,
    teacher,
    augment,
    real,
    real_labels,
    step_classes: list[int],
    mine: list[int],
    step: int,
) -> dict:
    """One (Z, G) update, then one D / head update, on this rank's classes `mine` of the
    step's `step_classes`. Per-class losses are scaled by this rank's share of the step, so the
    sum of the ranks' gradients is the single-process gradient; the inter-class loss sees the
    centers of every class of the step through a differentiable all-reduce."""
    c = cfg.condense
    K, n_all, n_mine = c.ipc, len(step_classes), len(mine)
    share = n_mine / n_all
    world = distributed.world()[1]
    rows = torch.as_tensor([step_classes.index(k) for k in mine], device=real.device)
    m.phi.requires_grad_(False)
    aug_state = _seeded(cfg.seed, AUG_STREAM, step).get_state()
    real_gen, syn_gen = torch.Generator(), torch.Generator()
    real_gen.set_state(aug_state)
    syn_gen.set_state(aug_state)  # siamese: the same transform for real and synthetic
    amp = lambda: _amp(cfg, real.device)  # noqa: E731
    with torch.no_grad(), record_function("phi_real"):
        x = x_real = _layout(cfg, augment(real, real_gen))
        with amp():
            real_feats = [f.float() for f in m.phi_features(x)]
        real_pooled = phi_vector(real_feats[-1], c.phi_feature)
        centers_mine = real_pooled.view(n_mine, -1, real_pooled.shape[1]).mean(1)
        centers_all = distributed.gather_rows(centers_mine, rows, n_all)
        if cfg.gan.condition == "online_feature":  # the class means of pooled phi features
            pooled = real_feats[-1].mean(dim=(2, 3))
            online = distributed.gather_rows(
                pooled.view(n_mine, -1, pooled.shape[1]).mean(1), rows, n_all
            )
            m.conditions[torch.as_tensor(step_classes, device=m.conditions.device)] = online

    with record_function("generate"), amp():
        syn, labels = generate(m.generator, m.codebook, m.conditions, mine)
    syn = syn.float()
    with record_function("phi_syn"):
        x = x_syn = _layout(cfg, augment(syn, syn_gen))
        with amp():
            syn_feats = [f.float() for f in m.phi_features(x)]
    with record_function("losses"):
        if c.feature_match == "image":  # each image: the mean of its own association subset
            targets = [
                f.view(n_mine, K, c.assoc_per_image, *f.shape[1:]).mean(2).flatten(0, 1)
                for f in real_feats
            ]
        else:  # each image (class) or the class's mean image feature (mean, as DM) vs real mean
            targets = [f.view(n_mine, -1, *f.shape[1:]).mean(1) for f in real_feats]
            if c.feature_match == "class":
                targets = [t.repeat_interleave(K, 0) for t in targets]
        if c.feature_match == "mean":
            loss_f = losses.feature_matching(
                [f.view(n_mine, K, *f.shape[1:]).mean(1) for f in syn_feats],
                targets,
                c.feature_reduction,
            )
        else:
            loss_f = losses.feature_matching(syn_feats, targets, c.feature_reduction)
        syn_pooled = phi_vector(syn_feats[-1], c.phi_feature)
        origin = centers_all.mean(0)  # the mean real feature of the step's classes
        loss_intra = losses.intra_class_diversity(
            syn_pooled, centers_mine, K, c.intra_temperature, origin
        )
        syn_centers = distributed.gather_rows(
            losses.class_centers(syn_pooled, K, origin), rows, n_all
        )
        loss_inter = losses.inter_class_discrimination(syn_centers, c.inter_margin)
        cond = m.conditions[labels]
        pixel = c.adversary == "pixel"  # l_real: D on the images, and no L_c
        with amp():
            d_fake = m.D(x_syn if pixel else syn_pooled, cond).float()
        loss_adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        with amp():
            logits = (teacher(syn) if c.classifier == "teacher" else m.head(syn_pooled)).float()
        if pixel:
            loss_cls = torch.zeros((), device=syn.device)
        elif c.soft_labels:
            with torch.no_grad(), amp():
                target = F.softmax(teacher(syn).float(), dim=1)
            loss_cls = losses.soft_cross_entropy(logits, target)
        else:
            loss_cls = F.cross_entropy(logits, labels)
        per_class = (
            c.weight_gan * (loss_adv + c.weight_cls * loss_cls)
            + c.weight_feature * loss_f
            + c.weight_intra * loss_intra
        )
        loss = share * per_class + c.weight_inter * loss_inter  # inter: the same on every rank
    with record_function("backward_zg"):
        m.opt_zg.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(m.zg_params)
        m.opt_zg.step()
        m.sched_zg.step()

    # discriminator and classifier head: real associations vs the (detached) synthetic images,
    # disc_steps updates on this step's features; accuracies are those of the first (D and the
    # head have not seen these images yet)
    syn_detached = syn_pooled.detach()
    d_real_in, d_fake_in = (x_real, x_syn.detach()) if pixel else (real_pooled, syn_detached)
    with record_function("update_dh"):
        for i in range(c.disc_steps):
            with amp():
                d_real = m.D(d_real_in, m.conditions[real_labels]).float()
                d_fake = m.D(d_fake_in, cond).float()
                head_real = m.head(real_pooled).float()
                head_syn = m.head(syn_detached).float()
            loss_d = (
                F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                + F.cross_entropy(head_real, real_labels)
                + F.cross_entropy(head_syn, labels)
            )
            if i == 0:
                first_loss_d = loss_d.item()
                with torch.no_grad():
                    d_acc = 0.5 * ((d_real > 0).float().mean() + (d_fake < 0).float().mean())
                    head_acc = (head_real.argmax(1) == real_labels).float().mean()
            m.opt_dh.zero_grad(set_to_none=True)
            (share * loss_d).backward()
            distributed.sum_gradients(m.dh_params)
            m.opt_dh.step()
        m.sched_dh.step()
    # shares of the global values: summed over ranks they give the single-process numbers
    return {
        "loss": loss.item() - c.weight_inter * loss_inter.item() * (1 - 1 / world),
        "feature": share * loss_f.item(),
        "intra": share * loss_intra.item(),
        "inter": loss_inter.item() / world,
        "adv": share * loss_adv.item(),
        "cls": share * loss_cls.item(),
        "disc": share * first_loss_d,
        "disc_acc": share * d_acc.item(),
        "head_real_acc": share * head_acc.item(),
        "synthetic_images": len(syn),
        "real_images": len(real),
    }
