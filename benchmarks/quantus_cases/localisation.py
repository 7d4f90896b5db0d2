"""Quantus localisation metrics against ours (see ``bench_quantus.py``).

Focus reads the probe's maps as mosaics: each ``H x W`` map is taken as four quadrants, two of them (a fixed
pattern per image) the "target class" ones; both sides score the same maps with the same quadrants.
"""

from __future__ import annotations

import numpy as np
import quantus
import torch

from lightning_saliency.metrics.functional import focus, localisation_auc, relevance_rank_accuracy, top_k_intersection
from quantus_cases import Case, Setup, max_abs_diff

PATTERNS = [(1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1), (1, 0, 0, 1), (0, 1, 1, 0)]


def _quadrants(setup: Setup) -> np.ndarray:
    return np.array([PATTERNS[i % len(PATTERNS)] for i in range(len(setup.inputs))])


def _theirs(metric: quantus.Metric, setup: Setup, **call: object) -> np.ndarray:
    x, y, a, s = setup.numpy()
    return np.asarray(metric(model=setup.model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, device="cpu", **call))


CASES: list[Case] = [
    Case(
        "localisation",
        "TopKIntersection (k=1000)",
        lambda s: top_k_intersection(s.maps, masks=s.masks, k=1000),
        lambda s: _theirs(quantus.TopKIntersection(k=1000, disable_warnings=True), s),
        max_abs_diff,
    ),
    Case(
        "localisation",
        "RelevanceRankAccuracy",
        lambda s: relevance_rank_accuracy(s.maps, masks=s.masks),
        lambda s: _theirs(quantus.RelevanceRankAccuracy(disable_warnings=True), s),
        max_abs_diff,
    ),
    Case(
        "localisation",
        "AUC",
        lambda s: localisation_auc(s.maps, masks=s.masks),
        lambda s: _theirs(quantus.AUC(disable_warnings=True), s),
        max_abs_diff,
    ),
    Case(
        "localisation",
        "Focus (maps as mosaics)",
        lambda s: focus(s.maps, torch.as_tensor(_quadrants(s), device=s.maps.device)),
        lambda s: _theirs(quantus.Focus(disable_warnings=True), s, custom_batch=_quadrants(s)),
        max_abs_diff,
    ),
]
