"""The shared shape of every score metric: a per-image score summed into ``total`` with a ``count``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_saliency.metrics.functional._common import _mean_compute, _sum_update

__all__: list[str] = []


class _MeanScore(Metric):
    """Mean of per-image scores; states ``total`` and ``count`` are reduced across processes by ``sum``."""

    is_differentiable: bool = False
    full_state_update: bool = False
    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor) -> None:
        total, count = _sum_update(values)
        self.total += total.to(self.total)
        self.count += count.to(self.count)

    def compute(self) -> Tensor:
        """Mean score over every image seen (0 before any update)."""
        return _mean_compute(self.total, self.count)
