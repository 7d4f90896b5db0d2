"""The one place where the monitors' collectives happen: sharding the probe, agreeing on failures, gathering.

**The rule: every rank calls the same functions of this module, in the same order, with tensors of the same
shapes, whatever happened on it** (a failure, a share that is only padding, a score it could not compute). A rank
that skipped a call, or called with another shape, would leave the others waiting forever. Per logged epoch the
monitor therefore calls :func:`agree` exactly once (one collective: every rank's :class:`Report` of its failures
and score names, so that all ranks drop the same methods and scores), then, unless a rank failed as a whole,
:func:`gather_result` (one :func:`gather_rows` per kind of result, with the same keys on every rank). Nothing here
is called from a rank-0-only branch; ``tests/test_distributed.py`` checks that the sequence of collectives is the
same on every rank whatever fails where.

**Sharded models** (FSDP, FSDP2 through ``ModelParallelStrategy``): every forward is itself a collective (the
ranks all-gather the parameters), so the probe is not sharded: every rank runs the whole probe, the same forwards
in the same order, and nothing is gathered (rank 0 has every result). Where a method or score decides from data
how many forwards to run (Score-CAM's distinct channels, an attack's early stop), it takes rank 0's decision
through :func:`agreed`, and a retry after a failure is decided by :func:`on_any_rank` (a shared gradient pass that
failed on one rank is retried method by method on all), and a method whose maps failed on one rank is scored on
none (:func:`lost_anywhere`); these are collectives only inside :func:`replicated_work`
(the monitor's work under a sharded strategy) and free everywhere else. A failure on one rank only in the middle of
a method's forwards (e.g. out of memory on one device) cannot be evened out: the ranks' forwards part ways, and
the run fails (or waits for the backend's timeout); failures after the forwards are agreed as under DDP.

With one process (or no initialised process group) every function is local and free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from lightning_saliency.monitoring.result import EpochResult, FailureKey, Failures

__all__ = [
    "REFUSED_STRATEGIES",
    "SHARDED_STRATEGIES",
    "Report",
    "agree",
    "agreed",
    "agreed_error",
    "all_gather_objects",
    "gather_result",
    "gather_rows",
    "is_sharded",
    "lost_anywhere",
    "on_any_rank",
    "replicated_work",
    "shard",
]

T = TypeVar("T")

SHARDED_STRATEGIES = ("FSDPStrategy", "ModelParallelStrategy")
"""Strategies whose forwards are collectives (sharded parameters): the probe runs whole on every rank."""
REFUSED_STRATEGIES = ("DeepSpeedStrategy",)
"""Strategies the monitor refuses: DeepSpeed's engine owns the forward (ZeRO-3 partitions parameters inside it)."""

_REPLICATED: ContextVar[bool] = ContextVar("lightning_saliency_replicated", default=False)


def is_sharded(strategy: object) -> bool:
    """Whether ``strategy`` shards the parameters, so that every forward needs every rank (by class name).

    Example:
        >>> from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
        >>> is_sharded(DDPStrategy()), is_sharded(ModelParallelStrategy())
        (False, True)
    """
    return any(cls.__name__ in SHARDED_STRATEGIES for cls in type(strategy).__mro__)


@contextmanager
def replicated_work(trainer: pl.Trainer) -> Iterator[bool]:
    """The monitor's work of one epoch; under a sharded strategy with several ranks, :func:`agreed` broadcasts.

    Yields whether the work is replicated (every rank runs the whole probe).
    """
    replicated = trainer.world_size > 1 and is_sharded(trainer.strategy)
    token = _REPLICATED.set(replicated)
    try:
        yield replicated
    finally:
        _REPLICATED.reset(token)


def agreed(value: Tensor) -> Tensor:
    """Rank 0's ``value`` on every rank inside :func:`replicated_work` (one broadcast), else ``value`` itself.

    For the data-dependent decisions of methods and scores that set how many forwards run (a mask, the groups of
    equal channels): every rank must call it at the same point, with the same shape and dtype.

    Example:
        >>> agreed(torch.tensor([True, False]))  # outside a sharded run: free
        tensor([ True, False])
    """
    if not _REPLICATED.get():
        return value
    wire = value.detach().to(torch.int64 if not value.is_floating_point() else torch.float64).contiguous()
    return _broadcast(wire).to(value.dtype)


def on_any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on some rank inside :func:`replicated_work` (one all-reduce), else ``flag`` itself.

    For decisions that follow a failure (retrying a shared pass method by method): every rank must call it at the
    same point; ``device`` is where the backend takes its tensors (the model's device).

    Example:
        >>> on_any_rank(True, torch.device("cpu"))
        True
    """
    if not _REPLICATED.get():
        return flag
    return bool(_all_reduce_max(torch.tensor([int(flag)], device=device)).item())


def lost_anywhere(labels: list[str]) -> set[str]:
    """Inside :func:`replicated_work`, the methods (labels) that failed on some rank (one collective), else ``labels``.

    Methods whose maps failed on one rank are not scored on any (their scores' forwards would run on some ranks
    only); every rank calls it once, after the maps.

    Example:
        >>> sorted(lost_anywhere(["flaky"]))
        ['flaky']
    """
    if not _REPLICATED.get():
        return set(labels)
    return {label for rank_labels in _all_gather_object(sorted(labels)) for label in rank_labels}


def _all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj`` (the default process group): one collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _all_reduce_max(tensor: Tensor) -> Tensor:
    """The largest of every rank's ``tensor``, into ``tensor`` (the default process group): one collective."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def _broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` into ``tensor`` on every rank (the default process group): one collective."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return tensor


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
