"""Quantus complexity metrics against ours (see ``bench_quantus.py``)."""

from __future__ import annotations

import numpy as np
import quantus

from lightning_saliency.metrics.functional import complexity, effective_complexity, sparseness
from quantus_cases import Case, Setup, max_abs_diff


def _theirs(metric: quantus.Metric, setup: Setup) -> np.ndarray:
    x, y, a, _ = setup.numpy()
    return np.asarray(metric(model=setup.model, x_batch=x, y_batch=y, a_batch=a, device="cpu"))


CASES: list[Case] = [
    Case(
        "complexity",
        "Sparseness",
        lambda s: sparseness(s.maps),
        lambda s: _theirs(quantus.Sparseness(disable_warnings=True), s),
        max_abs_diff,
    ),
    Case(
        "complexity",
        "Complexity",
        lambda s: complexity(s.maps),
        lambda s: _theirs(quantus.Complexity(disable_warnings=True), s),
        max_abs_diff,
    ),
    Case(
        "complexity",
        "EffectiveComplexity",
        lambda s: effective_complexity(s.maps),
        lambda s: _theirs(quantus.EffectiveComplexity(disable_warnings=True), s),
        max_abs_diff,
    ),
]
