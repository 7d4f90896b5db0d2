"""Expensive checks (modular): model-randomisation sanity check and saliency-focused attack."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import SaliencyMethod
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional.attack import _check_attack_args, _check_fraction, saliency_attack_score
from lightning_saliency.metrics.functional.sanity import model_randomisation_score

__all__ = ["ModelRandomisation", "SaliencyAttack"]


class ModelRandomisation(_MeanScore):
    """Mean |Spearman rho| between maps of the model and of a copy with its top layers randomised; lower is better.

    One stage (the top ``num_layers`` randomised at once); for the cascading curve call
    :func:`~lightning_saliency.metrics.functional.model_randomisation_score` with ``cascading=True``.

    Args:
        num_layers: Top layers randomised (``None``: all).
        absolute: Average ``|rho|`` (default) or ``rho``.
        seed: Seed of the re-initialisation.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> metric = ModelRandomisation(num_layers=None)
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient())
        >>> bool(0 <= metric.compute() <= 1)
        True
    """

    higher_is_better: bool = False

    def __init__(
        self, num_layers: int | None = 1, absolute: bool = True, seed: int = 0, run: Run | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if num_layers is not None and (
            not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1
        ):
            raise ValueError(f"num_layers must be None or a positive int, got {num_layers!r}.")
        self.num_layers, self.absolute, self.seed, self.run = num_layers, absolute, seed, run

    def update(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        method: SaliencyMethod | str,
        maps: Tensor | None = None,
    ) -> None:
        """Score a batch with ``method`` (``maps``: its maps on ``model`` if already computed)."""
        rho = model_randomisation_score(
            model,
            inputs,
            targets,
            method,
            num_layers=self.num_layers,
            absolute=self.absolute,
            seed=self.seed,
            maps=maps,
            run=self.run,
        )
        self._accumulate(rho[0])


class SaliencyAttack(_MeanScore):
    """Mean saliency-focused attack ratio (top-pixel attack norm / random-pixel attack norm); lower is better.

    See :func:`~lightning_saliency.metrics.functional.saliency_attack_score`.

    Args:
        fraction: Share of pixels the attacks may change.
        step_size: L2 norm per attack step, in input units.
        max_steps: Step budget per attack.
        seed: Seed of the random pixel set.
        bounds: Optional ``(low, high)`` clamp of the perturbed input.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = SaliencyAttack()
        >>> metric.update(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> bool(metric.compute() > 0)
        True
    """

    higher_is_better: bool = False

    def __init__(
        self,
        fraction: float = 0.1,
        step_size: float = 0.1,
        max_steps: int = 50,
        seed: int = 0,
        bounds: tuple[float, float] | None = None,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_fraction(fraction)
        _check_attack_args(step_size, max_steps)
        self.fraction, self.step_size, self.max_steps = fraction, step_size, max_steps
        self.seed, self.bounds, self.run = seed, bounds, run

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, maps: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``maps [B, 1, H, W]``."""
        self._accumulate(
            saliency_attack_score(
                model,
                inputs,
                targets,
                maps,
                fraction=self.fraction,
                step_size=self.step_size,
                max_steps=self.max_steps,
                seed=self.seed,
                bounds=self.bounds,
                run=self.run,
            )
        )
