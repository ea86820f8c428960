"""Mini-batches whose order depends only on (seed, epoch), for exact resume and DDP."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, TensorDataset

from lipcert.errors import BadInputError
from lipcert.train.distributed import World


def dataset_tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a data set of (image, label) pairs, as two stacked tensors."""
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        return data.tensors[0], data.tensors[1]
    try:
        pairs = [data[i] for i in range(len(data))]
        return torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs])
    except (TypeError, IndexError, ValueError) as err:
        raise BadInputError(
            f"training data must yield (image tensor, integer label) pairs ({err}); pass a "
            "TensorDataset(images, labels) such as lipcert.data.load(name, split)."
        ) from err


def epoch_batches(
    data: Dataset, *, batch_size: int, seed: int, epoch: int, world: World
) -> Iterator[list[int]]:
    """Index batches of this rank for ``epoch``: a shuffle seeded by ``seed + epoch``.

    The global order is the same for any number of processes: torch's DistributedSampler
    deals the permutation out round-robin, so the ``k``-th per-rank batches of all ranks
    together are the ``k``-th global batch of ``batch_size * world.size`` examples of a
    single process. ``batch_size`` is the per-rank size. Examples beyond a multiple of
    ``world.size`` are dropped (none for one process).
    """
    sampler = DistributedSampler(
        data, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    return iter(BatchSampler(sampler, batch_size, drop_last=False))
