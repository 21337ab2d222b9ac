"""FFCV loaders over a prepared dataset folder, with normalisation on the device in torch.

- TrainLoader: random order, world-size-invariant global batches split across ranks.
- ClassGroupedLoader: for a step and its classes, n real images of each class (associations).
- TestLoader: sequential order, every image once.
Each yields float32 NCHW images normalised with meta.json's mean/std, and int64 labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.loader import Loader, OrderOption
from ffcv.transforms import Squeeze, ToDevice, ToTensor

from common.errors import ConfigError
from data_prep import meta as meta_io
from data_prep.options import default_workers, usable_cpus
from data_prep.orders import ClassGrouped, WorldSliceRandom, build_loader

Batch = tuple[torch.Tensor, torch.Tensor]


def torch_default_threads() -> int:
    """What torch picks by itself: OMP_NUM_THREADS, else the physical cores this process may
    use."""
    import psutil

    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return min(psutil.cpu_count(logical=False) or 1, usable_cpus())


# FFCV sets torch's intra-op threads to 1 when imported and to its worker count whenever a
# Loader is built or iterated; a 2-core machine then trains at half speed. Undo both.
torch.set_num_threads(torch_default_threads())


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _iterate(loader: Loader) -> Iterator:
    with keep_torch_threads():
        iterator = iter(loader)
    yield from iterator


def default_threads() -> int:
    """FFCV's workers: one per usable CPU, at most 8 (more than the affinity allows makes
    numba refuse)."""
    return default_workers()


class Normalizer:
    """uint8 NHWC -> float32 NCHW, (x/255 - mean)/std, on the batch's device.

    One conversion on contiguous NHWC memory, then one fused multiply-add (2.7x faster on the CPU
    than permute -> float -> subtract -> divide on 3200-image batches). The result has the standard
    NCHW strides: a channels_last view would make every conv net downstream run channels_last,
    where the CPU's GroupNorm (the ConvNet's instance norm) is several times slower (a 300-epoch
    ConvNet-3 evaluation on Fashion-MNIST took 2x as long)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32) * 255
        self.std = torch.tensor(std, dtype=torch.float32) * 255
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            scale = 1 / self.std
            self._on[device] = (scale.to(device), (-self.mean * scale).to(device))
        return self._on[device]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        scale, bias = self._affine(images.device)
        out = images.float()
        torch.addcmul(bias, out, scale, out=out)
        if out.shape[3] == 1:  # one channel: NHWC memory is NCHW memory; only the strides change
            return out.squeeze(3).unsqueeze(1)
        return out.permute(0, 3, 1, 2).contiguous()

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """float NCHW normalised -> uint8 NCHW."""
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images * std + mean).round().clamp(0, 255).to(torch.uint8)


def _pipelines(device: torch.device) -> dict:
    to_device = [ToDevice(device, non_blocking=True)] if device.type == "cuda" else []
    return {
        "image": [NDArrayDecoder(), ToTensor(), *to_device],
        "label": [IntDecoder(), ToTensor(), Squeeze(), *to_device],
    }


class _Base:
    def __init__(self, data_dir: str | Path, device: str | torch.device, raw: bool):
        self.data_dir = Path(data_dir)
        self.meta = meta_io.load_meta(self.data_dir)
        self.device = torch.device(device)
        self.normalizer = Normalizer(self.meta.mean, self.meta.std)
        self.raw = raw  # yield uint8 NHWC copies instead of normalised floats

    def _finish(self, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        labels = labels.to(torch.int64, copy=True).reshape(-1)
        if self.raw:
            return images.clone(), labels
        return self.normalizer(images), labels


class TrainLoader(_Base):
    """Random order; per-rank batches of `batch_size`, slices of one global permutation."""

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        num_workers: int | None = None,
        raw: bool = False,
    ):
        super().__init__(data_dir, device, raw)
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside a world of {world_size}")
        self.rank, self.world_size = rank, world_size  # the caller's ranks: one process by default
        with keep_torch_threads():
            self.loader = build_loader(
                WorldSliceRandom,
                {"rank": self.rank, "world_size": self.world_size},
                fname=str(self.data_dir / meta_io.TRAIN_BETON),
                batch_size=batch_size,
                num_workers=num_workers or default_threads(),
                seed=seed,
                drop_last=True,
                pipelines=_pipelines(self.device),
            )

    @property
    def epoch(self) -> int:
        return self.loader.next_epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.loader.next_epoch = value

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in _iterate(self.loader):
            yield self._finish(images, labels)


