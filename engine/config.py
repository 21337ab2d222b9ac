"""Typed configuration of a run: one dataclass per stage, every weight and rate a field.

Values are the paper's where it gives them (learning rates Z 0.01, G 0.001, phi 0.01, SGD with
linear decay, loss weights 1) and documented choices elsewhere (docs/config_reference.md).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.errors import ConfigError


@dataclass
class TeacherConfig:
    """ConvNet trained on the real data: class embeddings and (where asked) soft labels."""

    width: int = 128
    epochs: int = 2
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass
class GanConfig:
    """Class-conditional GAN pretraining in pixel space: hinge loss, projection discriminator
    with spectral norm, plus an auxiliary classifier and a mode-seeking term against collapse."""

    steps: int = 20000
    batch_size: int = 64
    z_dim: int = 128  # C, the codebook's latent dimension
    proj_dim: int = 64  # projected class condition concatenated to z
    width: int = 64  # generator channels in its last block (x2 per block towards the input)
    disc_width: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    aux_weight: float = 0.5  # AC-GAN classification term on real and fake
    mode_seeking_weight: float = 1.0  # Mao et al. 2019: distinct codes -> distinct images
    condition: str = "class_feature"  # class_feature | one_hot | online_feature


@dataclass
class CondenseConfig:
    """Algorithm 1. Step = one (Z, G) update; the loop counts are outer x inner x gen_steps."""

    ipc: int = 10
    outer_iterations: int = 100
    inner_iterations: int = 10  # N: phi updates per outer iteration
    gen_steps: int = 5  # M: (Z, G) updates per phi update
    classes_per_step: int = 0  # 0: every class each step
    assoc_per_image: int = 8  # real images in each synthetic image's association
    phi_width: int = 128
    phi_batch: int = 256  # global real batch for phi's classification update
    lr_codebook: float = 0.01
    lr_generator: float = 0.001
    lr_phi: float = 0.01
    lr_disc: float = 0.001
    # D and the classifier head (the paper is silent on their training; our choices): a fresh
    # D / head with every fresh phi, `disc_steps` updates a step on its detached features, Adam
    # at a constant rate, so that L_adv and L_c measure the current phi's features
    disc_steps: int = 5
    # phi's feature f for L_adv, L_c, L_intra and L_inter: flat (the flattened last block, the
    # ConvNet's embedding) | pooled (its spatial mean; near-constant under instance norm)
    phi_feature: str = "flat"
    disc_reinit: bool = True
    # L_adv's discriminator: feature (the paper's l_feature: D and the head's L_c on phi's
    # features) | pixel (Table 8's l_real: D on the augmented images, no L_c; an ablation)
    adversary: str = "feature"
    disc_optimizer: str = "adam"  # adam | sgd (with condense.momentum)
    disc_lr_decay: bool = False  # True: the linear decay of Z and G
    momentum: float = 0.9
    weight_gan: float = 1.0
    weight_cls: float = 1.0
    weight_feature: float = 1.0
    weight_intra: float = 1.0
    weight_inter: float = 1.0
    intra_temperature: float = 0.1
    inter_margin: float = 0.5
    # image (Eq. 2: each image vs its association's mean) | class (each image vs the class mean)
    # | mean (the class's mean synthetic feature vs the class mean, as DM does)
    feature_match: str = "image"
    # learned (Gaussian start) | fixed (Gaussian, not trained) | truncated (the paper's "random
    # with threshold": Gaussian redrawn beyond +-truncation, not trained)
    codebook: str = "learned"
    truncation: float = 0.5
    finetune_generator: bool = True  # False: the IT-GAN-style frozen generator
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # siamese on real and synthetic
    dsa_mode: str = "single"  # single: one op per call, the field's ('S') | all: every op ('M')
    soft_labels: bool = False  # teacher soft labels as L_c targets of synthetic images
    classifier: str = "head"  # L_c's classifier: head (the paper's, on phi) | teacher (frozen)
    # start: none (the paper's: pretrained G, Gaussian codes) | herding | random, i.e. first fit
    # (Z, G) so that G(z_k, c_y) reproduces the k-th image of class y of that real coreset
    coreset_init: str = "none"
    coreset_fit_steps: int = 600  # Adam steps of that fit (pixel MSE)
    coreset_fit_lr: float = 0.001  # Adam lr for G; the codebook's is 10x
    coreset_fit_warmup: int = 100  # steps of linear lr warm-up before the cosine decay
    coreset_fit_generator: bool = True  # the fit trains G too (even if Algorithm 1 freezes it)
    log_every: int = 10
    checkpoint_every: int = 100  # steps between checkpoints (0: only on SIGTERM / SIGUSR2)
    # speed switches (issue 7; defaults are the reference behaviour)
    precision: str = "fp32"  # fp32 | bf16 (autocast around the forward passes)
    channels_last: bool = False  # NHWC memory format for phi, G and their inputs
    compile: bool = False  # torch.compile phi's and G's forward (no double backward here)
    fused_optimizer: bool = False  # fused SGD kernels (where the device has them)

    @property
    def total_steps(self) -> int:
        return self.outer_iterations * self.inner_iterations * self.gen_steps

    def sweep_steps(self, num_classes: int) -> int:
        """Steps that visit every class once: classes_per_step of 0 or >= num_classes means
        every class in every step; otherwise ceil(num_classes / classes_per_step) steps."""
        k = self.classes_per_step
        return 1 if k <= 0 or k >= num_classes else -(-num_classes // k)

    def step_classes(self, num_classes: int) -> tuple[int, int]:
        """(largest, smallest) class count of a step: a sweep's classes are split into
        sweep_steps near-equal blocks, each at most classes_per_step."""
        steps = self.sweep_steps(num_classes)
        return -(-num_classes // steps), num_classes // steps


BASELINES = ("random", "herding", "plain")


@dataclass
class EvalConfig:
    """The evaluation protocol, read by every command that trains nets on a set (defaults: the
    paper's and the field's): fresh nets, SGD, lr x0.1 at half, DSA in single-op mode with
    per-image parameters, final-epoch accuracy over `seeds` seeds."""

    models: tuple[str, ...] = ("convnet",)
    seeds: int = 5
    epochs: int = 300  # the paper's protocol; DM/DSA use 1000
    # sets every evaluation adds beside the condensed one: random (random real images), herding
    # (herding coreset), plain (the pretrained G's samples from fixed Gaussian codes)
    baselines: tuple[str, ...] = ("random", "herding", "plain")
    width: int = 128  # ConvNet width
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    test_batch_size: int = 512
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_mode: str = "single"  # single (the field's 'S') | all (every op in a row, 'M')

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


@dataclass
class RunConfig:
    preset: str = ""
    dataset: str = ""
    seed: int = 0
    device: str = "cpu"
    max_steps: int = 0  # 0: the whole schedule; else stop after this many (Z, G) updates
    collective_timeout_s: float = 600.0  # a rank waiting longer on the others gives up
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget_note: str = ""  # what the preset costs, as measured

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
                setattr(cfg, key, value)
        return cfg

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
        c = self.condense
        if c.ipc < 1:
            raise ConfigError(f"ipc must be at least 1, got {c.ipc}")
        if c.feature_match not in ("image", "class", "mean"):
            raise ConfigError(
                f"condense.feature_match must be image, class or mean, not {c.feature_match!r}"
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
        if self.gan.condition not in ("class_feature", "one_hot", "online_feature"):
            raise ConfigError("gan.condition must be class_feature, one_hot or online_feature")
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
        if c.checkpoint_every < 0:
            raise ConfigError(f"condense.checkpoint_every must be >= 0, got {c.checkpoint_every}")
        if not self.collective_timeout_s > 0:
            raise ConfigError(
                f"collective_timeout_s must be positive, got {self.collective_timeout_s}"
            )
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0, got {self.max_steps}")


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
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)
