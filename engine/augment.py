"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), with explicit RNG.

Every op is differentiable with respect to the input images: colour ops are arithmetic,
crop is a gather from a zero-padded copy, cutout multiplies by a mask, flip is a
``torch.where``, and scale / rotate resample through ``affine_grid`` / ``grid_sample``.

Differences from the field's reference code (``ParamDiffAug`` + ``DiffAugment``):

* No global RNG. All random parameters are drawn on the CPU from the ``torch.Generator``
  passed to each call and then moved to the images' device, so a call leaves torch's global
  CPU and CUDA RNG states untouched and the result does not depend on the device.
* ``mode="single"`` (the default) is the field's protocol: ``ParamDiffAug.aug_mode = 'S'`` in
  the DC / DSA / DM and MTT code picks ONE op of the strategy per call for the whole batch
  (``color`` = brightness, saturation and contrast together) and draws that op's parameters
  per image (or once for the batch in siamese use). ``mode="all"`` (their rare ``'M'``) applies
  every op in the order written; results under it are not comparable with published tables.
* Siamese use: with ``batch_mode=True`` one draw per parameter is shared by the whole batch,
  and the number of draws does not depend on the batch size. Two calls whose generators are
  in the same state (``g2.set_state(g1.get_state())``) therefore apply the very same
  transform to, say, a real batch and a synthetic batch of different sizes. With
  ``batch_mode=False`` each sample gets its own parameters; two batches of the same size
  still get identical per-row transforms from generators in the same state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.errors import ConfigError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

# Op name -> the primitive transforms it stands for, applied in this order.
_OP_PARTS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}

OPS: tuple[str, ...] = tuple(_OP_PARTS)
MODES: tuple[str, ...] = ("single", "all")


