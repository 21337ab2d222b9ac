"""Everything distributed in one place: start-up from torchrun or SLURM variables, the class
split of a step, gradient averaging and the autograd-aware sums the losses need.

Without a launcher (no WORLD_SIZE / SLURM_NTASKS, or a world of 1) nothing is initialised and
every helper is the identity, so the single-process path runs the very same code.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from common.errors import ConfigError, GencondError, InUseError
from common.runlock import hold


class RankFailure(GencondError):
    """A collective failed: another rank died or the collective timed out."""


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launcher_env(environ: dict[str, str] | None = None) -> dict[str, int] | None:
    """(rank, world size, local rank) from torchrun's variables, else SLURM's; None when the
    process was not started by a launcher."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return {
            "rank": int(env["RANK"]),
            "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env.get("LOCAL_RANK", 0)),
        }
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return {
            "rank": int(env["SLURM_PROCID"]),
            "world_size": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", 0)),
        }
    return None


def _slurm_master() -> None:
    """MASTER_ADDR/PORT for a SLURM step started without torchrun (submitit sets its own)."""
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST", os.environ.get("SLURM_NODELIST", ""))
        first = nodes.split(",")[0]
        if "[" in first:  # node[01-04] -> node01
            prefix, rest = first.split("[", 1)
            first = prefix + rest.split("-")[0].split(",")[0].rstrip("]")
        os.environ["MASTER_ADDR"] = first or socket.gethostname()
    if "MASTER_PORT" not in os.environ:
        job = int(os.environ.get("SLURM_JOB_ID", "0"))
        os.environ["MASTER_PORT"] = str(20000 + job % 20000)


def init(device: str = "cpu", timeout_s: float = 600.0) -> DistEnv:
    """Join the process group the launcher describes (gloo on CPU, NCCL on CUDA) and pick the
    device from LOCAL_RANK. A single process gets a DistEnv with world_size 1 and no group."""
    found = launcher_env()
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = found["local_rank"] if found else 0
    elif found is None or found["world_size"] == 1:
        rank, world, local = 0, 1, 0
    else:
        rank, world, local = found["rank"], found["world_size"], found["local_rank"]
        if "MASTER_ADDR" not in os.environ:
            _slurm_master()
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda asked but no CUDA device is visible")
        torch_device = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
    else:
        torch_device = torch.device("cpu")
    return DistEnv(rank, world, local, torch_device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def my_share(items: list[int], rank: int, world_size: int) -> list[int]:
    """Rank r's contiguous block of `items` (sizes differ by at most one, larger blocks first)."""
    base, extra = divmod(len(items), world_size)
    start = rank * base + min(rank, extra)
    return items[start : start + base + (1 if rank < extra else 0)]


@contextmanager
def _guard(what: str) -> Iterator[None]:
    """Turn a backend error of a collective into one readable RankFailure."""
    try:
        yield
    except RankFailure:
        raise
    except RuntimeError as err:
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise RankFailure(
            f"{what} failed on rank {world()[0]}: another rank stopped or the collective "
            f"timed out ({first})"
        ) from err


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum .grad over ranks (losses are already scaled by each rank's share of the step, so the
    sum is the single-process gradient). One flat all-reduce per call."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    with _guard("gradient all-reduce"):
        dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, no autograd (statistics, counts), on the tensor's own device: a CPU
    tensor travels through the GPU under NCCL, which reduces device tensors only."""
    if not dist.is_initialized():
        return tensor
    on = tensor.device
    if dist.get_backend() == "nccl" and on.type != "cuda":
        on = torch.device("cuda", torch.cuda.current_device())
    out = tensor.to(on, copy=True)
    with _guard("all-reduce"):
        dist.all_reduce(out)
    return out.to(tensor.device)


class _Sum(torch.autograd.Function):
    """Forward: sum over ranks. Backward: for a replicated loss (every rank computes the same
    loss from the sum) the gradient is passed through unchanged, since each rank's own rows
    already receive the full gradient; for a shared statistic feeding each rank's own loss
    (global BatchNorm) the ranks' gradients are summed."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, replicated: bool) -> torch.Tensor:
        ctx.replicated = replicated
        out = tensor.clone(memory_format=torch.contiguous_format)
        with _guard("all-reduce of class centers / statistics"):
            dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.replicated:
            return grad, None
        out = grad.clone(memory_format=torch.contiguous_format)
        with _guard("all-reduce of statistics (backward)"):
            dist.all_reduce(out)
        return out, None


def sum_replicated(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks for a value every rank then uses identically."""
    return _Sum.apply(tensor, True) if dist.is_initialized() else tensor


def sum_shared(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks whose result feeds each rank's own loss."""
    return _Sum.apply(tensor, False) if dist.is_initialized() else tensor


def gather_rows(local: torch.Tensor, row_index: torch.Tensor, total_rows: int) -> torch.Tensor:
    """Every rank's rows in one (total_rows, ...) tensor, differentiable with respect to this
    rank's `local` rows (placed at `row_index`). For a loss every rank computes identically."""
    full = local.new_zeros((total_rows, *local.shape[1:])).index_add(0, row_index, local)
    if not dist.is_initialized():
        return full
    return _Sum.apply(full, True)


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    with _guard("broadcast"):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def merge_dicts(mine: dict) -> dict:
    """The union of every rank's dict (keys disjoint)."""
    if not dist.is_initialized():
        return dict(mine)
    everyone: list = [None] * dist.get_world_size()
    with _guard("gathering results"):
        dist.all_gather_object(everyone, mine)
    return {k: v for part in everyone for k, v in part.items()}


def barrier() -> None:
    if dist.is_initialized():
        with _guard("barrier"):
            dist.barrier()


@contextmanager
def hold_on_rank0(folder: Path, command: str, lock: Path | None = None) -> Iterator[None]:
    """hold() by global rank 0 of a distributed run; every rank learns whether it got it, so
    all of them refuse together instead of the others waiting for rank 0."""
    rank, size = world()
    if size == 1:
        with hold(folder, command, lock):
            yield
        return
    error = None
    with ExitStack() as stack:
        if rank == 0:
            try:
                stack.enter_context(hold(folder, command, lock))
            except InUseError as e:
                error = str(e)
        error = broadcast_object(error)
        if error:
            raise InUseError(error)
        yield
