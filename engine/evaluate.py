"""The field's evaluation protocol for condensed sets, coreset baselines and a diversity check.

- train_and_test: train a fresh net on a (synthetic) set with DSA augmentation and report its
  final-epoch accuracy on the real test split.
- evaluate_sets: that, for several sets x models x seeds, with mean and std per (set, model).
- random_real, herding: real-image coresets of the same images-per-class (IPC).
- diversity: within-class vs between-class feature distances (catches generator collapse).

Every random draw comes from generators seeded from the run's seed, so a run is reproducible and
leaves torch's global RNG state as it found it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.console import log, progress_bar
from common.errors import ConfigError
from data_prep.loaders import TestLoader, read_indices
from data_prep.meta import load_class_index, load_meta
from engine import distributed
from engine.augment import DiffAugment
from engine.config import EvalConfig
from engine.nets import build_net, reinit_

# independent streams derived from a run's seed
_INIT, _SHUFFLE, _AUGMENT, _GLOBAL = range(4)


def _stream_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one independent random stream of a run."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), stream]).generate_state(2)
    return (int(state[0]) << 31 ^ int(state[1])) & (2**63 - 1)


@contextmanager
def _isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's global RNG (CPU, and `device` when CUDA) seeded from `seed`,
    restoring the caller's state afterwards."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if (device.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(_stream_seed(seed, _GLOBAL))
        for index in devices:
            torch.cuda.default_generators[index].manual_seed(_stream_seed(seed, _GLOBAL))
        yield


def _net_kwargs(model: str, cfg: EvalConfig) -> dict:
    return {"width": cfg.width} if model.lower() == "convnet" else {}


def _check_set(images: Tensor, labels: Tensor, num_classes: int, channels: int, size: int) -> None:
    if images.dim() != 4 or images.shape[0] < 1:
        raise ConfigError(
            f"images must be a non-empty (N, C, H, W) batch, got {tuple(images.shape)}"
        )
    if labels.shape != (images.shape[0],):
        raise ConfigError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    if tuple(images.shape[1:]) != (channels, size, size):
        raise ConfigError(
            f"images of shape {tuple(images.shape[1:])}, the dataset's are {(channels, size, size)}"
        )
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ConfigError(f"labels outside [0, {num_classes})")


def train_and_test(
    model: str,
    images: Tensor,
    labels: Tensor,
    data_dir: str | Path,
    cfg: EvalConfig,
    seed: int,
    soft_labels: Tensor | None = None,
    device: str | torch.device = "cpu",
) -> float:
    """Train a fresh `model` on (images, labels) and return its final-epoch test accuracy (%).

    Initialisation, shuffling and DSA augmentation come from generators seeded from `seed`; the
    caller's global RNG is neither used nor changed. SGD(lr, momentum, weight_decay), lr x0.1
    from epoch epochs//2 on; each epoch covers the set once in shuffled, near-equal minibatches
    of at most batch_size. Loss: cross-entropy with `labels`, or soft cross-entropy (KL up to a
    constant) with `soft_labels`, an (N, K) matrix of probabilities, when given."""
    cfg.check()
    meta = load_meta(data_dir)
    channels, size = meta.channels, meta.image_size
    _check_set(images, labels, meta.num_classes, channels, size)
    device = torch.device(device)
    x_all = images.detach().to(device, torch.float32)
    y_all = labels.detach().to(device, torch.int64)
    n = x_all.shape[0]
    if soft_labels is not None:
        if tuple(soft_labels.shape) != (n, meta.num_classes):
            raise ConfigError(
                f"soft labels of shape {tuple(soft_labels.shape)}, expected {(n, meta.num_classes)}"
            )
        soft_all = soft_labels.detach().to(device, torch.float32)

    with _isolated_rng(seed, device):
        net = build_net(model, channels, meta.num_classes, size, **_net_kwargs(model, cfg))
        reinit_(net, torch.Generator().manual_seed(_stream_seed(seed, _INIT)))
        net = net.to(device)
        opt = torch.optim.SGD(
            net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        augment = DiffAugment(cfg.dsa_strategy, batch_mode=False, mode=cfg.dsa_mode)
        shuffle_gen = torch.Generator().manual_seed(_stream_seed(seed, _SHUFFLE))
        aug_gen = torch.Generator().manual_seed(_stream_seed(seed, _AUGMENT))
        batches = -(-n // min(cfg.batch_size, n))
        decay_at = cfg.epochs // 2
        net.train()
        for epoch in range(cfg.epochs):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (0.1 if decay_at > 0 and epoch >= decay_at else 1.0)
            order = torch.randperm(n, generator=shuffle_gen).to(device)
            for idx in torch.tensor_split(order, batches):
                logits = net(augment(x_all[idx], aug_gen))
                if soft_labels is None:
                    loss = F.cross_entropy(logits, y_all[idx])
                else:
                    loss = -(soft_all[idx] * F.log_softmax(logits, dim=1)).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return evaluate_accuracy(net, data_dir, cfg.test_batch_size, device)


@torch.no_grad()
def evaluate_accuracy(
    net: nn.Module, data_dir: str | Path, batch_size: int = 512, device: str | torch.device = "cpu"
) -> float:
    """Accuracy (%) of `net` (in eval mode) on the real test split of data_dir."""
    net.eval()
    correct = total = 0
    for x, y in TestLoader(data_dir, batch_size=batch_size, device=device, split="test"):
        x, y = x.to(device), y.to(device)
        correct += int((net(x).argmax(1) == y).sum())
        total += y.numel()
    return 100.0 * correct / max(total, 1)


def evaluate_sets(
    sets: dict[str, tuple[Tensor, Tensor]],
    data_dir: str | Path,
    cfg: EvalConfig,
    seed_offset: int = 0,
    soft: dict[str, Tensor] | None = None,
    device: str | torch.device = "cpu",
    done: dict[tuple[str, str, int], float] | None = None,
    on_result: Callable[[tuple[str, str, int], float], None] | None = None,
) -> dict:
    """Evaluate every set with every model of cfg.models over cfg.seeds seeds (seed i is
    seed_offset + i): {set: {model: {"mean", "std", "accs"}}}. Under several ranks the
    (set, model, seed) runs are dealt out round-robin and gathered; the result is the same.
    "std" is the population standard deviation (numpy's default, ddof=0) of the per-seed
    accuracies. Runs in `done` ({(set, model, i): accuracy}, of a stopped evaluation) are not
    trained again; on_result((set, model, i), accuracy) is called on each one finished."""
    cfg.check()
    soft = soft or {}
    unknown = sorted(set(soft) - set(sets))
    if unknown:
        raise ConfigError(f"soft labels for unknown set(s): {', '.join(unknown)}")
    meta = load_meta(data_dir)
    for model in cfg.models:  # fail before any training on an unknown model or option
        with torch.random.fork_rng(devices=[]):
            build_net(
                model, meta.channels, meta.num_classes, meta.image_size, **_net_kwargs(model, cfg)
            )
    # every (set, model, seed) is one job; under torchrun / SLURM the jobs are dealt to ranks
    jobs = [(name, model, i) for name in sets for model in cfg.models for i in range(cfg.seeds)]
    done = done or {}
    jobs = [job for job in jobs if job not in done]
    rank, world = distributed.world()
    mine = {}
    with progress_bar() as bar:
        task = bar.add_task("Evaluating", total=len(jobs[rank::world]))
        for name, model, i in jobs[rank::world]:
            bar.update(task, description=f"Evaluating {name} / {model} / seed {i}")
            images, labels = sets[name]
            mine[(name, model, i)] = train_and_test(
                model, images, labels, data_dir, cfg, seed_offset + i, soft.get(name), device
            )
            if on_result:
                on_result((name, model, i), mine[(name, model, i)])
            bar.advance(task)
    accs_of = {**done, **distributed.merge_dicts(mine)}
    results: dict = {}
    for name in sets:
        results[name] = {}
        for model in cfg.models:
            accs = [accs_of[(name, model, i)] for i in range(cfg.seeds)]
            mean, std = float(np.mean(accs)), float(np.std(accs))
            results[name][model] = {"mean": mean, "std": std, "accs": accs}
            log(f"{name} / {model}: {mean:.2f} ± {std:.2f} % over {len(accs)} seeds")
    return results


def summarize(results: dict) -> list[dict]:
    """Table rows {"set", "model", "mean", "std", "seeds"} of an evaluate_sets result."""
    return [
        {"set": name, "model": model, "mean": r["mean"], "std": r["std"], "seeds": len(r["accs"])}
        for name, by_model in results.items()
        for model, r in by_model.items()
    ]


def _class_lists(data_dir: str | Path, ipc: int) -> list[np.ndarray]:
    """Training indices of each class; ConfigError if ipc < 1 or a class has fewer."""
    if ipc < 1:
        raise ConfigError(f"images per class must be at least 1, got {ipc}")
    meta = load_meta(data_dir)
    index, offsets = load_class_index(data_dir, meta), meta.class_offsets
    classes = [index[offsets[c] : offsets[c + 1]] for c in range(meta.num_classes)]
    for c, members in enumerate(classes):
        if len(members) < ipc:
            raise ConfigError(f"class {c} has {len(members)} training images, fewer than ipc {ipc}")
    return classes


def random_real(
    data_dir: str | Path, ipc: int, seed: int, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """`ipc` distinct random training images of each class, class-major, normalised."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(members, ipc, replace=False) for members in _class_lists(data_dir, ipc)]
    return read_indices(data_dir, np.concatenate(picks), "train", device)


def _net_device(net: nn.Module) -> torch.device:
    return next(iter(net.parameters()), torch.empty(0)).device


@torch.no_grad()
def _embed(net: nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """net.embed over image batches (moved to the net's device), in eval mode (the net's mode is
    restored afterwards), concatenated on the CPU."""
    was_training, device = net.training, _net_device(net)
    net.eval()
    try:
        return torch.cat([net.embed(x.to(device)).float().cpu() for x in batches])
    finally:
        net.train(was_training)


def herding_select(features: Tensor, k: int) -> list[int]:
    """Greedy herding (Welling 2009): k distinct rows of `features`, each step taking the row
    that brings the mean of the rows taken so far closest to the mean of all rows."""
    feats = features.detach().double().cpu()
    if not 1 <= k <= feats.shape[0]:
        raise ConfigError(f"cannot herd {k} of {feats.shape[0]} samples")
    mean, total = feats.mean(0), torch.zeros(feats.shape[1], dtype=torch.float64)
    taken = torch.zeros(feats.shape[0], dtype=torch.bool)
    chosen = []
    for step in range(1, k + 1):
        # ||mean - (total + f_j) / step|| is smallest where ||step * mean - total - f_j|| is
        dist = ((step * mean - total) - feats).square().sum(1)
        dist[taken] = float("inf")
        j = int(dist.argmin())
        chosen.append(j)
        taken[j] = True
        total += feats[j]
    return chosen


def herding_indices(
    data_dir: str | Path,
    ipc: int,
    feature_net: nn.Module,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> np.ndarray:
    """Training-split indices of the herding coreset, class-major (see herding)."""
    classes = _class_lists(data_dir, ipc)
    loader = TestLoader(data_dir, batch_size=batch_size, device=device, split="train")
    features = _embed(feature_net, (x for x, _ in loader))
    picks = [members[herding_select(features[members], ipc)] for members in classes]
    return np.concatenate(picks).astype(np.int64)


def herding(
    data_dir: str | Path,
    ipc: int,
    feature_net: nn.Module,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
) -> tuple[Tensor, Tensor]:
    """Herding coreset: embed every training image with feature_net.embed (eval mode, no grad),
    herd `ipc` images per class towards the class-mean feature, return them class-major.
    Images are read onto `device`; the net embeds on its own device."""
    indices = herding_indices(data_dir, ipc, feature_net, device, batch_size)
    return read_indices(data_dir, indices, "train", device)


def _mean_pairwise(features: Tensor) -> float:
    return float(torch.pdist(features).mean()) if features.shape[0] > 1 else 0.0


def diversity(
    images: Tensor, labels: Tensor, feature_net: nn.Module, batch_size: int = 512
) -> dict:
    """Feature-space spread of a set: {"within_class": mean over classes of the mean pairwise
    Euclidean distance between that class's embeddings, "between_class": mean pairwise distance
    between class-mean embeddings, "ratio": within / between (nan when between is 0)}.
    Identical images within every class give within_class == 0; with one image a class there is
    no within-class spread at all: within_class and ratio are None."""
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ConfigError(f"{images.shape[0]} images and {labels.shape[0]} labels")
    feats = _embed(feature_net, images.detach().split(batch_size))
    feats = feats.double()
    labels = labels.detach().cpu()
    classes = labels.unique(sorted=True)
    within = [_mean_pairwise(feats[labels == c]) for c in classes]
    centres = torch.stack([feats[labels == c].mean(0) for c in classes])
    within_class = float(np.mean(within)) if within else 0.0
    between_class = _mean_pairwise(centres)
    ratio = within_class / between_class if between_class > 0 else float("nan")
    if all(int((labels == c).sum()) < 2 for c in classes):  # one image a class: no spread
        within_class = ratio = None
    return {"within_class": within_class, "between_class": between_class, "ratio": ratio}