class ClassGroupedLoader(_Base):
    """Associations: for step s and classes [c...], n_per_class training images of each class,
    class-major, deterministic from (seed, s, c) and the same whichever rank asks."""

    def __init__(
        self,
        data_dir: str | Path,
        n_per_class: int,
        seed: int,
        device: str | torch.device = "cpu",
        num_workers: int | None = None,
        window: int = 32,
        raw: bool = False,
    ):
        super().__init__(data_dir, device, raw)
        if n_per_class < 1:
            raise ConfigError(f"images per class must be at least 1, got {n_per_class}")
        self.n_per_class, self.seed, self.window = n_per_class, seed, max(1, window)
        self.num_workers = num_workers or default_threads()
        self.class_index = meta_io.load_class_index(self.data_dir, self.meta)
        self.offsets = self.meta.class_offsets
        self._by_size: dict[int, tuple[Loader, ClassGrouped]] = {}

    def _loader(self, classes_per_step: int) -> tuple[Loader, ClassGrouped]:
        if classes_per_step not in self._by_size:
            with keep_torch_threads():
                loader = build_loader(
                    ClassGrouped,
                    {
                        "class_index": self.class_index,
                        "offsets": self.offsets,
                        "n_per_class": self.n_per_class,
                        "window": self.window,
                    },
                    fname=str(self.data_dir / meta_io.TRAIN_BETON),
                    batch_size=classes_per_step * self.n_per_class,
                    num_workers=self.num_workers,
                    seed=self.seed,
                    drop_last=False,
                    pipelines=_pipelines(self.device),
                )
            self._by_size[classes_per_step] = (loader, loader.traversal_order)
        return self._by_size[classes_per_step]

    def _check(self, classes: Sequence[int]) -> None:
        bad = [c for c in classes if not 0 <= int(c) < self.meta.num_classes]
        if bad:
            raise ConfigError(f"class {bad[0]} out of range for {self.meta.num_classes} classes")

    def iterate(
        self,
        schedule: Callable[[int], Sequence[int]],
        start_step: int = 0,
        num_steps: int | None = None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(step, images, labels) for steps start_step, start_step+1, ...; schedule(step) gives
        the classes of that step (the same number every step)."""
        size = len(schedule(start_step))
        loader, order = self._loader(size)
        step, end = start_step, None if num_steps is None else start_step + num_steps
        while end is None or step < end:
            count = self.window if end is None else min(self.window, end - step)
            for s in range(step, step + count):
                classes = schedule(s)
                if len(classes) != size:
                    raise ConfigError(f"step {s} has {len(classes)} classes, earlier {size}")
                self._check(classes)
            order.request(schedule, step, count)
            for images, labels in _iterate(loader):
                yield (step, *self._finish(images, labels))
                step += 1

    def get(self, step: int, classes: Sequence[int]) -> Batch:
        """The associations of one step (for random access; iterate() streams faster)."""
        classes = list(classes)
        _, images, labels = next(self.iterate(lambda _: classes, step, 1))
        return images, labels


class TestLoader(_Base):
    """Sequential order over the test split (or the train split with split="train"), or over
    the given `indices` of it."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 512,
        device: str | torch.device = "cpu",
        split: str = "test",
        num_workers: int | None = None,
        raw: bool = False,
        indices: Sequence[int] | None = None,
    ):
        super().__init__(data_dir, device, raw)
        beton = {"test": meta_io.TEST_BETON, "train": meta_io.TRAIN_BETON}[split]
        extra = {} if indices is None else {"indices": np.asarray(indices, dtype=np.int64)}
        with keep_torch_threads():
            self.loader = Loader(
                str(self.data_dir / beton),
                batch_size=batch_size,
                num_workers=num_workers or default_threads(),
                order=OrderOption.SEQUENTIAL,
                drop_last=False,
                seed=0,
                pipelines=_pipelines(self.device),
                **extra,
            )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in _iterate(self.loader):
            yield self._finish(images, labels)


def read_all(data_dir: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Every image (uint8 NHWC) and label of a split, in beton order."""
    images, labels = [], []
    for x, y in TestLoader(data_dir, batch_size=1024, split=split, raw=True):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def read_indices(
    data_dir: str | Path,
    indices: Sequence[int],
    split: str = "train",
    device: str | torch.device = "cpu",
    normalized: bool = True,
) -> Batch:
    """The images and labels at `indices` of a split, in that order (coresets, herding)."""
    base = _Base(data_dir, device, raw=not normalized)
    beton = {"test": meta_io.TEST_BETON, "train": meta_io.TRAIN_BETON}[split]
    indices = np.asarray(indices, dtype=np.int64)
    with keep_torch_threads():
        loader = Loader(
            str(base.data_dir / beton),
            batch_size=max(1, len(indices)),
            num_workers=default_threads(),
            order=OrderOption.SEQUENTIAL,
            indices=indices,
            drop_last=False,
            seed=0,
            pipelines=_pipelines(base.device),
        )
    images, labels = base._finish(*next(_iterate(loader)))
    return images, labels
