"""Quantus faithfulness metrics against ours (see ``bench_quantus.py``).

Quantus' defaults of one feature per step mean ``C * H * W`` forwards per image (12288 at 64 px): the step-wise
cases use 256 features per step (48 steps) on both sides. Quantus gets our random draws (its
``np.random.choice``/``np.random.uniform`` replaced while it runs) and a stable ``np.argsort`` (the attributions,
broadcast over channels, tie every pixel's channels), so the agreement column compares numbers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import quantus
import torch

from lightning_saliency.metrics import functional as F
from lightning_saliency.metrics.functional.faithfulness import _fill, _generator
from quantus_cases import Case, Setup, max_abs_diff

STEP = 256
RUNS, SUBSET = 100, 224
SAMPLES = 10


@contextlib.contextmanager
def _same_draws(choice: list[np.ndarray] | None = None, uniform: list[float] | None = None) -> Iterator[None]:
    """Quantus' numpy draws replaced by ours (queued values, one per call), and a stable ``np.argsort``."""
    saved = np.argsort, np.random.choice, np.random.uniform
    queued_choice, queued_uniform = list(choice or []), list(uniform or [])

    def argsort(a, axis=-1, kind=None, order=None):
        return saved[0](a, axis=axis, kind="stable")

    def draw_choice(n, size, replace=True):
        return queued_choice.pop(0)

    def draw_uniform(low=0.0, high=1.0, size=None):
        return np.full(size, queued_uniform.pop(0)) if queued_uniform else np.zeros(size)

    np.argsort, np.random.choice, np.random.uniform = argsort, draw_choice, draw_uniform
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        np.argsort, np.random.choice, np.random.uniform = saved


def _quantus(metric, setup: Setup, **call) -> np.ndarray:
    x, y, a, _ = setup.numpy()
    out = metric(model=setup.model, x_batch=x, y_batch=y, a_batch=a, device=str(setup.inputs.device), **call)
    return np.asarray(out, dtype=np.float64)


def _features(setup: Setup) -> int:
    return setup.inputs[0].numel()


def _correlation_quantus(setup: Setup) -> np.ndarray:
    subsets = F.faithfulness_correlation_subsets(_features(setup), SUBSET, RUNS)
    b = setup.inputs.shape[0]
    with _same_draws(choice=[s.numpy() for s in subsets for _ in range(b)]):
        metric = quantus.FaithfulnessCorrelation(
            nr_runs=RUNS, subset_size=SUBSET, return_aggregate=False, disable_warnings=True
        )
        return _quantus(metric, setup)


def _monotonicity_correlation_quantus(setup: Setup) -> np.ndarray:
    calls = _features(setup) // STEP * SAMPLES
    draws = _fill(setup.inputs.flatten(1), "uniform", calls, (0.0, 1.0), _generator(0))[0].tolist()
    with _same_draws(uniform=draws):
        metric = quantus.MonotonicityCorrelation(features_in_step=STEP, nr_samples=SAMPLES, disable_warnings=True)
        return _quantus(metric, setup)


def _monotonicity_quantus(setup: Setup) -> np.ndarray:
    flat = setup.inputs.flatten(1).cpu().numpy()

    def insert(arr, indices, **kwargs):  # the input's features inserted (Quantus' default never changes the input)
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat[rows, indices]
        return out

    with _same_draws():
        metric = quantus.Monotonicity(features_in_step=STEP, perturb_func=insert, disable_warnings=True)
        return _quantus(metric, setup)


def _stepwise_quantus(cls: type, **kwargs) -> Callable[[Setup], np.ndarray]:
    def run(setup: Setup) -> np.ndarray:
        with _same_draws():
            return _quantus(cls(features_in_step=STEP, disable_warnings=True, **kwargs), setup)

    return run


def _pixel_flipping_ours(setup: Setup) -> torch.Tensor:
    return F.pixel_flipping_curve(setup.model, setup.inputs, setup.targets, setup.maps, features_in_step=STEP).flatten()


def _pixel_flipping_quantus(setup: Setup) -> np.ndarray:
    return _stepwise_quantus(quantus.PixelFlipping)(setup).reshape(-1)


CASES: list[Case] = [
    Case(
        "faithfulness",
        f"FaithfulnessCorrelation ({RUNS} runs of {SUBSET})",
        lambda s: F.faithfulness_correlation(s.model, s.inputs, s.targets, s.maps, nr_runs=RUNS, subset_size=SUBSET),
        _correlation_quantus,
        max_abs_diff,
    ),
    Case(
        "faithfulness",
        f"FaithfulnessEstimate ({STEP} per step)",
        lambda s: F.faithfulness_estimate(s.model, s.inputs, s.targets, s.maps, features_in_step=STEP),
        _stepwise_quantus(quantus.FaithfulnessEstimate),
        max_abs_diff,
    ),
    Case(
        "faithfulness",
        f"Monotonicity ({STEP} per step, inserting)",
        lambda s: F.monotonicity(s.model, s.inputs, s.targets, s.maps, features_in_step=STEP),
        _monotonicity_quantus,
        max_abs_diff,
    ),
    Case(
        "faithfulness",
        f"MonotonicityCorrelation ({STEP} per step, {SAMPLES} samples)",
        lambda s: F.monotonicity_correlation(
            s.model, s.inputs, s.targets, s.maps, features_in_step=STEP, nr_samples=SAMPLES
        ),
        _monotonicity_correlation_quantus,
        max_abs_diff,
    ),
    Case(
        "faithfulness",
        f"PixelFlipping ({STEP} per step, curves)",
        _pixel_flipping_ours,
        _pixel_flipping_quantus,
        max_abs_diff,
    ),
]
