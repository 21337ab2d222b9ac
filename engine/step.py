"""One step of Algorithm 1, in four parts that run in this order:

    (a) real_features      phi's features of the augmented real associations (no gradient)
    (b) synthetic_losses   G's images of this rank's classes, their phi features, the losses
    (c) update_zg          one SGD step of the codebook Z and the generator G
    (d) update_dh          disc_steps updates of D and the classifier head

plus StepModules (everything the loop trains, with its optimizers and schedulers) and phi's own
classification update (phi_update, every gen_steps steps). Each ablation switch is read in the
part it changes. Per-class losses are scaled by this rank's share of the step, so the sum of the
ranks' gradients is the single-process gradient; the inter-class loss sees the centers of every
class of the step through a differentiable all-reduce.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from common.errors import ConfigError
from data_prep.meta import DatasetMeta
from engine import distributed, losses
from engine.augment import DiffAugment
from engine.config import RunConfig
from engine.discriminators import FeatureDiscriminator, ImageDiscriminator
from engine.generator import Generator, generate, init_codebook
from engine.nets import ConvNet, reinit_

PHI_STREAM, AUG_STREAM, DISC_STREAM = 0xF1, 0xA6, 0xD1


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints (seed, stream, step, ...)."""
    value = 0
    for k in key:
        value = (value * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


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


class StepModules:
    """Everything the loop trains, with one place to save and restore it. Z and G decay
    linearly over the run; phi's rate decays with it too, held for an outer iteration (its
    scheduler steps once per outer iteration, after that iteration's last phi update)."""

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
        self._optimizers(c)

    def _optimizers(self, c) -> None:
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
        self.per_outer = c.inner_iterations * c.gen_steps
        self.sched_phi = torch.optim.lr_scheduler.LambdaLR(
            self.opt_phi, lambda outer: decay(outer * self.per_outer)
        )

    def fresh_phi(self, seed: int, outer: int, disc_reinit: bool) -> None:
        """Algorithm 1's fresh phi for outer iteration `outer`, seeded by (seed, outer) so every
        rank draws the same: new weights, no momentum (the rate is sched_phi's); with
        disc_reinit a fresh D and head too."""
        reinit_(self.phi, keyed_generator(seed, PHI_STREAM, outer))
        self.opt_phi.state.clear()
        if disc_reinit:
            self.reset_disc(seed, outer)

    def reset_disc(self, seed: int, outer: int) -> None:
        """A fresh D and classifier head (and optimizer state) for a fresh phi, seeded by
        (seed, outer) so every rank draws the same."""
        g = keyed_generator(seed, DISC_STREAM, outer)
        reinit_(self.D, g)
        reinit_(self.head, g)
        self.opt_dh.state.clear()

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
        "sched_phi",
    )

    def state_dict(self) -> dict:
        out = {}
        for name in self.NAMES:
            obj = getattr(self, name)
            out[name] = obj.detach().cpu() if torch.is_tensor(obj) else obj.state_dict()
        return out

    def load_state_dict(self, state: dict, step: int) -> None:
        """`step`: the step the state was saved at (checkpoints written before phi had a
        scheduler set its rate by hand; its scheduler is then placed at that step)."""
        for name in self.NAMES:
            obj = getattr(self, name)
            if name == "sched_phi" and name not in state:
                self._phi_rate_at(step)
            elif torch.is_tensor(obj):
                with torch.no_grad():
                    obj.copy_(state[name])
            else:
                obj.load_state_dict(state[name])

    def _phi_rate_at(self, step: int) -> None:
        """sched_phi as it stands after `step` steps (the next step's outer iteration)."""
        sched = self.sched_phi
        sched.last_epoch = step // self.per_outer
        for group, base, rate in zip(
            self.opt_phi.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True
        ):
            group["lr"] = base * rate(sched.last_epoch)


@dataclass
class StepInput:
    """What one step works on: its classes (every rank's, sorted), this rank's block of them,
    and that block's real associations (class-major, ipc * assoc_per_image per class)."""

    step: int
    classes: list[int]
    mine: list[int]
    real: torch.Tensor
    real_labels: torch.Tensor

    @property
    def share(self) -> float:
        """This rank's share of the step's classes (scales its per-class losses)."""
        return len(self.mine) / len(self.classes)


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
    *,
    cfg: RunConfig,
    m: StepModules,
    teacher: nn.Module | None,
    augment: DiffAugment,
    batch: StepInput,
) -> dict:
    """One (Z, G) update, then D / head updates, on this rank's classes of the step. Returns
    this rank's shares of the logged values: summed over ranks, the single-process numbers."""
    real = real_features(cfg=cfg, m=m, augment=augment, batch=batch)
    syn = synthetic_losses(cfg=cfg, m=m, teacher=teacher, augment=augment, batch=batch, real=real)
    update_zg(m=m, loss=syn.loss)
    dh = update_dh(cfg=cfg, m=m, batch=batch, real=real, syn=syn)
    c, share, world = cfg.condense, batch.share, distributed.world()[1]
    return {
        "loss": syn.loss.item() - c.weight_inter * syn.inter.item() * (1 - 1 / world),
        "feature": share * syn.feature.item(),
        "intra": share * syn.intra.item(),
        "inter": syn.inter.item() / world,
        "adv": share * syn.adv.item(),
        "cls": share * syn.cls.item(),
        "disc": share * dh["disc"],
        "disc_acc": share * dh["disc_acc"],
        "head_real_acc": share * dh["head_real_acc"],
        "synthetic_images": len(syn.images),
        "real_images": len(batch.real),
    }


