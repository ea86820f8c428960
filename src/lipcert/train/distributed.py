"""torch.distributed plumbing for data-parallel training (``torchrun --nproc_per_node=N``).

The trainer splits every global batch of ``batch_size`` examples into ``world_size`` equal
per-rank batches and averages gradients with DistributedDataParallel, so N processes take
the same steps as one process up to floating-point summation order. Only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lipcert.errors import BadInputError


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL for CUDA devices and gloo otherwise. Returns the current :class:`World`
    (a single process when ``WORLD_SIZE`` is unset or 1 and no group exists).
    """
    if not dist.is_available():
        return World()
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return current_world()


def current_world() -> World:
    """The :class:`World` of an initialized process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its ``LOCAL_RANK``; CPU stays CPU."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def per_rank_batch(batch_size: int, world: World) -> int:
    """The batch each rank processes so the ranks together see ``batch_size`` examples."""
    if batch_size % world.size:
        raise BadInputError(
            f"batch_size {batch_size} must be divisible by the number of processes "
            f"({world.size}) so every rank gets an equal share of each batch."
        )
    return batch_size // world.size


def sum_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sum of ``values`` over all ranks (a no-op for one process)."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
