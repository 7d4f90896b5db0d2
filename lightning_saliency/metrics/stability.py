"""Map stability across epochs (modular)."""

from __future__ import annotations

from torch import Tensor

from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional.correlation import map_stability

__all__ = ["MapStability"]


class MapStability(_MeanScore):
    """Mean Spearman rho between each image's map at this epoch and at the previous one; higher is steadier.

    See :func:`~lightning_saliency.metrics.functional.map_stability`. Whether stability is *good* depends on
    the phase of training, so ``higher_is_better`` is ``None``.

    Example:
        >>> import torch
        >>> metric = MapStability()
        >>> maps = torch.rand(2, 1, 4, 4)
        >>> metric.update(maps, maps.sqrt())
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better = None

    def update(self, prev_maps: Tensor, maps: Tensor) -> None:
        """Add a batch: ``prev_maps`` and ``maps`` ``[B, 1, H, W]`` of the same images at two epochs."""
        self._accumulate(map_stability(prev_maps, maps))
