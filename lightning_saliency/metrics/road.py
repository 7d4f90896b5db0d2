"""ROAD (modular): the combined score (LeRF - MoRF) / 2, with the mean MoRF and LeRF curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._common import _check_batch_size
from lightning_saliency.metrics.functional.road import DEFAULT_PERCENTAGES, DEFAULT_TOL, _check_percentages, road_curves

__all__ = ["ROADCombined"]


class ROADCombined(_MeanScore):
    """Mean ROAD combined score (Rong et al. 2022; pytorch-grad-cam's ``ROADCombined``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.road_score` and
    :func:`~lightning_saliency.metrics.functional.road_curves`.

    Args:
        percentages: Percent of pixels removed at each point (default 10, ..., 90).
        noise: Standard deviation of the imputation noise (0.01).
        seed: Seed of the noise.
        tol: Relative residual of the imputation solver.
        batch_size: Most imputed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = ROADCombined(percentages=(25, 50, 75))
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> metric.compute().shape, metric.mean_curves()[0].shape
        (torch.Size([]), torch.Size([3]))
    """

    higher_is_better: bool = True
    morf_sum: Tensor
    lerf_sum: Tensor

    def __init__(
        self,
        percentages: Sequence[float] = DEFAULT_PERCENTAGES,
        noise: float = 0.01,
        seed: int = 0,
        tol: float = DEFAULT_TOL,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.percentages = _check_percentages(percentages)
        _check_batch_size(batch_size)
        if not isinstance(noise, (int, float)) or noise < 0:
            raise ValueError(f"noise must be a float >= 0 (a standard deviation), got {noise!r}.")
        self.noise, self.seed, self.tol, self.batch_size, self.run = noise, seed, tol, batch_size, run
        n = len(self.percentages)
        self.add_state("morf_sum", default=torch.zeros(n), dist_reduce_fx="sum")
        self.add_state("lerf_sum", default=torch.zeros(n), dist_reduce_fx="sum")

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``maps [B, 1, H, W]`` (the model is not kept)."""
        morf, lerf = road_curves(
            model,
            inputs,
            targets,
            maps,
            percentages=self.percentages,
            noise=self.noise,
            seed=self.seed,
            tol=self.tol,
            batch_size=self.batch_size,
            run=self.run,
        )
        self._accumulate(((lerf - morf) / 2).mean(1))
        self.morf_sum += morf.sum(0).to(self.morf_sum)
        self.lerf_sum += lerf.sum(0).to(self.lerf_sum)

    def mean_curves(self) -> tuple[Tensor, Tensor]:
        """Mean ``(MoRF, LeRF)`` curves ``[P]`` over every image seen (call ``sync()`` first under DDP)."""
        count = self.count.clamp_min(1)
        return self.morf_sum / count, self.lerf_sum / count
