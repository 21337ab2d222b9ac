"""Evaluation and feature networks of the dataset-condensation field (ConvNet, AlexNet, VGG11,
ResNet18, MLP), with heads sized from the input so that 28, 32, 64 px or any other square size
works, with 1 or 3 channels.

Every net has the same surface: ``forward(x)`` gives logits, ``embed(x)`` the penultimate
features of shape ``(N, embed_dim)``, and ``classifier`` is the final ``nn.Linear`` so that
``forward(x) == classifier(embed(x))``.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from common.errors import ConfigError

NORMS = ("instancenorm", "batchnorm", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer; "instancenorm" is GroupNorm(c, c) as in DC/DM/MTT."""
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r} (choose from: {', '.join(NORMS)})")


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")


def _after_pools(image_size: int, pools: int, model: str) -> int:
    """Spatial size after `pools` floor 2x2 poolings; ConfigError if it reaches 0."""
    size = image_size
    for _ in range(pools):
        size //= 2
    if size < 1:
        raise ConfigError(
            f"image size {image_size} is too small for {model} ({pools} 2x2 poolings); "
            f"it needs at least {2**pools} px"
        )
    return size


class ConvNet(nn.Module):
    """The field's ConvNet: `depth` blocks of conv3x3(width) -> norm -> ReLU -> 2x2 avg pool,
    then a linear classifier on the flattened last block. Instance norm is
    nn.GroupNorm(width, width, affine=True) (the DC/DM/MTT convention)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if depth is None:
            depth = 3 if image_size <= 32 else 4
        _check_positive(channels=channels, num_classes=num_classes, image_size=image_size)
        _check_positive(width=width, depth=depth)
        size = _after_pools(image_size, depth, f"ConvNet of depth {depth}")
        blocks = []
        in_channels = channels
        for _ in range(depth):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                    _norm(norm, width),
                    nn.ReLU(inplace=True),
                    nn.AvgPool2d(kernel_size=2, stride=2),
                )
            )
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.depth = depth
        self.feature_channels = width
        self.feature_size = size
        self.embed_dim = width * size * size
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block (after pooling), in order."""
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def _last(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened last block, shape (N, embed_dim)."""
        return self._last(x).flatten(1)

    def pooled_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The spatially averaged last block, shape (N, width)."""
        return self._last(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """AlexNet for small images: five convolutions (5x5, 5x5, 3x3, 3x3, 3x3) with ReLU, 2x2 max
    pooling after the 1st, 2nd and 5th, and a linear classifier on the flattened features.
    Widths scale with `width` (128 gives the field's 128-192-256-192-192); `norm` may add
    instance or batch norm after each convolution (none by default, as in DC)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_positive(
            channels=channels, num_classes=num_classes, image_size=image_size, width=width
        )
        size = _after_pools(image_size, 3, "AlexNet")
        w1, w2, w3 = width, width * 3 // 2, width * 2
        layers: list[nn.Module] = []

        def conv(cin: int, cout: int, kernel: int, pool: bool) -> None:
            layers.extend(
                [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), _norm(norm, cout), nn.ReLU()]
            )
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))

        conv(channels, w1, 5, pool=True)
        conv(w1, w2, 5, pool=True)
        conv(w2, w3, 3, pool=False)
        conv(w3, w2, 3, pool=False)
        conv(w2, w2, 3, pool=True)
        self.body = nn.Sequential(*layers)
        self.embed_dim = w2 * size * size
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the last convolution block, shape (N, embed_dim)."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# VGG11 configuration in multiples of `width`; "M" is a 2x2 max pool.
_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(nn.Module):
    """VGG11 as in DC's 'VGG11': conv3x3 -> norm -> ReLU blocks (widths 64..512 for width=64)
    with five 2x2 max poolings, then a linear classifier. A pooling that would shrink the map
    below 1x1 is skipped, so images of any size (28 px included) work."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 64,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        _check_positive(
            channels=channels, num_classes=num_classes, image_size=image_size, width=width
        )
        layers: list[nn.Module] = []
        in_channels, size = channels, image_size
        for item in _VGG11:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size //= 2
                continue
            out_channels = width * int(item)
            layers.extend(
                [
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
                    _norm(norm, out_channels),
                    nn.ReLU(inplace=True),
                ]
            )
            in_channels = out_channels
        self.body = nn.Sequential(*layers)
        self.embed_dim = in_channels * size * size
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the last block, shape (N, embed_dim)."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class _BasicBlock(nn.Module):
    """Two conv3x3 -> norm layers with a residual connection (1x1 projection when the shape
    changes), followed by ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.norm2 = _norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 for small images: a 3x3 stride-1 stem (no max pool), four stages of two
    BasicBlocks (widths width..8*width, strides 1, 2, 2, 2), adaptive average pooling to 1x1
    and a linear classifier. Norm is instance norm (GroupNorm(c, c)) by default, as in DC."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 64,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        _check_positive(
            channels=channels, num_classes=num_classes, image_size=image_size, width=width
        )
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
            _norm(norm, width),
            nn.ReLU(inplace=True),
        )
        blocks = []
        cin = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**stage
            blocks.append(_BasicBlock(cin, cout, stride, norm))
            blocks.append(_BasicBlock(cout, cout, 1, norm))
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim = cin
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The globally averaged last stage, shape (N, embed_dim) with embed_dim = 8 * width."""
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Linear(C*H*W, width) -> ReLU -> Linear(width, width) -> ReLU -> Linear(width, classes)."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        _check_positive(
            channels=channels, num_classes=num_classes, image_size=image_size, width=width
        )
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
        )
        self.embed_dim = width
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The second hidden layer's activations, shape (N, width)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


