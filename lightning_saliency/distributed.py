"""The one place where the monitors' collectives happen: sharding the probe, agreeing on failures, gathering.

**The rule: every rank calls the same functions of this module, in the same order, with tensors of the same
shapes, whatever happened on it** (a failure, a share that is only padding, a score it could not compute). A rank
that skipped a call, or called with another shape, would leave the others waiting forever. Per logged epoch the
monitor therefore calls :func:`agree` exactly once (one collective: every rank's :class:`Report` of its failures
and score names, so that all ranks drop the same methods and scores), then, unless a rank failed as a whole,
:func:`gather_result` (one :func:`gather_rows` per kind of result, with the same keys on every rank). Nothing here
is called from a rank-0-only branch; ``tests/test_distributed.py`` checks that the sequence of collectives is the
same on every rank whatever fails where.

With one process (or no initialised process group) every function is local and free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_saliency.monitoring.result import EpochResult, FailureKey, Failures

__all__ = ["Report", "agree", "agreed_error", "all_gather_objects", "gather_result", "gather_rows", "shard"]

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


def from_rank_zero(trainer: pl.Trainer, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (e.g. a plan every rank must follow): one collective.

    Example:
        >>> from types import SimpleNamespace
        >>> from_rank_zero(SimpleNamespace(world_size=1), "plan")
        'plan'
    """
    return all_gather_objects(trainer, obj)[0]


def gather_rows(trainer: pl.Trainer, local: Tensor, size: int) -> Tensor:
    """Each rank's share ``[S, ...]`` -> the whole probe ``[size, ...]`` in probe order, on the CPU: one collective.

    ``local`` must have the same shape on every rank (:func:`shard` makes the shares equal).
    """
    device = trainer.strategy.root_device
    everything = trainer.strategy.all_gather(local.to(device))  # [W,S,...]
    return torch.as_tensor(everything).flatten(0, 1)[:size].cpu()


@dataclass
class Report:
    """What one rank tells the others after its work (picklable): the agreement's payload."""

    fatal: str | None
    failed: dict[FailureKey, tuple[str, str]]
    score_names: list[str]

    @classmethod
    def of(cls, result: EpochResult, failures: Failures, error: Exception | None) -> Report:
        """This rank's report: its error (if it failed as a whole), its failed methods and scores, its score names."""
        names = sorted({n for values in result.scores.values() for n in values})
        return cls(None if error is None else f"{type(error).__name__}: {error}", dict(failures.failed), names)


def agree(trainer: pl.Trainer, report: Report) -> list[Report]:
    """Every rank's report, in rank order: one collective, called by every rank once per logged epoch."""
    return all_gather_objects(trainer, report)


def agreed_error(reports: list[Report], error: Exception | None) -> Exception | None:
    """If some rank failed as a whole, every rank returns an error (its own, or one naming the failed ranks)."""
    failed = [r for r, report in enumerate(reports) if report.fatal is not None]
    if error is None and failed:
        return RuntimeError(f"SaliencyMonitor failed on rank(s) {failed}: {reports[failed[0]].fatal}")
    return error


def gather_result(trainer: pl.Trainer, result: EpochResult, size: int, names: list[str]) -> EpochResult:
    """Every rank's share to the whole probe, in probe order: the same collectives, with the same shapes.

    ``result`` holds the same methods on every rank (failures were agreed and dropped), and ``names`` are the
    score names of all ranks; a score missing on this rank for some method is NaN there (never reported).
    """
    out = EpochResult(times=result.times)
    labels = list(result.maps)
    if not labels:
        return out
    maps = gather_rows(trainer, torch.stack([result.maps[label] for label in labels], 1), size)  # [B,M,1,H,W]
    out.maps = {label: maps[:, i].clone() for i, label in enumerate(labels)}
    if names:
        nan = torch.full((len(next(iter(result.maps.values()))),), float("nan"))
        packed = torch.stack(
            [torch.stack([result.scores.get(lb, {}).get(n, nan) for n in names], 1) for lb in labels], 1
        )  # [S,M,N]
        values = gather_rows(trainer, packed, size)  # [B,M,N]
        out.scores = {
            lb: {n: values[:, i, j] for j, n in enumerate(names) if not bool(values[:, i, j].isnan().all())}
            for i, lb in enumerate(labels)
        }
    for mode in ("deletion", "insertion"):
        with_curve = [lb for lb in labels if lb in result.curves.get(mode, {})]
        if mode in names and with_curve:
            curves = gather_rows(trainer, torch.stack([result.curves[mode][lb] for lb in with_curve], 1), size)
            out.curves[mode] = {lb: curves[:, i] for i, lb in enumerate(with_curve)}  # [B,steps+1] each
    return out
