"""Quantus robustness metrics against ours (see ``bench_quantus.py``).

Quantus' ``explain_func`` calls our ``Gradient`` (the same maps as ours; ``[B, 1, H, W]`` in [0, 1], so Quantus'
batch-wide ``normalise_by_max`` leaves them as they are), and its ``perturb_func`` replays our seeded draws, so
both sides compute the same numbers: the agreement column is a difference, not a correlation. ``N_SAMPLES``
perturbations per image instead of Quantus' 200 keep the run short (both sides scale linearly with it). Ours
explain ``batch_size=64`` (image, perturbation) pairs per pass, Quantus one perturbation of the batch per pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import quantus
import torch
from torch import Tensor

from lightning_saliency.methods import Gradient
from lightning_saliency.metrics.functional import (
    avg_sensitivity,
    continuity,
    local_lipschitz_estimate,
    relative_stability,
)
from lightning_saliency.metrics.functional._perturbed import _uniform_perturbations
from lightning_saliency.metrics.functional.robustness import infidelity_perturbations, sensitivity_perturbations
from lightning_saliency.metrics.functional.stability import Of
from quantus_cases import Case, Setup

N_SAMPLES = 10
SEED = 0


def explain_func(model: Any, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Quantus' explanation: our ``Gradient`` on the model Quantus hands over."""
    x = torch.as_tensor(inputs).float().to(next(model.parameters()).device)
    return Gradient()(model, x, torch.as_tensor(targets).to(x.device)).detach().cpu().numpy()


class Replay:
    """A Quantus ``perturb_func`` that returns ``arr + deltas[k]`` at its ``k``-th call (our draws, float32)."""

    def __init__(self, deltas: Tensor) -> None:
        self.deltas, self.calls = deltas.cpu().numpy(), 0

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kwargs: Any) -> np.ndarray:
        delta = self.deltas[self.calls % len(self.deltas)].reshape(1, -1)
        self.calls += 1
        return (arr + delta).astype(np.float32)


def run_quantus(metric: Any, s: Setup) -> np.ndarray:
    x, y, _, _ = s.numpy()
    device = str(s.inputs.device)
    scores = metric(model=s.model, x_batch=x, y_batch=y, explain_func=explain_func, device=device, batch_size=len(x))
    return np.asarray(scores, dtype=np.float64)


def relative_diff(ours: np.ndarray, theirs: np.ndarray) -> str:
    """The largest difference relative to Quantus' largest score, over the images Quantus scores (not NaN)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    finite = np.isfinite(theirs)
    if not finite.any():
        return f"Quantus NaN for all {len(theirs)} images (a perturbation changed the prediction)"
    text = f"max rel diff {np.max(np.abs(ours[finite] - theirs[finite])) / np.max(np.abs(theirs[finite])):.1e}"
    if not finite.all():
        text += f" (Quantus NaN for {int((~finite).sum())} of {len(theirs)}: changed predictions)"
    return text


def _shape(s: Setup) -> tuple[int, ...]:
    return tuple(s.inputs.shape[1:])


def _stability(of: Of) -> tuple[Callable[[Setup], Tensor], Callable[[Setup], np.ndarray]]:
    classes = {
        "input": quantus.RelativeInputStability,
        "output": quantus.RelativeOutputStability,
        "representation": quantus.RelativeRepresentationStability,
    }

    def ours(s: Setup) -> Tensor:
        return relative_stability(Gradient(), s.model, s.inputs, s.targets, of=of, n_samples=N_SAMPLES, seed=SEED)

    def theirs(s: Setup) -> np.ndarray:
        deltas = _uniform_perturbations(_shape(s), N_SAMPLES, 0.02, 0.2, SEED)
        metric = classes[of](nr_samples=N_SAMPLES, perturb_func=Replay(deltas), disable_warnings=True)
        return run_quantus(metric, s)

    return ours, theirs


def _replayed(name: str, ours: Callable[..., Tensor], theirs: Any, draws: Callable[[Setup], Tensor]) -> Case:
    """A case whose Quantus side replays our ``draws`` through its ``perturb_func``."""
    return Case(
        "robustness",
        f"{name} ({N_SAMPLES} samples)",
        lambda s: ours(Gradient(), s.model, s.inputs, s.targets, n_samples=N_SAMPLES, seed=SEED),
        lambda s: run_quantus(theirs(nr_samples=N_SAMPLES, perturb_func=Replay(draws(s)), disable_warnings=True), s),
        relative_diff,
    )


CASES: list[Case] = [
    _replayed(
        "LocalLipschitzEstimate",
        local_lipschitz_estimate,
        quantus.LocalLipschitzEstimate,
        lambda s: infidelity_perturbations(_shape(s), N_SAMPLES, 0.1, SEED),  # N(0, 0.1^2)
    ),
    _replayed(
        "AvgSensitivity",
        avg_sensitivity,
        quantus.AvgSensitivity,
        lambda s: sensitivity_perturbations(_shape(s), N_SAMPLES, 0.2, SEED),  # U(-0.2, 0.2)
    ),
    Case(
        "robustness",
        "Continuity (28 shifts)",
        lambda s: continuity(Gradient(), s.model, s.inputs, s.targets),
        lambda s: run_quantus(quantus.Continuity(disable_warnings=True), s),
        relative_diff,
    ),
    *(
        Case("robustness", f"Relative{of.title()}Stability ({N_SAMPLES} samples)", *_stability(of), relative_diff)
        for of in ("input", "output", "representation")
    ),
]
