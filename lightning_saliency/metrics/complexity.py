"""Complexity metrics (modular): Quantus' sparseness (Gini), complexity (entropy) and effective complexity."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._quantus import _check_flag
from lightning_saliency.metrics.functional.complexity import complexity, effective_complexity, sparseness

__all__ = ["Complexity", "EffectiveComplexity", "Sparseness"]


class _DefinedMeanScore(_MeanScore):
    """A mean over the images whose score is defined: NaN (an empty region, an all-zero map) is left out."""

    def _accumulate(self, values: Tensor) -> None:
        super()._accumulate(values[~values.isnan()])


class _Preprocessed(_DefinedMeanScore):
    """A score of the maps after Quantus' preprocessing: ``absolute`` (``None``: Quantus' default) and ``normalise``."""

    quantus_absolute: ClassVar[bool] = True
    """Quantus' default ``absolute`` of the metric."""

    def __init__(self, absolute: bool | None = None, normalise: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.absolute = _check_flag(self.quantus_absolute if absolute is None else absolute, "absolute")
        self.normalise = _check_flag(normalise, "normalise")


class Sparseness(_Preprocessed):
    """Mean Gini index of the maps (Chalasani et al. 2020; Quantus' ``Sparseness``): higher is sparser.

    See :func:`~lightning_saliency.metrics.functional.sparseness`.

    Args:
        absolute: Take magnitudes (``None``: Quantus' default ``True``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> maps = torch.zeros(2, 1, 2, 2)
        >>> maps[0, 0, 0, 0] = 1.0
        >>> metric = Sparseness()
        >>> metric.update(maps)
        >>> metric.compute()
        tensor(0.3750)
    """

    higher_is_better: bool = True

    def update(self, maps: Tensor) -> None:
        """Score a batch of ``maps [B, ...]``."""
        self._accumulate(sparseness(maps, absolute=self.absolute, normalise=self.normalise))


class Complexity(_Preprocessed):
    """Mean entropy of the maps' distribution of mass (Bhatt et al. 2020; Quantus' ``Complexity``): lower is simpler.

    See :func:`~lightning_saliency.metrics.functional.complexity`; all-zero maps (no distribution) are left out.

    Args:
        absolute: Take magnitudes (``None``: Quantus' default ``True``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = Complexity()
        >>> metric.update(torch.ones(2, 1, 2, 2))
        >>> metric.compute()  # log 4
        tensor(1.3863)
    """

    higher_is_better: bool = False

    def update(self, maps: Tensor) -> None:
        """Score a batch of ``maps [B, ...]``."""
        self._accumulate(complexity(maps, absolute=self.absolute, normalise=self.normalise))


class EffectiveComplexity(_Preprocessed):
    """Mean number of values above ``eps`` (Nguyen & Martinez 2020; Quantus' ``EffectiveComplexity``): lower is simpler.

    See :func:`~lightning_saliency.metrics.functional.effective_complexity`.

    Args:
        eps: The threshold, a fraction of each map's largest magnitude (``1e-5``).
        absolute: Take magnitudes (``None``: Quantus' default ``True``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = EffectiveComplexity()
        >>> metric.update(torch.tensor([[[[0.0, 0.5], [1.0, 1e-6]]]]))
        >>> metric.compute()
        tensor(2.)
    """

    higher_is_better: bool = False

    def __init__(self, eps: float = 1e-5, absolute: bool | None = None, normalise: bool = True, **kwargs: Any) -> None:
        super().__init__(absolute, normalise, **kwargs)
        effective_complexity(Tensor([[1.0]]), eps=eps)  # checks eps
        self.eps = eps

    def update(self, maps: Tensor) -> None:
        """Score a batch of ``maps [B, ...]``."""
        self._accumulate(effective_complexity(maps, eps=self.eps, absolute=self.absolute, normalise=self.normalise))