@dataclass
class RealFeatures:
    """Part (a)'s result: the augmented real images and phi's features of them."""

    x: torch.Tensor  # the augmented real associations (D's input with adversary=pixel)
    feats: list[torch.Tensor]  # phi's blocks, float32
    vector: torch.Tensor  # phi_vector of the last block (D's and the head's input)
    centers_mine: torch.Tensor  # its class means, this rank's classes
    centers_all: torch.Tensor  # ... every class of the step (all-reduced)
    rows: torch.Tensor  # this rank's rows among the step's classes
    syn_gen: torch.Generator  # the same augmentation draw for the synthetic images (siamese)


def real_features(
    *, cfg: RunConfig, m: StepModules, augment: DiffAugment, batch: StepInput
) -> RealFeatures:
    """(a) phi (frozen for the step) on the augmented real associations, no gradient. The
    augmentation is keyed by (seed, step), and the synthetic images get the same draw.
    gan.condition=online_feature: the step's class conditions become the real class means of
    phi's pooled last block."""
    c, device = cfg.condense, batch.real.device
    n_all, n_mine = len(batch.classes), len(batch.mine)
    rows = torch.as_tensor([batch.classes.index(k) for k in batch.mine], device=device)
    m.phi.requires_grad_(False)
    aug_state = keyed_generator(cfg.seed, AUG_STREAM, batch.step).get_state()
    real_gen, syn_gen = torch.Generator(), torch.Generator()
    real_gen.set_state(aug_state)
    syn_gen.set_state(aug_state)  # siamese: the same transform for real and synthetic
    with torch.no_grad(), record_function("phi_real"):
        x = _layout(cfg, augment(batch.real, real_gen))
        with _amp(cfg, device):
            feats = [f.float() for f in m.phi_features(x)]
        vector = phi_vector(feats[-1], c.phi_feature)
        centers_mine = vector.view(n_mine, -1, vector.shape[1]).mean(1)
        centers_all = distributed.gather_rows(centers_mine, rows, n_all)
        if cfg.gan.condition == "online_feature":  # the class means of pooled phi features
            pooled = feats[-1].mean(dim=(2, 3))
            online = distributed.gather_rows(
                pooled.view(n_mine, -1, pooled.shape[1]).mean(1), rows, n_all
            )
            m.conditions[torch.as_tensor(batch.classes, device=m.conditions.device)] = online
    return RealFeatures(x, feats, vector, centers_mine, centers_all, rows, syn_gen)


@dataclass
class SyntheticLosses:
    """Part (b)'s result: this rank's synthetic images, their features and the loss terms."""

    images: torch.Tensor  # G's images, K per class of `mine`, class-major
    labels: torch.Tensor
    conditions: torch.Tensor  # the class condition of each image
    x: torch.Tensor  # the augmented images (D's input with adversary=pixel)
    vector: torch.Tensor  # phi_vector of their last block
    feature: torch.Tensor  # L_f
    intra: torch.Tensor  # L_intra
    inter: torch.Tensor  # L_inter (the step's, the same on every rank)
    adv: torch.Tensor  # L_adv
    cls: torch.Tensor  # L_c
    loss: torch.Tensor  # this rank's part of the total, what (c) descends


def synthetic_losses(
    *,
    cfg: RunConfig,
    m: StepModules,
    teacher: nn.Module | None,
    augment: DiffAugment,
    batch: StepInput,
    real: RealFeatures,
) -> SyntheticLosses:
    """(b) G's images of this rank's classes through phi (same augmentation as the real ones),
    then L_f (feature_match, feature_reduction), L_intra and L_inter (on phi_feature) and
    L_GAN = L_adv + weight_cls * L_c (adversary, classifier, soft_labels), weighted."""
    c = cfg.condense
    device = batch.real.device
    with record_function("generate"), _amp(cfg, device):
        images, labels = generate(m.generator, m.codebook, m.conditions, batch.mine)
    images = images.float()
    with record_function("phi_syn"):
        x = _layout(cfg, augment(images, real.syn_gen))
        with _amp(cfg, device):
            feats = [f.float() for f in m.phi_features(x)]
    with record_function("losses"):
        loss_f = _feature_loss(cfg=cfg, real=real.feats, syn=feats, n_mine=len(batch.mine))
        vector = phi_vector(feats[-1], c.phi_feature)
        origin = real.centers_all.mean(0)  # the mean real feature of the step's classes
        loss_intra = losses.intra_class_diversity(
            vector, real.centers_mine, c.ipc, c.intra_temperature, origin
        )
        syn_centers = distributed.gather_rows(
            losses.class_centers(vector, c.ipc, origin), real.rows, len(batch.classes)
        )
        loss_inter = losses.inter_class_discrimination(syn_centers, c.inter_margin)
        cond = m.conditions[labels]
        loss_adv, loss_cls = _gan_losses(
            cfg=cfg,
            m=m,
            teacher=teacher,
            images=images,
            x=x,
            vector=vector,
            labels=labels,
            cond=cond,
        )
        per_class = (
            c.weight_gan * (loss_adv + c.weight_cls * loss_cls)
            + c.weight_feature * loss_f
            + c.weight_intra * loss_intra
        )
        loss = batch.share * per_class + c.weight_inter * loss_inter  # inter: the same on all
    return SyntheticLosses(
        images, labels, cond, x, vector, loss_f, loss_intra, loss_inter, loss_adv, loss_cls, loss
    )


