"""The one place where the monitors' collectives happen: sharding the probe, agreeing on failures, gathering.

**The rule: every rank calls the same functions of this module, in the same order, with tensors of the same
shapes, whatever happened on it** (a failure, a share that is only padding, a score it could not compute). A rank
that skipped a call, or called with another shape, would leave the others waiting forever. The monitor therefore
calls :func:`all_gather_objects` exactly once per logged epoch (every rank's failures and score names, so that
all ranks drop the same methods and scores), and :func:`gather_rows` once per kind of result, after that agreement,
with the same keys on every rank. Nothing here is called from a rank-0-only branch.

With one process (or no initialised process group) every function is local and free.
"""

from __future__ import annotations

from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_objects", "gather_rows", "shard"]

T = TypeVar("T")


def shard(size: int, world: int, rank: int) -> list[int]:
    """This rank's contiguous share of ``range(size)``, padded by wrap-around to ``ceil(size / world)`` items.

    Every rank gets the same number of items (gathers need equal shapes; an empty share would need special
    cases); padded items are dropped after gathering, since flattening ``[W, S]`` restores the probe order.

    Example:
        >>> [shard(5, 2, r) for r in range(2)], shard(1, 3, 2)
        ([[0, 1, 2], [3, 4, 0]], [0])
    """
    per_rank = -(-size // world)
    return [(rank * per_rank + j) % size for j in range(per_rank)]


def all_gather_objects(trainer: pl.Trainer, obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank: one collective.

    Example:
        >>> from types import SimpleNamespace
        >>> all_gather_objects(SimpleNamespace(world_size=1), {"failed": []})
        [{'failed': []}]
    """
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_rows(trainer: pl.Trainer, local: Tensor, size: int) -> Tensor:
    """Each rank's share ``[S, ...]`` -> the whole probe ``[size, ...]`` in probe order, on the CPU: one collective.

    ``local`` must have the same shape on every rank (:func:`shard` makes the shares equal).
    """
    device = trainer.strategy.root_device
    everything = trainer.strategy.all_gather(local.to(device))  # [W,S,...]
    return torch.as_tensor(everything).flatten(0, 1)[:size].cpu()
