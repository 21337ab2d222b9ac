"""Condensation losses (Zhang et al. 2023), scaled to stay O(1) whatever the layer sizes and
the number of classes.

Normalisation choices (the paper leaves them open):
- L_f (`condense.feature_reduction`): `mean`, per-element means (MSE, as the paper's text
  says) summed over layers, or `sum`, Eq. 2's squared norm as written (CAFE's summed squared
  error): each image's squared distance summed over every element of every layer, averaged over
  images. `sum` is larger by the elements per image (about 16,000 for ConvNet-3 on 28 px): at
  the paper's rates it blows G out within 30 steps.
- L_intra and L_inter use unit-length features, so temperature and margin have a fixed scale
  while phi is re-initialised every outer iteration.
- L_inter is the mean over ordered class pairs (the paper sums), so its size does not grow with
  the number of classes per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_matching(
    synthetic: list[torch.Tensor], association_means: list[torch.Tensor], reduction: str = "mean"
) -> torch.Tensor:
    """Eq. 2: sum over layers of the distance between each synthetic image's feature and the
    mean feature of its association (same shapes per layer: one row per synthetic image).
    `mean`: per-element mean (MSE); `sum`: each image's summed squared error, mean over images."""
    pairs = zip(synthetic, association_means, strict=True)
    if reduction == "sum":
        return sum((s - t).pow(2).flatten(1).sum(1).mean() for s, t in pairs)
    return sum(F.mse_loss(s, t) for s, t in pairs)


def intra_class_diversity(
    features: torch.Tensor,
    centers: torch.Tensor,
    ipc: int,
    temperature: float,
    origin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 3. features: (classes * ipc, D) synthetic features, class-major; centers: (classes, D)
    each class's center. Positive pair: an image and its class center; negatives: the other
    K - 1 images of its class. Mean over images of -log(e<f,c> / (sum_i e<f,f_i> + e<f,c>)).

    `origin` (D,) is subtracted from features and centers before they are made unit length.
    ReLU features of a freshly initialised phi all point the same way (cosines near 1), which
    leaves this loss flat at log K; measured from the mean real feature they spread out."""
    if origin is not None:
        features, centers = features - origin, centers - origin
    f = F.normalize(features, dim=1).view(-1, ipc, features.shape[1])
    c = F.normalize(centers, dim=1)
    positive = torch.einsum("nkd,nd->nk", f, c) / temperature  # (classes, K)
    pairwise = torch.einsum("nkd,njd->nkj", f, f) / temperature  # (classes, K, K)
    self_mask = torch.eye(ipc, dtype=torch.bool, device=f.device)
    negatives = pairwise.masked_fill(self_mask, float("-inf"))
    logits = torch.cat([positive.unsqueeze(2), negatives], dim=2)  # positive at index 0
    return (torch.logsumexp(logits, dim=2) - positive).mean()


def inter_class_discrimination(centers: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 4 averaged over ordered pairs: max(margin - ||mean f_A - mean f_B||, 0) for A != B.
    centers: (classes, D) means of unit-length synthetic features per class."""
    n = len(centers)
    if n < 2:
        return centers.sum() * 0
    diff = centers.unsqueeze(0) - centers.unsqueeze(1)
    dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()  # differentiable at 0
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=centers.device)
    return F.relu(margin - dist[off_diagonal]).mean()


def class_centers(
    features: torch.Tensor, ipc: int, origin: torch.Tensor | None = None
) -> torch.Tensor:
    """(classes * ipc, D) class-major -> (classes, D) means of the unit-length features
    (measured from `origin` when given, as in intra_class_diversity)."""
    if origin is not None:
        features = features - origin
    return F.normalize(features, dim=1).view(-1, ipc, features.shape[1]).mean(1)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def mean_embedding_gap(
    embed, real: torch.Tensor, synthetic: torch.Tensor, augment, generators: tuple
) -> torch.Tensor:
    """DM's loss for one class (Zhao & Bilen 2023): ||mean embed(aug(real)) - mean
    embed(aug(synthetic))||^2, the real side without gradient. `generators` (real, synthetic)
    are in the same state, so both batches get the same DSA transform."""
    g_real, g_syn = generators
    with torch.no_grad():
        target = embed(augment(real, g_real)).mean(0)
    return (target - embed(augment(synthetic, g_syn)).mean(0)).square().sum()