@dataclass
class DSAParams:
    """Augmentation strengths; defaults are the field's ``ParamDiffAug`` values."""

    ratio_brightness: float = 1.0  # x + (u - 0.5) * ratio
    ratio_saturation: float = 2.0  # mix with channel mean, factor u * ratio
    ratio_contrast: float = 0.5  # mix with image mean, factor u + ratio
    ratio_crop_pad: float = 0.125  # integer shift in [-ratio*size, ratio*size], zero padding
    ratio_cutout: float = 0.5  # side of the zeroed square as a fraction of the image side
    prob_flip: float = 0.5  # probability of a horizontal flip
    ratio_scale: float = 1.2  # sx, sy uniform in [1/ratio, ratio]
    ratio_rotate: float = 15.0  # angle uniform in [-ratio, ratio] degrees

    def __post_init__(self) -> None:
        for name in (
            "ratio_brightness",
            "ratio_saturation",
            "ratio_contrast",
            "ratio_crop_pad",
            "ratio_rotate",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"DSA parameter {name}={value!r} must be a finite number >= 0")
        if not 0.0 <= self.ratio_cutout <= 1.0:
            raise ConfigError(f"DSA parameter ratio_cutout={self.ratio_cutout!r} must be in [0, 1]")
        if not 0.0 <= self.prob_flip <= 1.0:
            raise ConfigError(f"DSA parameter prob_flip={self.prob_flip!r} must be in [0, 1]")
        if not (math.isfinite(self.ratio_scale) and self.ratio_scale >= 1.0):
            raise ConfigError(f"DSA parameter ratio_scale={self.ratio_scale!r} must be >= 1")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split an underscore-separated strategy into op names; '' or 'none' gives no ops."""
    text = strategy.strip()
    if text.lower() in ("", "none"):
        return ()
    ops = tuple(text.split("_"))
    for op in ops:
        if op not in _OP_PARTS:
            raise ConfigError(
                f"unknown augmentation op {op!r} in DSA strategy {strategy!r}; "
                f"known ops: {', '.join(OPS)} (or 'none')"
            )
    return ops


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"DSA mode must be single (the field's) or all, not {mode!r}")
    return mode


class DiffAugment:
    """Differentiable siamese augmentation: one op of ``strategy`` per call (``mode="single"``,
    the field's), or every op in order (``mode="all"``)."""

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        params: DSAParams | None = None,
        batch_mode: bool = False,
        mode: str = "single",
    ) -> None:
        self.strategy = strategy
        self.ops = parse_strategy(strategy)
        self.params = params if params is not None else DSAParams()
        self.batch_mode = batch_mode
        self.mode = check_mode(mode)
        table: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
            "brightness": self._brightness,
            "saturation": self._saturation,
            "contrast": self._contrast,
            "crop": self._crop,
            "cutout": self._cutout,
            "flip": self._flip,
            "scale": self._scale,
            "rotate": self._rotate,
        }
        self._op_fns = [[table[part] for part in _OP_PARTS[op]] for op in self.ops]

    def __repr__(self) -> str:
        return (
            f"DiffAugment(strategy={self.strategy!r}, params={self.params!r}, "
            f"batch_mode={self.batch_mode}, mode={self.mode!r})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``x`` of shape (N, C, H, W); randomness comes only from ``generator``.
        In single mode the op is drawn first from ``generator``, so two generators in the same
        state pick the same op as well as the same parameters."""
        if not self._op_fns:
            return x
        if x.dim() != 4:
            raise ValueError(
                f"DiffAugment expects images shaped (N, C, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"DiffAugment expects floating-point images, got {x.dtype}")
        if generator.device.type != "cpu":
            raise ValueError(
                f"DiffAugment draws parameters on the CPU; got a generator on {generator.device}"
            )
        if self.mode == "single":
            pick = int(torch.randint(len(self._op_fns), (1,), generator=generator))
            fns = self._op_fns[pick]
        else:
            fns = [fn for op in self._op_fns for fn in op]
        for fn in fns:
            x = fn(x, generator)
        return x

    def chosen_op(self, generator: torch.Generator) -> str:
        """The op a single-mode call with a generator in this state applies (the state is
        not advanced)."""
        probe = torch.Generator()
        probe.set_state(generator.get_state())
        return self.ops[int(torch.randint(len(self.ops), (1,), generator=probe))]

    # ---- parameter draws (CPU, explicit generator) -------------------------------------------

    def _uniform(self, n: int, g: torch.Generator) -> torch.Tensor:
        """n values in [0, 1): one shared draw in batch mode, one per sample otherwise."""
        return torch.rand(1 if self.batch_mode else n, generator=g).expand(n)

    def _randint(self, low: int, high: int, n: int, g: torch.Generator) -> torch.Tensor:
        """n integers in [low, high): one shared draw in batch mode, one per sample otherwise."""
        return torch.randint(low, high, (1 if self.batch_mode else n,), generator=g).expand(n)

    @staticmethod
    def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """CPU values of shape (N,) -> (N, 1, 1, 1) on the images' device and dtype."""
        return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

    # ---- colour ------------------------------------------------------------------------------

    def _brightness(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        u = self._per_sample(self._uniform(x.shape[0], g), x)
        return x + (u - 0.5) * self.params.ratio_brightness

    def _saturation(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # With one channel the pixel equals its channel mean, so this is the identity.
        u = self._per_sample(self._uniform(x.shape[0], g), x)
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) * (u * self.params.ratio_saturation) + mean

    def _contrast(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        u = self._per_sample(self._uniform(x.shape[0], g), x)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (u + self.params.ratio_contrast) + mean

    # ---- geometry ----------------------------------------------------------------------------

    def _crop(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Translate by whole pixels, filling with zeros: out[i, j] = x[i + dy, j + dx]."""
        n, c, h, w = x.shape
        pad_h = int(h * self.params.ratio_crop_pad + 0.5)
        pad_w = int(w * self.params.ratio_crop_pad + 0.5)
        dy = self._randint(-pad_h, pad_h + 1, n, g).to(x.device)
        dx = self._randint(-pad_w, pad_w + 1, n, g).to(x.device)
        padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
        rows = torch.arange(h, device=x.device) + pad_h + dy.view(n, 1)  # (n, h)
        cols = torch.arange(w, device=x.device) + pad_w + dx.view(n, 1)  # (n, w)
        row_idx = rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pad_w)
        out = padded.gather(2, row_idx)
        col_idx = cols.view(n, 1, 1, w).expand(n, c, h, w)
        return out.gather(3, col_idx)

    def _cutout(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Zero a square of side ratio*size centred anywhere on the image (clipped at borders)."""
        n, _, h, w = x.shape
        size_h = int(h * self.params.ratio_cutout + 0.5)
        size_w = int(w * self.params.ratio_cutout + 0.5)
        cy = self._randint(0, h + (1 - size_h % 2), n, g).to(x.device)
        cx = self._randint(0, w + (1 - size_w % 2), n, g).to(x.device)
        top = (cy - size_h // 2).view(n, 1)
        left = (cx - size_w // 2).view(n, 1)
        rows = torch.arange(h, device=x.device).view(1, h)
        cols = torch.arange(w, device=x.device).view(1, w)
        in_rows = (rows >= top) & (rows < top + size_h)  # (n, h)
        in_cols = (cols >= left) & (cols < left + size_w)  # (n, w)
        keep = ~(in_rows.view(n, h, 1) & in_cols.view(n, 1, w))
        return x * keep.view(n, 1, h, w).to(x.dtype)

    def _flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        u = self._uniform(x.shape[0], g)
        flip = (u < self.params.prob_flip).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)

    @staticmethod
    def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def _scale(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        ratio = self.params.ratio_scale
        sx = self._uniform(n, g) * (ratio - 1.0 / ratio) + 1.0 / ratio
        sy = self._uniform(n, g) * (ratio - 1.0 / ratio) + 1.0 / ratio
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = sx
        theta[:, 1, 1] = sy
        return self._resample(x, theta)

    def _rotate(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        angle = (self._uniform(n, g) - 0.5) * 2.0 * math.radians(self.params.ratio_rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin
        theta[:, 1, 0] = sin
        theta[:, 1, 1] = cos
        return self._resample(x, theta)
