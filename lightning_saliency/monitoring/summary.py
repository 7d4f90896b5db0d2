"""Phase 4, summarise across epochs: the map history, scores against the previous epoch, alarms, first vs last.

Runs on rank 0, after gathering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_saliency.metrics.registry import SCORES, ScoreContext, compute_scores
from lightning_saliency.monitoring.result import EpochResult, Failures

__all__ = ["HISTORY_SIDE", "Alarm", "History", "alarm_lines", "summary_table"]

HISTORY_SIDE = 64
"""The history keeps each map area-downsampled to at most this many pixels on its longer side."""

History = dict[str, list[tuple[int, Tensor]]]
"""Method label -> ``(epoch, maps [B, 1, h, w])`` of the last logged validation epochs, oldest first."""


@dataclass(frozen=True)
class Alarm:
    """Warn when a per-image score crosses a threshold.

    When, at a logged epoch, the score of some probe images is below ``below`` (or above ``above``), the
    monitor emits a :class:`~lightning_saliency.SaliencyWarning` and writes a ``saliency/alarms`` text entry to
    TensorBoard naming the method, the images (probe positions and dataset indices) and their values.

    Args:
        score: A score name the monitor computes (e.g. ``"energy_pointing_game"``, ``"map_stability"``).
        below: Fire for images whose score is lower than this.
        above: Fire for images whose score is higher than this.
        methods: Method labels to watch; all methods if ``None``.

    Example:
        >>> Alarm("energy_pointing_game", below=0.3)
        Alarm(score='energy_pointing_game', below=0.3, above=None, methods=None)
    """

    score: str
    below: float | None = None
    above: float | None = None
    methods: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"Alarm score must be one of {', '.join(SCORES)}, got {self.score!r}.")
        if self.below is None and self.above is None:
            raise ValueError(f"Alarm({self.score!r}) needs a threshold: give below= or above=.")

    def fired(self, values: Tensor) -> Tensor:
        """Boolean ``[B]``: which images' values cross the threshold (NaN never fires)."""
        hit = torch.zeros_like(values, dtype=torch.bool)
        if self.below is not None:
            hit |= values < self.below
        if self.above is not None:
            hit |= values > self.above
        return hit

    def describe(self) -> str:
        """``"< 0.3"``, ``"> 0.9"`` or both."""
        parts = ([f"< {self.below:g}"] if self.below is not None else []) + (
            [f"> {self.above:g}"] if self.above is not None else []
        )
        return " or ".join(parts)


def shrink(maps: Tensor, side: int = HISTORY_SIDE) -> Tensor:
    """Maps ``[B, 1, H, W]`` (volumes ``[B, 1, D, H, W]``) area-downsampled to at most ``side`` a side (a copy).

    Example:
        >>> shrink(torch.rand(2, 1, 128, 96)).shape
        torch.Size([2, 1, 64, 48])
        >>> shrink(torch.rand(1, 1, 16, 128, 128)).shape
        torch.Size([1, 1, 8, 64, 64])
    """
    sizes = maps.shape[2:]
    scale = min(1.0, side / max(sizes))
    if scale == 1.0:
        return maps.clone()
    return F.interpolate(maps, size=tuple(max(1, round(s * scale)) for s in sizes), mode="area")


def summarise(
    history: History, epoch: int, result: EpochResult, names: Sequence[str], size: int, failures: Failures
) -> None:
    """Add this epoch's maps to ``history`` (at most ``size`` epochs), and the scores against the previous epoch.

    The scores of ``names`` that need ``"previous_maps"`` (in the registry) go to ``result.scores``.
    """
    small = {label: shrink(m) for label, m in result.maps.items()}  # what the history keeps
    wanted = [n for n in names if "previous_maps" in SCORES[n].needs]
    for label, now in small.items():
        previous = [x for e, x in history.get(label, []) if e < epoch]
        if wanted and previous and previous[-1].shape == now.shape:
            with failures.attempt(*[("score", label, n) for n in wanted]):
                scores = compute_scores(ScoreContext(maps=now, previous_maps=previous[-1]), wanted)
                result.scores.setdefault(label, {}).update({n: v.float() for n, v in scores.items()})
        entries = [(e, x) for e, x in history.get(label, []) if e != epoch] + [(epoch, now)]
        history[label] = entries[-size:]


def alarm_lines(
    alarms: Sequence[Alarm],
    labels: Sequence[str],
    scores: dict[str, dict[str, Tensor]],
    epoch: int,
    indices: Sequence[int] | None,
) -> list[str]:
    """One line per (alarm, method) that fired: the score, the method, the images and their values."""
    lines = []
    for alarm in alarms:
        for label in alarm.methods or labels:
            values = scores.get(label, {}).get(alarm.score)
            if values is None:
                continue
            hit = alarm.fired(values).nonzero().flatten().tolist()
            if not hit:
                continue
            where = [f"#{i}" + (f" (index {indices[i]})" if indices else "") for i in hit]
            shown = ", ".join(f"{values[i]:.3f}" for i in hit)
            what = f"epoch {epoch}: {alarm.score} of {label} {alarm.describe()}"
            lines.append(f"{what} on probe images {', '.join(where)}: {shown}")
    return lines


def summary_table(first: dict[str, dict[str, float]], last: dict[str, dict[str, float]]) -> str:
    """A markdown table: each method's score at the first and the last logged epoch.

    Example:
        >>> print(summary_table({"gradcam": {"deletion": 0.5}}, {"gradcam": {"deletion": 0.25}}))
        | method | score | first | last |
        |---|---|---|---|
        | gradcam | deletion | 0.5000 | 0.2500 |
    """
    rows = ["| method | score | first | last |", "|---|---|---|---|"]
    for label, values in last.items():
        for name, value in values.items():
            start = first.get(label, {}).get(name, float("nan"))
            rows.append(f"| {label} | {name} | {start:.4f} | {value:.4f} |")
    return "\n".join(rows)
