"""Faithfulness metrics (modular): deletion/insertion AUC, Average Drop, Increase in Confidence."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._common import _check_batch_size
from lightning_saliency.metrics.functional.perturbation import (
    DEFAULT_STEPS,
    Baseline,
    _average_drop_per_image,
    _check_steps,
    _confidences,
    _curve,
    _increase_per_image,
    curve_auc,
    perturbation_baseline,
)

__all__ = ["AverageDrop", "DeletionAUC", "IncreaseInConfidence", "InsertionAUC"]


class _CurveAUC(_MeanScore):
    _mode = ""
    curve_sum: Tensor

    def __init__(
        self,
        steps: int = DEFAULT_STEPS,
        baseline: Baseline = "zero",
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_steps(steps)
        _check_batch_size(batch_size)
        perturbation_baseline(torch.zeros(1, 1, 2, 2), baseline)  # fails early on a bad name
        self.steps, self.baseline, self.batch_size, self.run = steps, baseline, batch_size, run
        self.add_state("curve_sum", default=torch.zeros(steps + 1), dist_reduce_fx="sum")

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``maps [B, 1, H, W]`` (the model is not kept)."""
        curves = _curve(self._mode, model, inputs, targets, maps, self.steps, self.baseline, self.batch_size, self.run)
        self._accumulate(curve_auc(curves))
        self.curve_sum += curves.sum(0).to(self.curve_sum)

    def mean_curve(self) -> Tensor:
        """The mean curve ``[steps + 1]`` over every image seen by this process (call ``sync()`` first under DDP)."""
        return self.curve_sum / self.count.clamp_min(1)


class DeletionAUC(_CurveAUC):
    """Mean area under the deletion curve (Petsiuk et al. 2018): lower is better.

    See :func:`~lightning_saliency.metrics.functional.deletion_curve` for the curve and
    :func:`~lightning_saliency.metrics.functional.curve_auc` for the area.

    Args:
        steps: Equal steps of the curve (``steps + 1`` points).
        baseline: Substrate of deleted pixels (default ``"zero"``, as RISE).
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = DeletionAUC(steps=4)
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> metric.compute().shape, metric.mean_curve().shape
        (torch.Size([]), torch.Size([5]))
    """

    higher_is_better: bool = False
    _mode = "deletion"


class InsertionAUC(_CurveAUC):
    """Mean area under the insertion curve (Petsiuk et al. 2018): higher is better.

    See :func:`~lightning_saliency.metrics.functional.insertion_curve`.

    Args:
        steps: Equal steps of the curve (``steps + 1`` points).
        baseline: Substrate insertion starts from (default ``"blur"``, as RISE).
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = InsertionAUC(steps=4)
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True
    _mode = "insertion"

    def __init__(
        self,
        steps: int = DEFAULT_STEPS,
        baseline: Baseline = "blur",
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(steps=steps, baseline=baseline, batch_size=batch_size, run=run, **kwargs)


class _ConfidenceScore(_MeanScore):
    def __init__(self, batch_size: int = 64, run: Run | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_batch_size(batch_size)
        self.batch_size, self.run = batch_size, run

    def _per_image(self, y: Tensor, o: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``maps [B, 1, H, W]`` in [0, 1]."""
        self._accumulate(self._per_image(*_confidences(model, inputs, targets, maps, self.batch_size, self.run)))


class AverageDrop(_ConfidenceScore):
    """Average Drop (Chattopadhyay et al. 2018): ``mean(max(0, Y - O) / Y)`` in [0, 1], lower is better.

    See :func:`~lightning_saliency.metrics.functional.average_drop`.

    Args:
        batch_size: Most images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = AverageDrop()
        >>> metric.update(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]), torch.ones(3, 1, 2, 2))
        >>> metric.compute()
        tensor(0.)
    """

    higher_is_better: bool = False

    def _per_image(self, y: Tensor, o: Tensor) -> Tensor:
        return _average_drop_per_image(y, o)


class IncreaseInConfidence(_ConfidenceScore):
    """Increase in Confidence (Chattopadhyay et al. 2018): ``mean(1[Y < O])`` in [0, 1], higher is better.

    See :func:`~lightning_saliency.metrics.functional.increase_in_confidence`.

    Args:
        batch_size: Most images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = IncreaseInConfidence()
        >>> metric.update(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 1]), torch.ones(3, 1, 2, 2))
        >>> metric.compute()
        tensor(0.)
    """

    higher_is_better: bool = True

    def _per_image(self, y: Tensor, o: Tensor) -> Tensor:
        return _increase_per_image(y, o)
