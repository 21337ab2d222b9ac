"""Checks a condensation must pass before any work (pretraining, coreset fits, loaders): an IPC
the data can hold, and a step whose memory is not clearly beyond the device."""

from __future__ import annotations

from common.errors import ConfigError
from common.fsio import human
from data_prep.meta import DatasetMeta
from engine.class_plan import ClassPlan, ceil_div
from engine.config import RunConfig

FLOAT_BYTES = 4


def check_ipc(cfg: RunConfig, meta: DatasetMeta) -> None:
    counts = meta.train_class_counts
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if cfg.condense.ipc > counts[smallest]:
        name = meta.class_names[smallest] if smallest < len(meta.class_names) else smallest
        raise ConfigError(
            f"ipc={cfg.condense.ipc} is more than the {counts[smallest]} training images of "
            f"class {smallest} ({name!r}) in this {meta.dataset} dataset: the smallest class "
            f"bounds the images per class (lower ipc to {counts[smallest]} at most)"
        )


def step_memory_floor(cfg: RunConfig, meta: DatasetMeta, plan: ClassPlan) -> int:
    """A lower bound on one rank's memory in a condensation step: the first phi layer's
    activations of the synthetic images (kept for the backward pass) and the real association
    batch itself. The true peak is several times this."""
    c = cfg.condense
    classes = plan.largest_share
    pixels = meta.image_size * meta.image_size
    synthetic = classes * c.ipc * c.phi_width * pixels * FLOAT_BYTES
    real = classes * c.ipc * c.assoc_per_image * meta.channels * pixels * FLOAT_BYTES
    phi_batch = ceil_div(c.phi_batch, plan.world_size) * c.phi_width * pixels * FLOAT_BYTES
    return synthetic + real + phi_batch


def device_memory(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda asked but no CUDA device is visible")
        index = torch.device(device).index
        return torch.cuda.get_device_properties(0 if index is None else index).total_memory
    import psutil

    return psutil.virtual_memory().available  # what this process can still get, not the total


def check_condense(cfg: RunConfig, meta: DatasetMeta, plan: ClassPlan) -> None:
    """The plan's split over the ranks, the IPC, the step's memory."""
    plan.check_split()
    check_ipc(cfg, meta)
    need, have = step_memory_floor(cfg, meta, plan), device_memory(cfg.device)
    if need > have:
        raise ConfigError(
            f"ipc={cfg.condense.ipc} with these settings needs at least {human(need)} of "
            f"{cfg.device} memory per step on each of {plan.world_size} rank(s), and the device "
            f"has {human(have)}{' available' if cfg.device == 'cpu' else ''}: lower ipc, "
            "condense.classes_per_step or condense.phi_batch, or use more ranks"
        )
