"""Robustness metrics (modular): infidelity, max-sensitivity as captum, and Quantus' robustness family."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._common import _check_batch_size
from lightning_saliency.metrics.functional.robustness import (
    Explainer,
    _check_samples,
    avg_sensitivity,
    infidelity,
    sensitivity_max,
)
from lightning_saliency.metrics.functional.stability import (
    Of,
    continuity,
    local_lipschitz_estimate,
    relative_stability,
)

__all__ = [
    "Infidelity",
    "SensitivityMax",
    # Quantus robustness family
    "LocalLipschitzEstimate",
    "AvgSensitivity",
    "Continuity",
    "RelativeInputStability",
    "RelativeOutputStability",
    "RelativeRepresentationStability",
]


class Infidelity(_MeanScore):
    """Mean infidelity (captum's ``infidelity`` with Gaussian perturbations, std 0.003): lower is better.

    See :func:`~lightning_saliency.metrics.functional.infidelity`.

    Args:
        n_perturb_samples: Perturbations per image (10).
        noise_std: Standard deviation of the perturbation (0.003).
        normalize: Rescale the attributions by the optimal scalar first.
        seed: Seed of the perturbations.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = Infidelity()
        >>> metric.update(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), torch.zeros(2, 1, 2, 2))
        >>> bool(metric.compute() > 0)
        True
    """

    higher_is_better: bool = False

    def __init__(
        self,
        n_perturb_samples: int = 10,
        noise_std: float = 0.003,
        normalize: bool = False,
        seed: int = 0,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_samples(n_perturb_samples)
        _check_batch_size(batch_size)
        self.n_perturb_samples, self.noise_std, self.normalize = n_perturb_samples, noise_std, normalize
        self.seed, self.batch_size, self.run = seed, batch_size, run

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions [B, C or 1, H, W]``."""
        self._accumulate(
            infidelity(
                model,
                inputs,
                targets,
                attributions,
                n_perturb_samples=self.n_perturb_samples,
                noise_std=self.noise_std,
                normalize=self.normalize,
                seed=self.seed,
                batch_size=self.batch_size,
                run=self.run,
            )
        )


class SensitivityMax(_MeanScore):
    """Mean max-sensitivity of an explanation (captum's ``sensitivity_max``, radius 0.02, 10 samples): lower is better.

    See :func:`~lightning_saliency.metrics.functional.sensitivity_max`.

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        perturb_radius: L-inf radius of the perturbations (0.02).
        n_perturb_samples: Perturbations per image (10).
        norm_ord: ``"fro"`` or a ``p``.
        seed: Seed of the perturbations.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> metric = SensitivityMax(Gradient(), n_perturb_samples=2)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(0.)
    """

    higher_is_better: bool = False

    def __init__(
        self,
        explain: Explainer,
        perturb_radius: float = 0.02,
        n_perturb_samples: int = 10,
        norm_ord: str | float = "fro",
        seed: int = 0,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(explain):
            raise TypeError(f"explain must be a SaliencyMethod or a callable, got {type(explain).__name__}.")
        _check_samples(n_perturb_samples)
        self.explain, self.perturb_radius, self.n_perturb_samples = explain, perturb_radius, n_perturb_samples
        self.norm_ord, self.seed, self.run = norm_ord, seed, run

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``."""
        self._accumulate(
            sensitivity_max(
                self.explain,
                model,
                inputs,
                targets,
                perturb_radius=self.perturb_radius,
                n_perturb_samples=self.n_perturb_samples,
                norm_ord=self.norm_ord,
                seed=self.seed,
                run=self.run,
            )
        )


# Quantus robustness family (issue #18)


class _ExplanationScore(_MeanScore):
    """Mean of a per-image score that re-explains perturbed inputs: ``function(explain, model, inputs, targets)``."""

    higher_is_better: bool = False
    function: Callable[..., Tensor]

    def __init__(self, explain: Explainer, **kwargs: Any) -> None:
        options, metric_kwargs = _split(type(self).function, kwargs)
        super().__init__(**metric_kwargs)
        if not callable(explain):
            raise TypeError(f"explain must be a SaliencyMethod or a callable, got {type(explain).__name__}.")
        self.explain, self.options = explain, options

    def update(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]`` (or any target)."""
        self._accumulate(type(self).function(self.explain, model, inputs, targets, **self.options))


class LocalLipschitzEstimate(_ExplanationScore):
    """Mean Local Lipschitz Estimate (Quantus' ``LocalLipschitzEstimate``, Gaussian noise std 0.1): lower is better.

    See :func:`~lightning_saliency.metrics.functional.local_lipschitz_estimate`, which takes the same keyword
    arguments (``n_samples``, ``perturb_std``, ``normalise``, ``seed``, ``batch_size``, ...).

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> metric = LocalLipschitzEstimate(Gradient(), n_samples=2)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(0.)
    """

    function = staticmethod(local_lipschitz_estimate)


class AvgSensitivity(_ExplanationScore):
    """Mean average sensitivity (Quantus' ``AvgSensitivity``, noise ``U(-0.2, 0.2)``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.avg_sensitivity` for the keyword arguments.

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> AvgSensitivity(Gradient(), n_samples=20, lower_bound=0.1).options
        {'n_samples': 20, 'lower_bound': 0.1}
    """

    function = staticmethod(avg_sensitivity)


class Continuity(_ExplanationScore):
    """Mean Continuity under horizontal translation (Quantus' ``Continuity``, 28 shifts): lower is better.

    See :func:`~lightning_saliency.metrics.functional.continuity` for the keyword arguments.

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> metric = Continuity(lambda m, x, t: x, n_steps=3)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(1, 1, 4, 4), torch.tensor([0]))
        >>> bool(metric.compute() > 0)
        True
    """

    function = staticmethod(continuity)


class _RelativeStability(_ExplanationScore):
    of: Of
    function = staticmethod(relative_stability)

    def __init__(self, explain: Explainer, **kwargs: Any) -> None:
        if "of" in kwargs:
            raise ValueError(f"{type(self).__name__} is of={self.of!r}; got of={kwargs['of']!r}.")
        super().__init__(explain, **kwargs)
        self.options["of"] = self.of


class RelativeInputStability(_RelativeStability):
    """Mean Relative Input Stability (Quantus' ``RelativeInputStability``, noise ``U(0.02, 0.2)``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.relative_stability` (``of="input"``) for the keyword
    arguments.

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> metric = RelativeInputStability(Gradient(), n_samples=2, drop_changed=False)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(0.)
    """

    of = "input"


class RelativeOutputStability(_RelativeStability):
    """Mean Relative Output Stability (Quantus' ``RelativeOutputStability``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.relative_stability` (``of="output"``).

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> RelativeOutputStability(Gradient(), n_samples=2).options
        {'n_samples': 2, 'of': 'output'}
    """

    of = "output"


class RelativeRepresentationStability(_RelativeStability):
    """Mean Relative Representation Stability (Quantus' ``RelativeRepresentationStability``): lower is better.

    See :func:`~lightning_saliency.metrics.functional.relative_stability` (``of="representation"``, ``layers``).

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        kwargs: The functional's keyword arguments, and those of :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> RelativeRepresentationStability(Gradient(), layers=["features.4"]).options
        {'layers': ['features.4'], 'of': 'representation'}
    """

    of = "representation"


def _split(function: Callable[..., Tensor], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kwargs`` split into the functional's keyword-only arguments and the rest (for :class:`Metric`)."""
    names = {p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY}
    return {k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names}
