"""Typed configuration of a run: one dataclass per stage, every weight and rate a field.

Values are the paper's where it gives them (learning rates Z 0.01, G 0.001, phi 0.01, SGD with
linear decay, loss weights 1 except L_GAN's, whose balance against our MSE-normalised L_f was
swept) and documented choices elsewhere (docs/config_reference.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import fsio
from common.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The meaningful values of a numeric key (each section's LIMITS), checked once by
    RunConfig.validate for --set, presets and config files alike."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False

    def holds(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{self.lo:g}, {self.hi:g}{right}"


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, lo_open=True)
MOMENTUM = Range(0, 1, hi_open=True)


@dataclass
class TeacherConfig:
    """ConvNet trained on the real data: class embeddings and (where asked) soft labels."""

    #: ConvNet width of the teacher
    width: int = 128
    #: epochs over the real training set
    epochs: int = 2
    #: real images per SGD step
    batch_size: int = 256
    #: SGD learning rate, cosine schedule over the epochs
    lr: float = 0.01
    #: SGD momentum
    momentum: float = 0.9
    #: SGD weight decay
    weight_decay: float = 5e-4

    # the meaningful range of every numeric key (checked in RunConfig.validate)
    LIMITS = {
        "width": AT_LEAST_1,
        "epochs": AT_LEAST_1,
        "batch_size": AT_LEAST_1,
        "lr": POSITIVE,
        "momentum": MOMENTUM,
        "weight_decay": NON_NEGATIVE,
    }


@dataclass
class GanConfig:
    """Class-conditional GAN pretraining in pixel space: hinge loss, projection discriminator
    with spectral norm, plus an auxiliary classifier and a mode-seeking term against collapse."""

    #: generator updates of the pretraining
    steps: int = 20000
    #: images per GAN step (real and fake each)
    batch_size: int = 64
    #: C, the codebook's latent dimension
    z_dim: int = 128
    #: projected class condition concatenated to z
    proj_dim: int = 64
    #: generator channels in its last block (x2 per block towards the input)
    width: int = 64
    #: discriminator channels in its first block (x2 per block)
    disc_width: int = 64
    #: Adam learning rate of G
    lr_g: float = 2e-4
    #: Adam learning rate of D
    lr_d: float = 2e-4
    #: Adam betas of G and D (BigGAN / SNGAN practice)
    betas: tuple[float, float] = (0.0, 0.9)
    #: AC-GAN classification term on real and fake
    aux_weight: float = 0.5
    #: Mao et al. 2019: distinct codes -> distinct images
    mode_seeking_weight: float = 1.0
    #: class_feature | one_hot | online_feature
    condition: str = "class_feature"
    #: raw | centred | standardised: class features rescaled over the classes before G's
    #: projection (the paper is silent; an affine map the projection could absorb)
    condition_norm: str = "raw"
    #: pretrain steps (the teacher's SGD steps, then the GAN's steps) between checkpoints of
    #: PRE/pretrain_checkpoint.pt (0: only on a signal); does not change the result
    checkpoint_every: int = 1000

    # the meaningful range of every numeric key (checked in RunConfig.validate)
    LIMITS = {
        "steps": NON_NEGATIVE,
        "batch_size": AT_LEAST_1,
        "z_dim": AT_LEAST_1,
        "proj_dim": AT_LEAST_1,
        "width": AT_LEAST_1,
        "disc_width": AT_LEAST_1,
        "lr_g": POSITIVE,
        "lr_d": POSITIVE,
        "betas": MOMENTUM,
        "aux_weight": NON_NEGATIVE,
        "mode_seeking_weight": NON_NEGATIVE,
        "checkpoint_every": NON_NEGATIVE,
    }


@dataclass
class CondenseConfig:
    """Algorithm 1. Step = one (Z, G) update; the loop counts are outer x inner x gen_steps."""

    #: K: synthetic images per class (the codebook has K codes)
    ipc: int = 10
    #: phi re-initialisations (the paper's outer loop)
    outer_iterations: int = 100
    #: N: phi updates per outer iteration
    inner_iterations: int = 10
    #: M: (Z, G) updates per phi update
    gen_steps: int = 5
    #: 0: every class each step
    classes_per_step: int = 0
    #: real images in each synthetic image's association
    assoc_per_image: int = 8
    #: ConvNet width of the feature net phi
    phi_width: int = 128
    #: global real batch for phi's classification update
    phi_batch: int = 256
    #: SGD learning rate of the codebook Z (the paper: 0.01), linear decay to 0
    lr_codebook: float = 0.01
    #: SGD learning rate of G (the paper: 0.001), linear decay to 0
    lr_generator: float = 0.001
    #: SGD learning rate of phi's classification updates (the paper: 0.01), linear decay
    lr_phi: float = 0.01
    #: learning rate of D and the classifier head (Adam by default, constant)
    lr_disc: float = 0.001
    # D and the classifier head (the paper is silent on their training; our choices): a fresh
    # D / head with every fresh phi, `disc_steps` updates a step on its detached features, Adam
    # at a constant rate, so that L_adv and L_c measure the current phi's features
    #: D / head updates per step, on that step's detached phi features (accuracies are logged before
    #: the first, on images D has not seen)
    disc_steps: int = 5
    #: phi's feature f in L_adv, L_c, L_intra and L_inter: `flat`, the flattened last block (the
    #: ConvNet's embedding, what its classifier sees) or `pooled`, its spatial mean. Instance norm
    #: gives each channel of a map mean 0 and variance 1, so the pooled ReLU feature is nearly the
    #: same for every image: on the tests' toy data D and the head stayed at chance on it and
    #: learned at once on `flat`
    phi_feature: str = "flat"
    #: a fresh D and head (and optimizer state) with every fresh phi, seeded by (seed, outer); built
    #: once and never following phi, they sat at chance (cls = ln C, adv = ln 2 for a whole run)
    disc_reinit: bool = True
    #: L_adv's discriminator: `feature`, the paper's l_feature (D and the head's L_c on phi's
    #: features), or `pixel`, Table 8's l_real (a real/fake D with its own small conv encoder on the
    #: augmented images, re-initialised with phi like the feature D; no L_c); an ablation
    adversary: str = "feature"
    #: `adam` or `sgd` (with `condense.momentum`); the paper gives no optimizer for D
    disc_optimizer: str = "adam"
    #: True: D and the head follow the linear decay of Z and G (it took their rate to 0)
    disc_lr_decay: bool = False
    #: SGD momentum of Z and G (and of D with disc_optimizer=sgd)
    momentum: float = 0.9
    #: weight of L_GAN (L_adv + weight_cls * L_c) in the total loss. The paper's 1 weighs it
    #: against Eq. 2's summed L_f, about 16,000 times our per-element MSE; against the MSE, a
    #: sweep on fashion-mnist-smoke (1, 0.3, 0.1, 0.03, 0.01, 0; docs/results.md) gave the best
    #: set at 0.03 among the weights where every term still moves
    weight_gan: float = 0.03
    #: weight of L_c inside L_GAN
    weight_cls: float = 1.0
    #: weight of L_f (feature matching)
    weight_feature: float = 1.0
    #: weight of L_intra (intra-class diversity; Table 8)
    weight_intra: float = 1.0
    #: weight of L_inter (inter-class discrimination; Table 8)
    weight_inter: float = 1.0
    #: L_intra's contrastive temperature (the paper gives none)
    intra_temperature: float = 0.1
    #: L_inter's cosine margin between class centres (the paper gives none)
    inter_margin: float = 0.5
    #: `image` (Eq. 2: each synthetic image's features vs the mean of its own association), `class`
    #: (each synthetic image vs its class's real mean), `mean` (the class's mean synthetic feature
    #: vs the class's real mean, DM's objective, layer-wise)
    feature_match: str = "image"
    #: phi's blocks in L_f: `all` (every block, layer by layer, as the paper and CAFE) or `last`
    #: (the last block only, DM's embedding)
    feature_layers: str = "all"
    #: L_f's reduction: `mean` (per-element MSE, as the paper's text says, summed over layers) or
    #: `sum` (Eq. 2's squared norm as written, CAFE's: each image's squared error summed over every
    #: element of every layer, mean over images; about 16,000 times `mean` for ConvNet-3 on 28 px)
    feature_reduction: str = "mean"
    #: `learned` (Gaussian start, trained), `fixed` (Gaussian, not trained) or `truncated` (the
    #: paper's "random with threshold": Gaussian entries beyond ±`truncation` redrawn, not trained)
    codebook: str = "learned"
    #: threshold of codebook=truncated
    truncation: float = 0.5
    #: False: the IT-GAN-style frozen generator
    finetune_generator: bool = True
    #: siamese on real and synthetic
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    #: `single`: the field's DSA (`ParamDiffAug.aug_mode='S'`): one op of the strategy per step, its
    #: parameters drawn once and shared by the real and the synthetic batch; `all`: every op in a
    #: row (`'M'`)
    dsa_mode: str = "single"
    #: teacher soft labels as L_c targets of synthetic images
    soft_labels: bool = False
    #: L_c's classifier: `head` (the paper's linear head on phi's features, trained alongside D) or
    #: `teacher` (the frozen pretrained teacher, on the synthetic images)
    classifier: str = "head"
    #: the start of Algorithm 1: `none` (the paper's: the pretrained G and Gaussian codes),
    #: `herding` or `random`: first fit the codebook (and G, see `coreset_fit_generator`) so that
    #: G(z_k, c_y) reproduces the k-th image of class y of that real coreset (herding uses the
    #: teacher's embeddings)
    coreset_init: str = "none"
    #: Adam steps of that fit (pixel MSE), split over ranks like a step; the fit ends on the
    #: parameters of its lowest MSE (at IPC 1 a late Adam step threw it from 0.003 to 0.26)
    coreset_fit_steps: int = 600
    #: Adam learning rate of G in that fit (warmed up, then cosine-decayed); the codebook's is 10x.
    #: `fashion-mnist-smoke` uses 0.002 on its 2,500-step GAN; on a weaker GAN (600 steps, measured
    #: for the demo) 0.002 stalled near the starting MSE while 0.001 converged, so the fit warns
    #: when its MSE ends above half its start
    coreset_fit_lr: float = 0.001
    #: steps over which that fit's learning rates rise linearly to `coreset_fit_lr` before the
    #: cosine decay (0: none). Without it, full-rate Adam steps from the pretrained G could saturate
    #: it at once: on `fashion-mnist-smoke` with one CPU thread the MSE went 0.90 -> 1.27 on the
    #: first step and stuck at 1.64 for good, while two threads happened to escape
    coreset_fit_warmup: int = 100
    #: that fit trains G as well as the codebook, even when Algorithm 1 then keeps G frozen
    #: (`finetune_generator=false`); the codebook alone cannot reproduce a coreset
    coreset_fit_generator: bool = True
    #: DM updates on the coreset's pixels before that fit (0: the coreset as it is): each draws a
    #: fresh ConvNet of width `coreset_refine_width` and matches every class's mean embedding
    #: with that of `coreset_refine_batch` of its real images (DSA on both), SGD at
    #: `coreset_refine_lr` with DM's momentum 0.5 (engine/coreset_refine.py)
    coreset_refine_updates: int = 0
    #: that refinement's pixel learning rate (DM's lr_img: 1)
    coreset_refine_lr: float = 1.0
    #: real images of a class per refinement update (DM's batch_real: 256)
    coreset_refine_batch: int = 256
    #: width of the refinement's fresh ConvNet-3 (DM's: 128)
    coreset_refine_width: int = 128
    #: steps between metrics.jsonl lines
    log_every: int = 10
    #: steps between checkpoints (0: only on a signal or max_steps)
    checkpoint_every: int = 100
    # speed switches (the defaults are the reference behaviour)
    #: `fp32` or `bf16`: bf16 autocast around the forward passes of the step and of phi's update
    #: (losses, parameters, gradients and optimizer state stay fp32)
    precision: str = "fp32"
    #: NHWC memory format for phi, G and their inputs (with instance norm it may be slower; measure)
    channels_last: bool = False
    #: `torch.compile` phi's and G's forward (the step has no double backward); needs a C++ compiler
    #: on CPU, Triton on CUDA; first steps pay the compilation
    compile: bool = False
    #: fused SGD kernels (`fused=True`) for Z/G, D/head and phi; the same update within rounding
    fused_optimizer: bool = False

    # the meaningful range of every numeric key (checked in RunConfig.validate)
    LIMITS = {
        "ipc": AT_LEAST_1,
        "outer_iterations": AT_LEAST_1,
        "inner_iterations": AT_LEAST_1,
        "gen_steps": AT_LEAST_1,
        "classes_per_step": NON_NEGATIVE,
        "assoc_per_image": AT_LEAST_1,
        "phi_width": AT_LEAST_1,
        "phi_batch": AT_LEAST_1,
        "lr_codebook": NON_NEGATIVE,
        "lr_generator": NON_NEGATIVE,
        "lr_phi": NON_NEGATIVE,
        "lr_disc": NON_NEGATIVE,
        "disc_steps": AT_LEAST_1,
        "momentum": MOMENTUM,
        "weight_gan": NON_NEGATIVE,
        "weight_cls": NON_NEGATIVE,
        "weight_feature": NON_NEGATIVE,
        "weight_intra": NON_NEGATIVE,
        "weight_inter": NON_NEGATIVE,
        "intra_temperature": POSITIVE,
        "inter_margin": Range(0, 2),  # between unit-length feature means
        "truncation": POSITIVE,
        "coreset_fit_steps": NON_NEGATIVE,
        "coreset_fit_lr": POSITIVE,
        "coreset_fit_warmup": NON_NEGATIVE,
        "coreset_refine_updates": NON_NEGATIVE,
        "coreset_refine_lr": POSITIVE,
        "coreset_refine_batch": AT_LEAST_1,
        "coreset_refine_width": AT_LEAST_1,
        "log_every": AT_LEAST_1,
        "checkpoint_every": NON_NEGATIVE,
    }

    @property
    def total_steps(self) -> int:
        return self.outer_iterations * self.inner_iterations * self.gen_steps

    @property
    def phi_trains(self) -> bool:
        """Whether the loop runs phi's update: at rate 0 (fresh-net-every-step) it would change
        nothing, so it is skipped (it cost a third of such a step)."""
        return self.lr_phi > 0


BASELINES = ("random", "herding", "plain")


@dataclass
class EvalConfig:
    """The evaluation protocol, read by every command that trains nets on a set (defaults: the
    paper's and the field's): fresh nets, SGD, lr x0.1 at half, DSA in single-op mode with
    per-image parameters, final-epoch accuracy over `seeds` seeds."""

    #: networks `evaluate` trains (its `--models` overrides)
    models: tuple[str, ...] = ("convnet",)
    #: evaluation seeds (20 in the full presets)
    seeds: int = 5
    #: the paper's 300 (DM/DSA use 1000)
    epochs: int = 300
    #: sets of the same IPC evaluated beside the condensed one: random real, herding, and the
    #: pretrained G's plain samples (`--baselines` overrides; empty: none)
    baselines: tuple[str, ...] = ("random", "herding", "plain")
    #: ConvNet width in evaluation
    width: int = 128
    #: SGD learning rate, x0.1 from epoch `epochs // 2`
    lr: float = 0.01
    #: SGD momentum of the evaluation nets
    momentum: float = 0.9
    #: SGD weight decay of the evaluation nets
    weight_decay: float = 5e-4
    #: minibatch of the set (near-equal splits)
    batch_size: int = 256
    #: test images per forward pass (no effect on accuracy)
    test_batch_size: int = 512
    #: DSA ops while training on a set
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    #: `single`: the field's protocol, one op per minibatch with parameters drawn per image; `all`:
    #: every op on every image (not comparable with published tables)
    dsa_mode: str = "single"

    # the meaningful range of every numeric key (checked in check())
    LIMITS = {
        "seeds": AT_LEAST_1,
        "epochs": AT_LEAST_1,
        "width": AT_LEAST_1,
        "lr": POSITIVE,
        "momentum": MOMENTUM,
        "weight_decay": NON_NEGATIVE,
        "batch_size": AT_LEAST_1,
        "test_batch_size": AT_LEAST_1,
    }

    def __post_init__(self) -> None:
        for name in ("models", "baselines"):
            value = getattr(self, name)
            setattr(self, name, (value,) if isinstance(value, str) else tuple(value))
        self.check()

    def check(self) -> None:
        """Raise ConfigError for an impossible value."""
        if not self.models:
            raise ConfigError("no evaluation models given")
        for name in ("seeds", "epochs", "batch_size", "test_batch_size", "width"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"eval.{name} must be at least 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"eval.lr must be positive, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("eval.momentum and eval.weight_decay must not be negative")
        if self.dsa_mode not in ("single", "all"):
            raise ConfigError(f"eval.dsa_mode must be single or all, not {self.dsa_mode!r}")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        if unknown:
            raise ConfigError(
                f"unknown baseline {unknown[0]!r} (choose from: {', '.join(BASELINES)})"
            )
        check_fields(self, "eval.")


@dataclass
class RunConfig:
    #: set by --preset
    preset: str = ""
    #: the dataset the preset is for
    dataset: str = ""
    #: how the preset's method is changed (engine/recipes.py): `paper` (none: the paper's method)
    #: or a named set of departures such as `herding-dm`; applied before the other --set items
    recipe: str = "paper"
    #: departures of the recipe left out (an ablation), e.g. `herding-start`
    recipe_without: tuple[str, ...] = ()
    #: every random stream derives from it (phi re-init, codes, associations, augmentation)
    seed: int = 0
    #: cpu or cuda
    device: str = "cpu"
    #: 0: the whole schedule; else stop after this many (Z, G) updates (a checkpoint is kept; a
    #: larger value continues from it; a value below the checkpoint's step is refused)
    max_steps: int = 0
    #: distributed runs: a rank waiting longer than this on the others stops with an error
    collective_timeout_s: float = 600.0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: what the preset costs, as measured
    budget_note: str = ""

    # the meaningful range of every numeric key (checked in validate())
    LIMITS = {"seed": NON_NEGATIVE, "max_steps": NON_NEGATIVE, "collective_timeout_s": POSITIVE}

    # the contract's top-level --set keys that live in a section
    SHORTCUTS = {"ipc": "condense.ipc"}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> RunConfig:
        cfg = RunConfig()
        for key, value in d.items():
            if isinstance(value, dict):
                section = getattr(cfg, key)
                for k, v in value.items():
                    setattr(section, k, tuple(v) if isinstance(v, list) else v)
            else:
                setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
        return cfg

    @staticmethod
    def from_file(path: str | Path) -> RunConfig:
        """A resolved config as `to_file` writes it (what `gencond submit` hands a job, or a
        run's recorded config): every key must be one of ours; validated."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config file here") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable config ({type(e).__name__}: {e})") from None
        known = RunConfig().to_dict()
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a gencond config (a JSON object of config keys)")
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r}")
            if isinstance(known[key], dict) and not isinstance(value, dict):
                raise ConfigError(f"{path}: {key} must be an object of {key}.* keys")
            if isinstance(known[key], dict):
                unknown = [
                    k for k in (value if isinstance(value, dict) else [None]) if k not in known[key]
                ]
                if unknown:
                    raise ConfigError(f"{path}: unknown key '{key}.{unknown[0]}'")
        cfg = RunConfig.from_dict(data)
        try:
            cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg

    def to_file(self, path: Path) -> None:
        fsio.write_json(path, self.to_dict())

    def override(self, assignment: str) -> None:
        """Apply `key=value` (`ipc=10`, `condense.lr_codebook=0.02`, `eval.models=convnet,mlp`).
        Call validate() after the last one: some checks involve several keys."""
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected key=value")
        key, text = assignment.split("=", 1)
        key = self.SHORTCUTS.get(key.strip(), key.strip())
        *path, name = key.split(".")
        target: Any = self
        for part in path:
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ConfigError(f"--set {key}: unknown section {part!r}")
            target = getattr(target, part)
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            options = ", ".join(sorted(fields))
            raise ConfigError(f"--set {key}: unknown key {name!r} (keys here: {options})")
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            first = dataclasses.fields(current)[0].name
            raise ConfigError(
                f"--set {key}={text}: {key} is a section; set one of its keys ({key}.{first}=...)"
            )
        setattr(target, name, _parse(text.strip(), current, key))

    def validate(self) -> None:
        for prefix, section in self._sections():
            check_fields(section, prefix, ranges=False)
        c = self.condense
        if c.ipc < 1:
            raise ConfigError(f"ipc must be at least 1, got {c.ipc}")
        if c.feature_layers not in ("all", "last"):
            raise ConfigError(
                f"condense.feature_layers must be all or last, not {c.feature_layers!r}"
            )
        if c.feature_match not in ("image", "class", "mean"):
            raise ConfigError(
                f"condense.feature_match must be image, class or mean, not {c.feature_match!r}"
            )
        if c.feature_reduction not in ("mean", "sum"):
            raise ConfigError(
                f"condense.feature_reduction must be mean or sum, not {c.feature_reduction!r}"
            )
        if c.classifier not in ("head", "teacher"):
            raise ConfigError(f"condense.classifier must be head or teacher, not {c.classifier!r}")
        if c.codebook not in ("learned", "fixed", "truncated"):
            raise ConfigError(
                f"condense.codebook must be learned, fixed or truncated, not {c.codebook!r}"
            )
        if c.coreset_init not in ("none", "herding", "random"):
            raise ConfigError(
                f"condense.coreset_init must be none, herding or random, not {c.coreset_init!r}"
            )
        if c.coreset_init != "none" and c.coreset_fit_steps < 1:
            raise ConfigError("condense.coreset_fit_steps must be at least 1 with a coreset_init")
        if c.coreset_fit_warmup < 0:
            raise ConfigError("condense.coreset_fit_warmup must be 0 or more")
        if c.coreset_refine_updates and c.coreset_init == "none":
            raise ConfigError(
                "condense.coreset_refine_updates refines a coreset: set condense.coreset_init "
                "(herding or random) too"
            )
        if self.gan.condition not in ("class_feature", "one_hot", "online_feature"):
            raise ConfigError("gan.condition must be class_feature, one_hot or online_feature")
        if self.gan.condition_norm not in ("raw", "centred", "standardised"):
            raise ConfigError(
                "gan.condition_norm must be raw, centred or standardised, "
                f"not {self.gan.condition_norm!r}"
            )
        if self.gan.condition == "online_feature" and self.gan.condition_norm != "raw":
            raise ConfigError(
                f"gan.condition=online_feature needs gan.condition_norm=raw (it is "
                f"{self.gan.condition_norm}; the smoke presets standardise): online_feature "
                "conditions are the current phi's raw class means"
            )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be cpu or cuda, not {self.device!r}")
        for name in ("outer_iterations", "inner_iterations", "gen_steps", "assoc_per_image"):
            if getattr(c, name) < 1:
                raise ConfigError(f"condense.{name} must be at least 1")
        if c.codebook != "learned" and not c.finetune_generator:
            raise ConfigError(
                f"nothing to learn: condense.codebook={c.codebook} (codes not trained) with "
                "condense.finetune_generator=false"
            )
        if c.disc_optimizer not in ("adam", "sgd"):
            raise ConfigError(
                f"condense.disc_optimizer must be adam or sgd, not {c.disc_optimizer!r}"
            )
        if c.phi_feature not in ("flat", "pooled"):
            raise ConfigError(f"condense.phi_feature must be flat or pooled, not {c.phi_feature!r}")
        if c.adversary not in ("feature", "pixel"):
            raise ConfigError(f"condense.adversary must be feature or pixel, not {c.adversary!r}")
        if c.disc_steps < 1:
            raise ConfigError(f"condense.disc_steps must be at least 1, got {c.disc_steps}")
        if c.dsa_mode not in ("single", "all"):
            raise ConfigError(f"condense.dsa_mode must be single or all, not {c.dsa_mode!r}")
        self.eval.check()
        if c.precision not in ("fp32", "bf16"):
            raise ConfigError(f"condense.precision must be fp32 or bf16, not {c.precision!r}")
        if not self.collective_timeout_s > 0:
            raise ConfigError(
                f"collective_timeout_s must be positive, got {self.collective_timeout_s}"
            )
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0, got {self.max_steps}")
        for prefix, section in self._sections():
            check_fields(section, prefix)

    def _sections(self) -> list[tuple[str, Any]]:
        return [("", self)] + [
            (f"{f.name}.", getattr(self, f.name))
            for f in dataclasses.fields(self)
            if dataclasses.is_dataclass(getattr(self, f.name))
        ]


