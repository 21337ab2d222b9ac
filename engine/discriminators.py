"""The discriminators: GAN pretraining's (PixelDiscriminator, on images, with the AC-GAN head)
and Algorithm 1's (FeatureDiscriminator on phi's features, the paper's l_feature;
ImageDiscriminator on the augmented images, Table 8's l_real)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import spectral_norm


class PixelDiscriminator(nn.Module):
    """Strided spectral-norm convs down to 4x4, sum-pooled features h;
    D(x, y) = w.h + <embed(y), h>; aux(x) = class logits from h."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int):
        super().__init__()
        layers, cin, size = [], channels, image_size
        cout = width
        while size > 4:
            layers += [
                spectral_norm(nn.Conv2d(cin, cout, 3, padding=1)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(cout, cout, 4, stride=2, padding=1)),
                nn.LeakyReLU(0.2),
            ]
            cin, cout, size = cout, min(cout * 2, width * 8), size // 2
        self.body = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(cin, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, cin))
        self.aux = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x).sum(dim=(2, 3))
        score = self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)
        return score, self.aux(h)


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
