"""Quantus' faithfulness metrics (modular), each the mean of its per-image functional.

Faithfulness Correlation and Estimate, Monotonicity (Arya, Nguyen), Pixel-Flipping; the functionals, with Quantus
0.6's defaults, are in :mod:`lightning_saliency.metrics.functional.faithfulness`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional.faithfulness import (
    faithfulness_correlation,
    faithfulness_estimate,
    monotonicity,
    monotonicity_correlation,
    pixel_flipping,
)
from lightning_saliency.targets import TargetLike

__all__ = [
    "FaithfulnessCorrelation",
    "FaithfulnessEstimate",
    "Monotonicity",
    "MonotonicityCorrelation",
    "PixelFlipping",
]


class _FaithfulnessMean(_MeanScore):
    """The mean of ``function(model, inputs, targets, attributions, **options)`` over every image seen.

    ``options`` are the functional's keyword arguments (an unknown name is refused here; values are checked by the
    functional at the first update, naming the argument); the others go to :class:`torchmetrics.Metric`.
    """

    function: Callable[..., Tensor]

    def __init__(self, **options: Any) -> None:
        kwargs = {k: options.pop(k) for k in list(options) if k in _METRIC_KWARGS}
        super().__init__(**kwargs)
        accepted = [
            p.name for p in inspect.signature(type(self).function).parameters.values() if p.kind is p.KEYWORD_ONLY
        ]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {unknown}; expected some of {accepted}.")
        self.options = options

    def update(self, model: nn.Module, inputs: Tensor, targets: TargetLike, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets`` (``[B]`` classes), ``attributions [B, 1 or C, H, W]``."""
        self._accumulate(type(self).function(model, inputs, targets, attributions, **self.options))


class FaithfulnessCorrelation(_FaithfulnessMean):
    """Mean Faithfulness Correlation (Bhatt et al. 2020; ``quantus.FaithfulnessCorrelation``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.faithfulness_correlation` for the options (``nr_runs=100``,
    ``subset_size=224``, ``perturb_baseline="black"``, logits).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = FaithfulnessCorrelation(nr_runs=10, subset_size=4)
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True
    function = staticmethod(faithfulness_correlation)


class FaithfulnessEstimate(_FaithfulnessMean):
    """Mean Faithfulness Estimate (Alvarez-Melis & Jaakkola 2018; ``quantus.FaithfulnessEstimate``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.faithfulness_estimate` (``features_in_step=1``, ``"black"``).

    Example:
        >>> import torch
        >>> metric = FaithfulnessEstimate(features_in_step=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]),
        ...               torch.rand(2, 1, 4, 4))
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True
    function = staticmethod(faithfulness_estimate)


class Monotonicity(_FaithfulnessMean):
    """Fraction of monotonic explanations (Arya et al. 2019; ``quantus.Monotonicity``'s defaults): higher is better.

    See :func:`~lightning_saliency.metrics.functional.monotonicity` (and how it differs from Quantus 0.6's bug).

    Example:
        >>> import torch
        >>> metric = Monotonicity(features_in_step=8)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]),
        ...               torch.rand(2, 1, 4, 4))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True
    function = staticmethod(monotonicity)


class MonotonicityCorrelation(_FaithfulnessMean):
    """Mean Monotonicity Correlation (Nguyen & Martinez 2020; ``quantus.MonotonicityCorrelation``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.monotonicity_correlation` (``nr_samples=100``, ``"uniform"``).

    Example:
        >>> import torch
        >>> metric = MonotonicityCorrelation(nr_samples=2, features_in_step=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]),
        ...               torch.rand(2, 1, 4, 4))
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True
    function = staticmethod(monotonicity_correlation)


class PixelFlipping(_FaithfulnessMean):
    """Mean area under the Pixel-Flipping curve (Quantus' ``return_auc_per_sample=True``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.pixel_flipping` (``np.trapz`` with ``dx=1``: it grows with
    the steps).

    Example:
        >>> import torch
        >>> metric = PixelFlipping(features_in_step=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]),
        ...               torch.rand(2, 1, 4, 4))
        >>> bool(0 <= metric.compute() <= 3)
        True
    """

    higher_is_better: bool = False
    function = staticmethod(pixel_flipping)


_METRIC_KWARGS = frozenset(
    {
        "compute_on_cpu",
        "dist_sync_on_step",
        "process_group",
        "dist_sync_fn",
        "distributed_available_fn",
        "sync_on_compute",
        "compute_with_cache",
    }
)
"""Keyword arguments of :class:`torchmetrics.Metric` (the others are the functional's options)."""
