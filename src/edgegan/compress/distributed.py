"""Multi-process training with ``torchrun``: DistributedDataParallel, gloo on CPU, NCCL on GPU.

Launch any training entry point under ``torchrun --nproc_per_node N ...``; ``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` joins the process group from them (``env://``). Without those variables
(or with ``WORLD_SIZE`` 1) everything here is a no-op: :func:`wrap_ddp` returns the model
unchanged, :func:`distributed_sampler` returns None, :func:`all_reduce_mean` returns its input, so
a single-process run behaves exactly as it would without this module.

The recipes follow one pattern: every rank builds the same seeded models, :func:`wrap_ddp` wraps
the trained ones (gradients are averaged across ranks at each backward, so the weights stay
identical), the training loader draws each rank's shard through :func:`distributed_sampler`
(``set_epoch`` every epoch), losses are averaged with :func:`all_reduce_mean` for logging, and only
the main rank (:func:`is_main`) writes logs, model folders and checkpoints -- always the
:func:`unwrap`-ped module's weights, so checkpoints load without DDP.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup",
    "distributed_sampler",
    "init_distributed",
    "is_main",
    "local_device",
    "run_on_main",
    "unwrap",
    "wrap_ddp",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``enabled`` is False for a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    enabled: bool = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        return default


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Join the ``torchrun`` process group (``WORLD_SIZE`` > 1), or describe a single process.

    The backend is NCCL for a CUDA ``device``, gloo otherwise; on CUDA the current device is set
    from ``LOCAL_RANK``. Calling it again when the group already exists reuses that group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    cuda = torch.device(device).type == "cuda"
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, str(dist.get_backend()), True)
    if world_size <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, True)


def local_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """``device`` with a bare ``cuda`` pinned to this rank's GPU (``cuda:LOCAL_RANK``) when distributed."""
    dev = torch.device(device)
    if info.enabled and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", info.local_rank)
    return dev


def is_main(info: DistInfo) -> bool:
    """True on rank 0 (and in a single-process run): the rank that writes files."""
    return info.rank == 0


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def wrap_ddp(model: nn.Module, info: DistInfo, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed, else itself.

    Rank 0's parameters and buffers are broadcast to the other ranks when the wrapper is built.
    On CUDA the module is placed on this rank's device; on CPU no ``device_ids`` are given.
    """
    if not info.enabled:
        return model
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        index = param.device.index if param.device.index is not None else info.local_rank
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[index], output_device=index, find_unused_parameters=find_unused_parameters
        )
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or DataParallel) wrapper; any other module unchanged."""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def distributed_sampler(
    dataset: Dataset[Any], info: DistInfo, *, shuffle: bool = True, seed: int = 0
) -> DistributedSampler[Any] | None:
    """This rank's shard of ``dataset`` (call ``set_epoch(epoch)`` every epoch), or None when not distributed.

    Every rank sees ``ceil(len / world_size)`` items; the last shards are padded with repeats so
    all ranks run the same number of steps (DDP needs that).
    """
    if not info.enabled:
        return None
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=False
    )


def all_reduce_mean(value: float | Tensor, info: DistInfo) -> float:
    """The mean of a scalar over all ranks (``value`` itself when not distributed), as a float."""
    if not info.enabled:
        return float(value.detach()) if isinstance(value, Tensor) else float(value)
    device = torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl" else torch.device("cpu")
    if isinstance(value, Tensor):
        t = value.detach().to(device=device, dtype=torch.float64).reshape(())
    else:
        t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / info.world_size


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` itself when not distributed."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[no-any-return]


def run_on_main(fn: Callable[[], T], info: DistInfo) -> T | None:
    """``fn()`` on the main rank (None on the others, which wait for it); an exception it raises
    is raised on every rank (the original on rank 0, a ``RuntimeError`` naming it elsewhere), so no
    rank is left waiting at a later collective. Single-process: just ``fn()``.
    """
    if not info.enabled:
        return fn()
    result, error = None, None
    if is_main(info):
        try:
            result = fn()
        except Exception as exc:  # re-raised below, after the other ranks have heard of it
            error = exc
    message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}", info)
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


def cleanup(info: DistInfo) -> None:
    """Leave the process group (no-op when not distributed or already left). Every rank first waits for the
    others, so none tears gloo down while a peer still talks to it (seen as "terminate called without an active
    exception" at exit on a loaded 2-core machine)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        gc.collect()  # unreachable DDP wrappers and pending works still hold the group's gloo threads
        dist.destroy_process_group()
