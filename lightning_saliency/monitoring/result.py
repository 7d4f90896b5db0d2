"""What one logged epoch produced (:class:`EpochResult`), and the failures of its methods and scores."""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["EpochResult", "FailureKey", "Failures", "drop_failed"]


@dataclass
class EpochResult:
    """What one logged epoch produced on a rank (its share of the probe), or on rank 0 after gathering."""

    maps: dict[str, Tensor] = field(default_factory=dict)  # label -> [B,1,H,W]
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # label -> score -> [B] per image
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # "deletion" -> label -> [B, steps+1]
    times: dict[str, float] = field(default_factory=dict)  # this rank's seconds


FailureKey = tuple[str, str, str | None]
"""What failed: ``("method", label, None)`` or ``("score", label, score name)``."""


class Failures:
    """The failures of methods and scores on this rank: ``key -> (headline, traceback summary)``.

    With ``isolate=False`` (``strict=True``, or :meth:`SaliencyMonitor.compute`) nothing is caught.
    """

    def __init__(self, isolate: bool) -> None:
        self.isolate = isolate
        self.failed: dict[FailureKey, tuple[str, str]] = {}

    @contextmanager
    def attempt(self, *keys: FailureKey) -> Iterator[None]:
        """Run the block; if it raises (and failures are isolated), record the error under every key."""
        try:
            yield
        except Exception as exc:
            if not self.isolate:
                raise
            headline = f"{type(exc).__name__}: {exc}"
            summary = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-4))
            for key in keys:
                self.failed[key] = (headline, summary)


def describe(key: FailureKey) -> str:
    """``method 'gradcam'`` or ``score 'insertion' of method 'gradcam'``."""
    kind, label, name = key
    return f"method {label!r}" if kind == "method" else f"score {name!r} of method {label!r}"


def drop_failed(result: EpochResult, failed: dict[FailureKey, Any]) -> EpochResult:
    """``result`` without what failed on any rank, so every rank gathers the same methods and scores."""
    lost = {label for kind, label, _ in failed if kind == "method"}
    gone = {(label, name) for kind, label, name in failed if kind == "score"}
    return dataclasses.replace(
        result,
        maps={lb: m for lb, m in result.maps.items() if lb not in lost},
        scores={
            lb: {n: v for n, v in values.items() if (lb, n) not in gone}
            for lb, values in result.scores.items()
            if lb not in lost
        },
        curves={
            mode: {lb: c for lb, c in by_label.items() if lb not in lost and (lb, mode) not in gone}
            for mode, by_label in result.curves.items()
        },
    )