def _feature_loss(
    *, cfg: RunConfig, real: list[torch.Tensor], syn: list[torch.Tensor], n_mine: int
) -> torch.Tensor:
    """L_f. feature_match: image (each image vs the mean of its own association subset), class
    (each image vs its class's real mean) or mean (the class's mean synthetic feature vs the
    class's real mean, as DM)."""
    c = cfg.condense
    K = c.ipc
    if c.feature_match == "image":
        targets = [
            f.view(n_mine, K, c.assoc_per_image, *f.shape[1:]).mean(2).flatten(0, 1) for f in real
        ]
    else:
        targets = [f.view(n_mine, -1, *f.shape[1:]).mean(1) for f in real]
        if c.feature_match == "class":
            targets = [t.repeat_interleave(K, 0) for t in targets]
    if c.feature_match == "mean":
        syn = [f.view(n_mine, K, *f.shape[1:]).mean(1) for f in syn]
    if c.feature_layers == "last":
        syn, targets = syn[-1:], targets[-1:]
    return losses.feature_matching(syn, targets, c.feature_reduction)


def _gan_losses(
    *,
    cfg: RunConfig,
    m: StepModules,
    teacher: nn.Module | None,
    images: torch.Tensor,
    x: torch.Tensor,
    vector: torch.Tensor,
    labels: torch.Tensor,
    cond: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_adv, L_c). adversary=pixel: D on the augmented images and no L_c (Table 8's l_real);
    classifier: phi's head on the features, or the frozen teacher on the images; soft_labels:
    the teacher's softmax as L_c's target."""
    c = cfg.condense
    pixel = c.adversary == "pixel"
    amp = lambda: _amp(cfg, images.device)  # noqa: E731
    with amp():
        d_fake = m.D(x if pixel else vector, cond).float()
    loss_adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    with amp():
        logits = (teacher(images) if c.classifier == "teacher" else m.head(vector)).float()
    if pixel:
        loss_cls = torch.zeros((), device=images.device)
    elif c.soft_labels:
        with torch.no_grad(), amp():
            target = F.softmax(teacher(images).float(), dim=1)
        loss_cls = losses.soft_cross_entropy(logits, target)
    else:
        loss_cls = F.cross_entropy(logits, labels)
    return loss_adv, loss_cls


def update_zg(*, m: StepModules, loss: torch.Tensor) -> None:
    """(c) One SGD step of the codebook and G on the summed gradients of every rank."""
    with record_function("backward_zg"):
        m.opt_zg.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(m.zg_params)
        m.opt_zg.step()
        m.sched_zg.step()


def update_dh(
    *,
    cfg: RunConfig,
    m: StepModules,
    batch: StepInput,
    real: RealFeatures,
    syn: SyntheticLosses,
) -> dict[str, float]:
    """(d) D and the classifier head: real associations vs the (detached) synthetic images,
    disc_steps updates on this step's features (adversary=pixel: D on the images). Returns the
    loss and accuracies of the first update (D and the head have not seen these images yet)."""
    pixel = cfg.condense.adversary == "pixel"
    syn_vector = syn.vector.detach()
    d_real_in, d_fake_in = (real.x, syn.x.detach()) if pixel else (real.vector, syn_vector)
    real_cond = m.conditions[batch.real_labels]
    with record_function("update_dh"):
        for i in range(cfg.condense.disc_steps):
            with _amp(cfg, batch.real.device):
                d_real = m.D(d_real_in, real_cond).float()
                d_fake = m.D(d_fake_in, syn.conditions).float()
                head_real = m.head(real.vector).float()
                head_syn = m.head(syn_vector).float()
            loss_d = (
                F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                + F.cross_entropy(head_real, batch.real_labels)
                + F.cross_entropy(head_syn, syn.labels)
            )
            if i == 0:
                with torch.no_grad():
                    d_acc = 0.5 * ((d_real > 0).float().mean() + (d_fake < 0).float().mean())
                    head_acc = (head_real.argmax(1) == batch.real_labels).float().mean()
                first = {"disc": loss_d.item(), "disc_acc": d_acc.item()}
                first["head_real_acc"] = head_acc.item()
            m.opt_dh.zero_grad(set_to_none=True)
            (batch.share * loss_d).backward()
            distributed.sum_gradients(m.dh_params)
            m.opt_dh.step()
        m.sched_dh.step()
    return first
