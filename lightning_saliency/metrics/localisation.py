"""Localisation metrics (modular): pointing game, energy-based pointing game, localisation IoU."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional.localisation import energy_pointing_game, localisation_iou, pointing_game

__all__ = ["EnergyPointingGame", "LocalisationIoU", "PointingGame"]


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
