"""Nets: every architecture at 28/32/64 px with 1 or 3 channels, ConvNet blocks and pooled
features, build_net errors, and deterministic re-initialisation from a private generator."""

import pytest
import torch
from torch import nn

from common.errors import ConfigError
from engine.nets import NETS, ConvNet, build_net, reinit_

CLASSES = 5
N = 2
# Narrow versions of every net keep the tests fast.
SMALL = {"convnet": 8, "alexnet": 8, "vgg11": 4, "resnet18": 4, "mlp": 16}


def small(name: str, channels: int, image_size: int, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_net(name, channels, CLASSES, image_size, width=SMALL[name], **kwargs)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("image_size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_backward(name: str, image_size: int, channels: int) -> None:
    net = small(name, channels, image_size)
    x = torch.randn(N, channels, image_size, image_size)
    logits = net(x)
    assert logits.shape == (N, CLASSES)
    emb = net.embed(x)
    assert emb.shape == (N, net.embed_dim)
    assert net.classifier.in_features == net.embed_dim
    torch.testing.assert_close(net.classifier(emb), logits)
    logits.square().sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("image_size", [16, 48])
def test_other_sizes(name: str, image_size: int) -> None:
    net = small(name, 3, image_size)
    x = torch.randn(N, 3, image_size, image_size)
    assert net(x).shape == (N, CLASSES)
    assert net.embed(x).shape == (N, net.embed_dim)


@pytest.mark.parametrize("image_size,depth", [(28, 3), (32, 3), (64, 4)])
def test_convnet_blocks(image_size: int, depth: int) -> None:
    width = 8
    net = ConvNet(1, CLASSES, image_size, width=width)
    assert net.depth == depth
    assert net.feature_channels == width
    x = torch.randn(N, 1, image_size, image_size)
    feats = net.features(x)
    assert len(feats) == depth
    size = image_size
    for f in feats:
        size //= 2
        assert f.shape == (N, width, size, size)
    assert net.embed_dim == width * size * size
    torch.testing.assert_close(net.embed(x), feats[-1].flatten(1))
    pooled = net.pooled_feature(x)
    assert pooled.shape == (N, width)
    torch.testing.assert_close(pooled, feats[-1].mean(dim=(2, 3)))
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == depth
    assert all(m.num_groups == width and m.affine for m in norms)


@pytest.mark.parametrize("norm,kind", [("batchnorm", nn.BatchNorm2d), ("none", nn.Identity)])
def test_convnet_norm_options(norm: str, kind: type) -> None:
    net = ConvNet(3, CLASSES, 32, width=8, depth=2, norm=norm)
    assert all(isinstance(block[1], kind) for block in net.blocks)
    assert net(torch.randn(N, 3, 32, 32)).shape == (N, CLASSES)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="'nosuchnet'"):
        build_net("nosuchnet", 3, CLASSES, 32)
    with pytest.raises(ConfigError, match="convnet"):
        build_net("nosuchnet", 3, CLASSES, 32)
    with pytest.raises(ConfigError, match="depth"):
        build_net("mlp", 3, CLASSES, 32, depth=3)
    with pytest.raises(ConfigError, match="'groupie'"):
        ConvNet(3, CLASSES, 32, width=8, norm="groupie")
    with pytest.raises(ConfigError, match="too small"):
        ConvNet(3, CLASSES, 16, width=8, depth=5)
    assert isinstance(build_net("ConvNet", 3, CLASSES, 32, width=8, depth=1), ConvNet)


def _params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("name", list(NETS))
def test_reinit_deterministic(name: str) -> None:
    # Two nets built under different global seeds (as on different ranks).
    torch.manual_seed(1)
    a = build_net(name, 3, CLASSES, 32, width=SMALL[name])
    torch.manual_seed(2)
    b = build_net(name, 3, CLASSES, 32, width=SMALL[name])
    state = torch.get_rng_state()
    reinit_(a, torch.Generator().manual_seed(7))
    reinit_(b, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(_params(a), _params(b), strict=True):
        assert torch.equal(pa, pb)
    reinit_(b, torch.Generator().manual_seed(8))
    assert any(not torch.equal(pa, pb) for pa, pb in zip(_params(a), _params(b), strict=True))


def test_reinit_scheme() -> None:
    net = ConvNet(3, CLASSES, 32, width=8, norm="batchnorm")
    net(torch.randn(N, 3, 32, 32))  # moves the running statistics
    reinit_(net, torch.Generator().manual_seed(0))
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            bound = 1.0 / m.weight[0].numel() ** 0.5
            assert m.weight.abs().max() <= bound
            assert m.bias.abs().max() <= bound
            assert m.weight.std() > bound / 4
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_reinit_unknown_module() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(TypeError, match="Scaled"):
        reinit_(nn.Sequential(nn.Linear(2, 2), Scaled()), torch.Generator().manual_seed(0))