def with_defaults(recorded: dict) -> dict:
    """A recorded config (condensed.pt, a checkpoint, a stage) with every key added since it was
    written at its default, so that a newer key at its default is no difference."""

    def merge(default: dict, given: dict) -> dict:
        out = dict(default)
        for key, value in given.items():
            both = isinstance(value, dict) and isinstance(default.get(key), dict)
            out[key] = merge(default[key], value) if both else value
        return out

    return merge(RunConfig().to_dict(), dict(recorded))


def same_condensation(mine: dict, recorded: dict) -> bool:
    """Two configs that condense the same set: equal but for the evaluation protocol and the
    device, a key added since `recorded` was written counting at its default."""
    a, b = dict(mine), with_defaults(recorded)
    for cfg in (a, b):
        cfg.pop("eval", None)
        cfg.pop("device", None)
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean (true or false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, tuple):
        numbers = default and isinstance(default[0], float)
        return "a list of numbers" if numbers else "a list of strings"
    return "a string"


def _has_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple):
        if not isinstance(value, tuple | list):
            return False
        if default and isinstance(default[0], float):
            return all(_has_type(v, 0.0) for v in value)
        return all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def check_fields(section: Any, prefix: str = "", ranges: bool = True) -> None:
    """Every key of a config section has its declared type and (with ranges) lies in its
    section's LIMITS; ConfigError naming the key and what it may be."""
    limits = getattr(type(section), "LIMITS", {})
    for f in dataclasses.fields(section):
        if f.default is dataclasses.MISSING:  # a section (default_factory)
            continue
        default, value = f.default, getattr(section, f.name)
        if not _has_type(value, default):
            raise ConfigError(
                f"{prefix}{f.name} must be {_kind(default)}, got {json.dumps(value, default=str)}"
            )
        if not ranges or f.name not in limits:
            continue
        for item in value if isinstance(value, tuple | list) else (value,):
            if not math.isfinite(item) or not limits[f.name].holds(item):
                raise ConfigError(
                    f"{prefix}{f.name}={_text(value)} is out of range: it must be "
                    f"{limits[f.name]} (docs/config_reference.md)"
                )


def _parse(text: str, current: Any, key: str) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            value = float(text)
            if not math.isfinite(value):
                raise ConfigError(f"--set {key}={text}: expected a finite number")
            return value
        if isinstance(current, tuple):
            items = [t.strip() for t in text.split(",") if t.strip()]
            if current and isinstance(current[0], float):
                return tuple(float(t) for t in items)
            return tuple(items)
        return text
    except ValueError:
        kind = type(current).__name__
        raise ConfigError(f"--set {key}={text}: expected a {kind}") from None


def load_variants(path: str | Path | None) -> dict[str, list[str]]:
    """{name: ["key=value", ...]} from a TOML file of one table per variant (order kept)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        tables = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--variants {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--variants {path}: not valid TOML ({e})") from None
    variants = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"--variants {path}: {name!r} is not a [table] of key = value")
        variants[name] = [f"{k}={_text(v)}" for k, v in table.items()]
    if not variants:
        raise ConfigError(f"--variants {path}: no [variant] tables")
    return variants


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)
