"""Randomisation checks (modular): Quantus' Random Logit, Smooth MPRT and Efficient MPRT."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._quantus import Explainer
from lightning_saliency.metrics.functional.randomisation import efficient_mprt, random_logit, smooth_mprt
from lightning_saliency.metrics.robustness import _ExplanationScore, _split

__all__ = ["EfficientMPRT", "RandomLogit", "SmoothMPRT"]


class RandomLogit(_ExplanationScore):
    """Mean Random Logit SSIM (Quantus' ``RandomLogit``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.random_logit` for the keyword arguments.

    Args:
        explain: A saliency method instance or ``f(model, inputs, classes)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = RandomLogit(lambda m, x, t: x)  # blind to the class: SSIM 1
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(1.)
    """

    function = staticmethod(random_logit)


class _RandomisedModelScore(_MeanScore):
    def __init__(self, **kwargs: Any) -> None:
        options, metric_kwargs = _split(self._function(), kwargs)
        super().__init__(**metric_kwargs)
        self.options = options

    def _function(self) -> Any:
        raise NotImplementedError


class SmoothMPRT(_RandomisedModelScore):
    """Mean Smooth MPRT correlation (Quantus' ``SmoothMPRT``), averaged over the randomised layers: lower is better.

    Each image's score is the mean over layers of :func:`~lightning_saliency.metrics.functional.smooth_mprt`'s rows
    (Quantus' ``return_average_correlation``, without its ``"original"`` entry), or the last row (every layer
    random: ``return_last_correlation``) with ``reduction="last"``.

    Args:
        reduction: ``"mean"`` over the layers or ``"last"``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> metric = SmoothMPRT(n_samples=2)
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient())
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = False

    def __init__(self, reduction: str = "mean", **kwargs: Any) -> None:
        if reduction not in ("mean", "last"):
            raise ValueError(f"reduction must be 'mean' or 'last', got {reduction!r}.")
        super().__init__(**kwargs)
        self.reduction = reduction

    def _function(self) -> Any:
        return smooth_mprt

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, method: Explainer | str) -> None:
        """Score a batch with ``method``."""
        rho = smooth_mprt(model, inputs, targets, method, **self.options)  # [L,B]
        self._accumulate(rho.mean(0) if self.reduction == "mean" else rho[-1])


class EfficientMPRT(_RandomisedModelScore):
    """Mean Efficient MPRT (Quantus' ``EfficientMPRT``): relative rise in explanation entropy; higher is better.

    See :func:`~lightning_saliency.metrics.functional.efficient_mprt` for the keyword arguments.

    Args:
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> metric = EfficientMPRT()
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient())
        >>> metric.compute().shape
        torch.Size([])
    """

    higher_is_better: bool = True

    def _function(self) -> Any:
        return efficient_mprt

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, method: Explainer | str) -> None:
        """Score a batch with ``method``."""
        self._accumulate(efficient_mprt(model, inputs, targets, method, **self.options))