NETS: dict[str, type[nn.Module]] = {
    "convnet": ConvNet,
    "alexnet": AlexNet,
    "vgg11": VGG11,
    "resnet18": ResNet18,
    "mlp": MLP,
}


def build_net(
    name: str, channels: int, num_classes: int, image_size: int, **kwargs: object
) -> nn.Module:
    """Build the net called `name` (case-insensitive key of NETS); `kwargs` go to its
    constructor (e.g. width, depth, norm). Unknown names or options raise ConfigError."""
    cls = NETS.get(name.lower())
    if cls is None:
        raise ConfigError(f"unknown model {name!r} (choose from: {', '.join(NETS)})")
    params = inspect.signature(cls.__init__).parameters
    options = [p for p in params if p not in ("self", "channels", "num_classes", "image_size")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ConfigError(
            f"model {name!r} does not take option(s) {', '.join(unknown)} "
            f"(it takes: {', '.join(options) or 'none'})"
        )
    return cls(channels, num_classes, image_size, **kwargs)


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _uniform_like(param: torch.Tensor, bound: float, generator: torch.Generator) -> torch.Tensor:
    """U(-bound, bound) values for `param`, drawn on the generator's device, in a fixed order."""
    values = torch.empty(param.shape, dtype=torch.float32, device=generator.device)
    return values.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def reinit_(net: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of `net` from `generator` only (torch's global RNG is not
    touched), reproducing torch's default scheme: conv/linear weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform with a=sqrt(5)); norm weights 1,
    biases 0 and batch-norm running statistics reset. The same seed gives the same parameters
    on every rank and device. Raises TypeError for a module type it does not know."""
    for module in net.modules():
        own = list(module.named_parameters(recurse=False))
        if isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
            weight = module.weight
            fan_in = weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            weight.copy_(_uniform_like(weight, bound, generator))
            if module.bias is not None:
                module.bias.copy_(_uniform_like(module.bias, bound, generator))
        elif isinstance(module, _NORM_TYPES):
            if getattr(module, "weight", None) is not None:
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.fill_(0.0)
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()
        elif own:
            names = ", ".join(n for n, _ in own)
            raise TypeError(
                f"reinit_ does not know how to initialise {type(module).__name__} "
                f"(parameters: {names})"
            )
