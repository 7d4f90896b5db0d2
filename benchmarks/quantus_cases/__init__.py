"""Benchmark cases of ``bench_quantus.py``, one module per Quantus family.

Each family module exports ``CASES: list[Case]``. A case times our batched torch score and Quantus 0.6 on the
same inputs (:class:`Setup`) and says how far apart their results are. Adding a metric to the benchmark is one
:class:`Case` in its family's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Setup:
    """The shared inputs: a seeded model in eval mode, a probe batch, its targets, maps and region masks."""

    model: nn.Module
    inputs: Tensor  # [B, C, H, W], float32, on the benchmark device
    targets: Tensor  # [B] class indices
    maps: Tensor  # [B, 1, H, W] saliency maps (our Gradient method)
    masks: Tensor  # [B, 1, H, W] bool ground-truth regions (one box per image)

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x, y, a, s`` as Quantus takes them (``a`` and ``s`` with one channel, float32)."""
        return (
            self.inputs.detach().cpu().numpy(),
            self.targets.detach().cpu().numpy(),
            self.maps.detach().cpu().numpy().astype(np.float32),
            self.masks.detach().cpu().numpy().astype(np.float32),
        )


@dataclass(frozen=True)
class Case:
    """One metric: ``ours(setup)`` and ``quantus(setup)`` return per-image scores ``[B]``.

    ``agreement(ours, theirs)`` turns both results into the text of the table's agreement column (for example
    ``"max abs diff 3e-07"``, or a rank correlation where both sides draw random perturbations).
    """

    family: str
    name: str
    ours: Callable[[Setup], Tensor]
    quantus: Callable[[Setup], np.ndarray]
    agreement: Callable[[np.ndarray, np.ndarray], str]


def max_abs_diff(ours: np.ndarray, theirs: np.ndarray) -> str:
    """The default agreement text: the largest absolute difference between the per-image scores."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return f"max abs diff {np.nanmax(np.abs(ours - theirs)):.1e}"


def to_numpy(scores: Tensor | np.ndarray | list[float]) -> np.ndarray:
    """Scores as a float64 array (Quantus returns lists)."""
    if isinstance(scores, Tensor):
        return scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def seeded(fn: Callable[[Setup], Tensor | np.ndarray], seed: int = 0) -> Callable[[Setup], Tensor | np.ndarray]:
    """``fn`` with torch's and numpy's global RNGs seeded first (both sides draw perturbations from them)."""

    def run(setup: Setup) -> Tensor | np.ndarray:
        torch.manual_seed(seed)
        np.random.seed(seed)
        return fn(setup)

    return run
