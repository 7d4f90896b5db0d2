"""Quantus randomisation metrics against ours (see ``bench_quantus.py``).

Quantus' ``explain_func`` (and ``quantus.explain``, which Smooth MPRT calls for its noisy samples) is a function
calling our ``Gradient``; its numpy draws (Random Logit's class, Smooth MPRT's noise) are replaced by ours for the
call, and both sides re-initialise the layers with the same seeds, so the agreement column is a difference.
Smooth MPRT runs ``SMOOTH_SAMPLES`` noisy samples instead of Quantus' 50 (both sides scale linearly with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import quantus
import torch

from lightning_saliency.methods import Gradient
from lightning_saliency.metrics.functional import (
    efficient_mprt,
    random_logit,
    random_off_classes,
    smooth_mprt,
    smooth_mprt_noise,
)
from quantus_cases import Case, Setup
from quantus_cases.robustness import explain_func, relative_diff, run_quantus

SMOOTH_SAMPLES = 5
SEED = 0


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _num_classes(s: Setup) -> int:
    with torch.no_grad():
        return int(s.model(s.inputs[:1]).shape[1])


def quantus_random_logit(s: Setup) -> np.ndarray:
    off = random_off_classes(s.targets, _num_classes(s), SEED)
    k = torch.where(off > s.targets, off - 1, off).cpu().numpy()  # the index among the classes without the target
    with patched(np.random, "randint", lambda *args, **kwargs: k):
        return run_quantus(quantus.RandomLogit(num_classes=_num_classes(s), disable_warnings=True), s)


def quantus_smooth_mprt(s: Setup) -> np.ndarray:
    noise = smooth_mprt_noise(tuple(s.inputs.shape[1:]), SMOOTH_SAMPLES, SEED).numpy()
    calls = [0]

    def randn(*shape: int) -> np.ndarray:
        draw = np.broadcast_to(noise[calls[0] % (SMOOTH_SAMPLES - 1)][None], shape).astype(np.float64)
        calls[0] += 1
        return draw

    def explain(model: Any, inputs: np.ndarray, targets: np.ndarray, **kwargs: Any) -> np.ndarray:
        return explain_func(model, inputs, targets)

    metric = quantus.SmoothMPRT(
        nr_samples=SMOOTH_SAMPLES, seed=SEED, return_last_correlation=True, disable_warnings=True
    )
    with patched(np.random, "randn", randn), patched(quantus, "explain", explain):
        return run_quantus(metric, s)


CASES: list[Case] = [
    Case(
        "randomisation",
        "RandomLogit",
        lambda s: random_logit(Gradient(), s.model, s.inputs, s.targets, seed=SEED),
        quantus_random_logit,
        relative_diff,
    ),
    Case(
        "randomisation",
        f"SmoothMPRT ({SMOOTH_SAMPLES} samples, last layer)",
        lambda s: smooth_mprt(s.model, s.inputs, s.targets, Gradient(), n_samples=SMOOTH_SAMPLES, seed=SEED)[-1],
        quantus_smooth_mprt,
        relative_diff,
    ),
    Case(
        "randomisation",
        "EfficientMPRT",
        lambda s: efficient_mprt(s.model, s.inputs, s.targets, Gradient(), seed=SEED),
        lambda s: run_quantus(quantus.EfficientMPRT(seed=SEED, disable_warnings=True), s),
        relative_diff,
    ),
]
