"""Loaders: class-grouped sampling deterministic and rank-independent, world-sliced random
batches, normalisation, sequential coverage."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from data_prep.loaders import ClassGroupedLoader, Normalizer, TestLoader, TrainLoader, read_all
from data_prep.meta import load_class_index, load_meta
from data_prep.options import PrepOptions
from data_prep.orders import association_indices
from data_prep.prepare import prepare_arrays
from data_prep.splits import RawDataset, Segment, Split

CLASSES = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small 3-channel dataset with uneven class sizes (one class smaller than n)."""
    rng = np.random.default_rng(0)
    counts = [30] * (CLASSES - 1) + [5]
    labels = rng.permutation(np.repeat(np.arange(CLASSES), counts)).astype(np.int64)
    images = rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    test_y = np.arange(50) % CLASSES
    test_x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    raw = RawDataset(
        "toy",
        [str(c) for c in range(CLASSES)],
        Split([Segment(images, labels, Path("<generated>"))]),
        Split([Segment(test_x, test_y, Path("<generated>"))]),
        [],
    )
    out = tmp_path_factory.mktemp("toy")
    prepare_arrays(raw, out, PrepOptions(workers=2))
    return out


def _index(data):
    meta = load_meta(data)
    return load_class_index(data, meta), meta.class_offsets


def test_associations_keyed_by_seed_step_class(data):
    index, offsets = _index(data)
    _, labels = read_all(data, "train")
    a = association_indices(index, offsets, seed=3, step=7, classes=[0, 1, 2, 3], n_per_class=8)
    # the same class asked alone, in another order, or with other classes: the same images
    for classes in ([2], [3, 2], [9, 2, 0]):
        b = association_indices(index, offsets, 3, 7, classes, 8)
        pos = classes.index(2)
        np.testing.assert_array_equal(b[pos * 8 : (pos + 1) * 8], a[16:24])
    assert (labels[a] == np.repeat([0, 1, 2, 3], 8)).all()
    assert all(len(set(a[i * 8 : (i + 1) * 8])) == 8 for i in range(4))  # no repeats
    other_step = association_indices(index, offsets, 3, 8, [0, 1, 2, 3], 8)
    other_seed = association_indices(index, offsets, 4, 7, [0, 1, 2, 3], 8)
    assert not np.array_equal(a, other_step) and not np.array_equal(a, other_seed)
    small = association_indices(index, offsets, 3, 7, [CLASSES - 1], 8)  # 5 images, n=8
    assert (labels[small] == CLASSES - 1).all() and len(small) == 8


def test_grouped_loader_yields_the_association_images(data):
    images, labels = read_all(data, "train")
    index, offsets = _index(data)
    loader = ClassGroupedLoader(data, n_per_class=4, seed=11, window=3, raw=True)
    schedule = lambda s: [(s + i) % CLASSES for i in range(5)]  # noqa: E731
    seen = 0
    for step, x, y in loader.iterate(schedule, start_step=2, num_steps=8):  # crosses windows
        want = association_indices(index, offsets, 11, step, schedule(step), 4)
        np.testing.assert_array_equal(x.numpy(), images[want])
        np.testing.assert_array_equal(y.numpy(), labels[want])
        seen += 1
    assert seen == 8 and step == 9
    again = ClassGroupedLoader(data, n_per_class=4, seed=11, raw=True).get(5, schedule(5))
    want = association_indices(index, offsets, 11, 5, schedule(5), 4)
    np.testing.assert_array_equal(again[0].numpy(), images[want])


