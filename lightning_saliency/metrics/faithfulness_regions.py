"""Quantus 0.6's Region Perturbation, Selectivity, IROF, Sensitivity-N and Sufficiency as torchmetrics classes.

The curve scores accumulate each image's :func:`~lightning_saliency.metrics.functional.curve_auc` (the area under
its curve, per step over ``[0, 1]``: Quantus' ``get_auc_score`` is that times ``K - 1``, for curves of ``K``
points).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional.faithfulness_regions import (
    Fill,
    _check_fill,
    _choice,
    _curve_area,
    irof,
    region_perturbation,
    selectivity,
    sensitivity_n,
    sufficiency,
)

__all__ = ["IROF", "RegionPerturbation", "Selectivity", "SensitivityN", "Sufficiency"]


def _check_int(value: Any, arg: str, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be an int >= 1 ({meaning}), got {value!r}.")


class RegionPerturbation(_MeanScore):
    """Mean area under the Region Perturbation curves (Samek et al. 2016; Quantus' ``RegionPerturbation``).

    See :func:`~lightning_saliency.metrics.functional.region_perturbation`; with MoRF higher is better.

    Args:
        patch_size: Side of the square patches (8).
        order: ``"morf"`` or ``"lerf"``.
        regions_evaluation: Patches replaced (100).
        perturb_baseline: ``"black"``, ``"white"``, ``"mean"`` or a number.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> metric = RegionPerturbation(patch_size=4)
        >>> metric.update(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.rand(2, 1, 8, 8))
        >>> metric.compute().shape
        torch.Size([])
    """

    higher_is_better: bool = True

    def __init__(
        self,
        patch_size: int = 8,
        order: str = "morf",
        regions_evaluation: int = 100,
        perturb_baseline: Fill = "black",
        absolute: bool = False,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_int(patch_size, "patch_size", "pixels per patch side")
        _check_int(regions_evaluation, "regions_evaluation", "patches replaced")
        _choice(order, "order", ("morf", "lerf"))
        _check_fill(perturb_baseline)
        self.patch_size, self.order, self.regions_evaluation = patch_size, order, regions_evaluation
        self.perturb_baseline, self.absolute, self.batch_size, self.run = perturb_baseline, absolute, batch_size, run

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions [B, C or 1, H, W]``."""
        curves = region_perturbation(
            model,
            inputs,
            targets,
            attributions,
            patch_size=self.patch_size,
            order=self.order,  # type: ignore[arg-type]
            regions_evaluation=self.regions_evaluation,
            perturb_baseline=self.perturb_baseline,
            absolute=self.absolute,
            batch_size=self.batch_size,
            run=self.run,
        )
        self._accumulate(_curve_area(curves))


class Selectivity(_MeanScore):
    """Mean area under the Selectivity curves (Montavon et al. 2018; Quantus' ``Selectivity``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.selectivity`.

    Args:
        patch_size: Side of the square patches (8).
        perturb_baseline: ``"black"``, ``"white"``, ``"mean"`` or a number.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> metric = Selectivity(patch_size=4)
        >>> metric.update(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.rand(2, 1, 8, 8))
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = False

    def __init__(
        self,
        patch_size: int = 8,
        perturb_baseline: Fill = "black",
        absolute: bool = False,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_int(patch_size, "patch_size", "pixels per patch side")
        _check_fill(perturb_baseline)
        self.patch_size, self.perturb_baseline, self.absolute, self.batch_size, self.run = (
            patch_size,
            perturb_baseline,
            absolute,
            batch_size,
            run,
        )

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions [B, C or 1, H, W]``."""
        curves = selectivity(
            model,
            inputs,
            targets,
            attributions,
            patch_size=self.patch_size,
            perturb_baseline=self.perturb_baseline,
            absolute=self.absolute,
            batch_size=self.batch_size,
            run=self.run,
        )
        self._accumulate(_curve_area(curves))


class IROF(_MeanScore):
    """Mean IROF area over the curve (Rieger & Hansen 2020; Quantus' ``IROF``): higher is better.

    See :func:`~lightning_saliency.metrics.functional.irof` (SLIC superpixels need scikit-image, or pass
    ``segments`` to :meth:`update`).

    Args:
        perturb_baseline: ``"mean"``, ``"black"``, ``"white"`` or a number.
        baseline_over: ``"batch"`` (as Quantus) or ``"image"``.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        >>> segments = torch.arange(4).repeat_interleave(4).view(1, 4, 4).expand(2, 4, 4)
        >>> metric = IROF()
        >>> metric.update(net, torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), torch.rand(2, 4, 4), segments=segments)
        >>> metric.compute().shape
        torch.Size([])
    """

    higher_is_better: bool = True

    def __init__(
        self,
        perturb_baseline: Fill = "mean",
        baseline_over: str = "batch",
        absolute: bool = False,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_fill(perturb_baseline)
        _choice(baseline_over, "baseline_over", ("batch", "image"))
        self.perturb_baseline, self.baseline_over, self.absolute = perturb_baseline, baseline_over, absolute
        self.batch_size, self.run = batch_size, run

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        attributions: Tensor,
        segments: Tensor | None = None,
    ) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions``, ``segments [B, H, W]``."""
        self._accumulate(
            irof(
                model,
                inputs,
                targets,
                attributions,
                segments=segments,
                perturb_baseline=self.perturb_baseline,
                baseline_over=self.baseline_over,  # type: ignore[arg-type]
                absolute=self.absolute,
                batch_size=self.batch_size,
                run=self.run,
            )
        )


class SensitivityN(_MeanScore):
    """Mean Sensitivity-n correlation (Ancona et al. 2018; Quantus' ``SensitivityN``): higher is better.

    Each :meth:`update` adds one value, the batch's mean correlation over the steps (the correlations are across
    the images of the batch); :meth:`compute` averages the batches. See
    :func:`~lightning_saliency.metrics.functional.sensitivity_n`.

    Args:
        n_max_percentage: Share of the pixels the steps reach (0.8).
        features_in_step: Elements replaced per step (1: one forward per element).
        perturb_baseline: ``"black"``, ``"white"``, ``"mean"`` or a number.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed inputs per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = SensitivityN()
        >>> metric.update(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), torch.rand(3, 1, 2, 2))
        >>> bool(-1 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = True

    def __init__(
        self,
        n_max_percentage: float = 0.8,
        features_in_step: int = 1,
        perturb_baseline: Fill = "black",
        absolute: bool = False,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_int(features_in_step, "features_in_step", "elements per step")
        _check_fill(perturb_baseline)
        self.n_max_percentage, self.features_in_step, self.perturb_baseline = (
            n_max_percentage,
            features_in_step,
            perturb_baseline,
        )
        self.absolute, self.batch_size, self.run = absolute, batch_size, run

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, attributions: Tensor) -> None:
        """Score a batch (``B >= 2``): ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions``."""
        rho = sensitivity_n(
            model,
            inputs,
            targets,
            attributions,
            n_max_percentage=self.n_max_percentage,
            features_in_step=self.features_in_step,
            perturb_baseline=self.perturb_baseline,
            absolute=self.absolute,
            batch_size=self.batch_size,
            run=self.run,
        )
        self._accumulate(rho.mean()[None])


class Sufficiency(_MeanScore):
    """Mean Sufficiency (Dasgupta et al. 2022; Quantus' ``Sufficiency``): higher is better.

    Neighbours are found within each :meth:`update`'s batch. See
    :func:`~lightning_saliency.metrics.functional.sufficiency`.

    Args:
        threshold: Largest normalised distance of neighbours (0.6).
        distance: ``"seuclidean"`` or ``"euclidean"``.
        absolute: Compare ``abs(attributions)`` (default, as Quantus).
        batch_size: Most images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = Sufficiency()
        >>> metric.update(net, torch.rand(3, 1, 2, 2), torch.ones(3, 1, 2, 2))
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True

    def __init__(
        self,
        threshold: float = 0.6,
        distance: str = "seuclidean",
        absolute: bool = True,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _choice(distance, "distance", ("seuclidean", "euclidean"))
        self.threshold, self.distance, self.absolute, self.batch_size, self.run = (
            threshold,
            distance,
            absolute,
            batch_size,
            run,
        )

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, ...]``, ``attributions [B, ...]``."""
        self._accumulate(
            sufficiency(
                model,
                inputs,
                attributions,
                threshold=self.threshold,
                distance=self.distance,  # type: ignore[arg-type]
                absolute=self.absolute,
                batch_size=self.batch_size,
                run=self.run,
            )
        )
