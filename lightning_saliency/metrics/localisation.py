"""Localisation metrics (modular): pointing games, localisation IoU, and Quantus' top-k, rank accuracy, AUC, Focus."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.complexity import _Preprocessed
from lightning_saliency.metrics.functional._quantus import _check_flag
from lightning_saliency.metrics.functional.localisation import (
    energy_pointing_game,
    focus,
    localisation_auc,
    localisation_iou,
    pointing_game,
    relevance_rank_accuracy,
    top_k_intersection,
)

__all__ = [
    "EnergyPointingGame",
    "Focus",
    "LocalisationAUC",
    "LocalisationIoU",
    "PointingGame",
    "RelevanceRankAccuracy",
    "TopKIntersection",
]


class PointingGame(_MeanScore):
    """Pointing-game hit rate (Zhang et al. 2016), higher is better.

    See :func:`~lightning_saliency.metrics.functional.pointing_game` (box convention, ties, constant maps).

    Args:
        tolerance: Radius in pixels around the maximum (Zhang et al. use 15 px; default 0).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> maps = torch.zeros(2, 1, 4, 4)
        >>> maps[:, 0, 0, 0] = 1.0
        >>> metric = PointingGame()
        >>> metric.update(maps, boxes=torch.tensor([[0, 0, 2, 2], [2, 2, 4, 4]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better: bool = True

    def __init__(self, tolerance: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
            raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance!r}.")
        self.tolerance = tolerance

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(pointing_game(maps, boxes, masks, tolerance=self.tolerance))


class EnergyPointingGame(_MeanScore):
    """Mean energy-based pointing game (Score-CAM): share of map mass in the region, higher is better.

    See :func:`~lightning_saliency.metrics.functional.energy_pointing_game`.

    Args:
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = EnergyPointingGame()
        >>> metric.update(torch.tensor([[[1.0, 3.0]]]), boxes=torch.tensor([[1, 0, 2, 1]]))
        >>> metric.compute()
        tensor(0.7500)
    """

    higher_is_better: bool = True

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(energy_pointing_game(maps, boxes, masks))


class LocalisationIoU(_MeanScore):
    """Mean weakly-supervised localisation IoU (Simonyan et al. 2014), higher is better.

    See :func:`~lightning_saliency.metrics.functional.localisation_iou` (Otsu threshold, largest component).

    Args:
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 2:6, 1:5] = 1.0
        >>> metric = LocalisationIoU()
        >>> metric.update(maps, boxes=torch.tensor([[1.0, 2.0, 5.0, 6.0]]))
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(localisation_iou(maps, boxes, masks))


class TopKIntersection(_Preprocessed):
    """Mean share of the ``k`` most relevant pixels in the region (Quantus' ``TopKIntersection``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.top_k_intersection`; images with an empty region are left out.

    Args:
        k: Pixels taken, fewer than a map has (1000).
        concept_influence: Divide by the region's share of the image.
        absolute: Rank magnitudes (``None``: Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = TopKIntersection(k=4)
        >>> metric.update(torch.arange(16.0).view(1, 1, 4, 4), boxes=torch.tensor([[0, 2, 2, 4]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    higher_is_better: bool = True
    quantus_absolute = False

    def __init__(
        self,
        k: int = 1000,
        concept_influence: bool = False,
        absolute: bool | None = None,
        normalise: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(absolute, normalise, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1 (pixels taken), got {k!r}.")
        self.k, self.concept_influence = k, _check_flag(concept_influence, "concept_influence")

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(
            top_k_intersection(
                maps,
                boxes,
                masks,
                k=self.k,
                concept_influence=self.concept_influence,
                absolute=self.absolute,
                normalise=self.normalise,
            )
        )


class RelevanceRankAccuracy(_Preprocessed):
    """Mean share of the ``|region|`` top pixels in the region (Quantus' ``RelevanceRankAccuracy``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.relevance_rank_accuracy`; empty regions are left out.

    Args:
        absolute: Rank magnitudes (``None``: Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = RelevanceRankAccuracy()
        >>> metric.update(torch.arange(16.0).view(1, 1, 4, 4), boxes=torch.tensor([[0, 2, 4, 4]]))
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True
    quantus_absolute = False

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(relevance_rank_accuracy(maps, boxes, masks, absolute=self.absolute, normalise=self.normalise))


class LocalisationAUC(_Preprocessed):
    """Mean ROC AUC of the maps as detectors of the region's pixels (Quantus' ``AUC``), higher is better.

    See :func:`~lightning_saliency.metrics.functional.localisation_auc`; images whose region is empty or the whole
    map are left out.

    Args:
        absolute: Score magnitudes (``None``: Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = LocalisationAUC()
        >>> metric.update(torch.tensor([[[[0.1, 0.9], [0.4, 0.4]]]]), masks=torch.tensor([[[0, 1], [1, 0]]]))
        >>> metric.compute()
        tensor(0.8750)
    """

    higher_is_better: bool = True
    quantus_absolute = False

    def update(self, maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> None:
        """Score a batch of ``maps [B, 1, H, W]`` against ``boxes [B, 4]`` or ``masks [B, H, W]``."""
        self._accumulate(localisation_auc(maps, boxes, masks, absolute=self.absolute, normalise=self.normalise))


class Focus(_Preprocessed):
    """Mean share of positive relevance on the target-class quadrants of mosaics (Quantus' ``Focus``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.focus`.

    Args:
        absolute: Take magnitudes first (``None``: Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (``True``).
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> maps = torch.zeros(1, 1, 4, 4)
        >>> maps[0, 0, :2, :2] = 1.0
        >>> metric = Focus()
        >>> metric.update(maps, torch.tensor([[1, 0, 0, 1]]))
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True
    quantus_absolute = False

    def update(self, maps: Tensor, quadrants: Tensor) -> None:
        """Score a batch of mosaic ``maps [B, 1, H, W]`` with ``quadrants [B, 4]`` (0/1, the target class's)."""
        self._accumulate(focus(maps, quadrants, absolute=self.absolute, normalise=self.normalise))