def _grouped_worker(rank: int, world: int, data: str, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        classes = list(range(rank, 8, world))  # this rank's share of the step's classes
        loader = ClassGroupedLoader(data, n_per_class=6, seed=5)
        result = {}
        for step, x, _ in loader.iterate(lambda s: classes, start_step=10, num_steps=3):
            for i, c in enumerate(classes):
                result[(step, c)] = x[i * 6 : (i + 1) * 6].clone()
        gathered = [None] * world
        dist.all_gather_object(gathered, result)
        if rank == 0:
            merged = {k: v for part in gathered for k, v in part.items()}
            torch.save(merged, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [1, 2, 4])
def test_grouped_loader_rank_independent_across_processes(data, tmp_path, world):
    """Real gloo ranks, each streaming only its own classes, get what one process gets."""
    out = tmp_path / f"world{world}.pt"
    mp.start_processes(
        _grouped_worker,
        args=(world, str(data), str(tmp_path / "store"), str(out)),
        nprocs=world,
        start_method="spawn",
    )
    got = torch.load(out)
    single = ClassGroupedLoader(data, n_per_class=6, seed=5)
    for step, x, _ in single.iterate(lambda s: list(range(8)), start_step=10, num_steps=3):
        for c in range(8):
            torch.testing.assert_close(got[(step, c)], x[c * 6 : (c + 1) * 6], rtol=0, atol=0)


def test_random_loader_global_batches_independent_of_world_size(data):
    """Rank r's batch j is slice r of global batch j, whatever the world size."""
    one = TrainLoader(data, batch_size=24, seed=9, rank=0, world_size=1, raw=True)
    for world in (2, 4):
        shards = [
            TrainLoader(data, batch_size=24 // world, seed=9, rank=r, world_size=world, raw=True)
            for r in range(world)
        ]
        for epoch in (0, 1):
            one.epoch = epoch
            ref = [x for x, _ in one]
            assert len(ref) == (11 * 30 + 5) // 24
            for loader in shards:
                loader.epoch = epoch
            per_rank = [[x for x, _ in loader] for loader in shards]
            for j, x in enumerate(ref):
                torch.testing.assert_close(torch.cat([p[j] for p in per_rank]), x, rtol=0, atol=0)
    one.epoch = 0
    first, second = [x for x, _ in one], [x for x, _ in one]
    assert not torch.equal(first[0], second[0])  # a new permutation each epoch


def test_normalisation_on_device(data):
    meta = load_meta(data)
    raw = next(iter(TestLoader(data, batch_size=16, raw=True)))[0]
    normed = next(iter(TestLoader(data, batch_size=16)))[0]
    want = (raw.permute(0, 3, 1, 2).double() / 255 - torch.tensor(meta.mean).view(1, 3, 1, 1)) / (
        torch.tensor(meta.std).view(1, 3, 1, 1)
    )
    assert normed.dtype == torch.float32 and normed.shape == (16, 3, 8, 8)
    torch.testing.assert_close(normed.double(), want, rtol=1e-5, atol=1e-5)
    back = Normalizer(meta.mean, meta.std).denormalize(normed)
    assert torch.equal(back, raw.permute(0, 3, 1, 2))


@pytest.mark.parametrize("channels", [1, 3])
def test_normalised_batches_have_standard_nchw_strides(channels):
    """A channels_last view would send every ConvNet downstream down the CPU's slow GroupNorm
    path; one- and three-channel batches both come out with the standard NCHW strides."""
    norm = Normalizer([0.5] * channels, [0.25] * channels)
    raw = torch.randint(0, 256, (4, 6, 5, channels), dtype=torch.uint8)
    out = norm(raw)
    assert out.shape == (4, channels, 6, 5)
    assert out.stride() == torch.empty(4, channels, 6, 5).stride()
    want = (raw.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out, want)


def test_sequential_loader_covers_test_split_in_order(data):
    labels = torch.cat([y for _, y in TestLoader(data, batch_size=7)])
    assert labels.tolist() == (np.arange(50) % CLASSES).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_loaders_on_cuda(data):
    x, y = next(iter(TrainLoader(data, batch_size=8, seed=0, device="cuda")))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32


def test_unprepared_folder_is_refused(tmp_path):
    from common.errors import DataError

    with pytest.raises(DataError, match="no meta.json"):
        TrainLoader(tmp_path, batch_size=4, seed=0)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_loaders_run_when_pinned_to_one_cpu(data):
    """Under taskset or a SLURM cpuset the loaders size FFCV's workers and torch's threads to
    the CPUs the process may use (numba refuses more threads than that)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = (
        "import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from data_prep.loaders import TrainLoader, default_threads; "
        f"n = sum(len(x) for x, _ in TrainLoader({str(data)!r}, batch_size=8, seed=0)); "
        "print(n, default_threads(), torch.get_num_threads())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [str((11 * 30 + 5) // 8 * 8), "1", "1"]
