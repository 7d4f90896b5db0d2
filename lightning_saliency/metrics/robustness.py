"""Robustness metrics (modular): infidelity and max-sensitivity (Yeh et al. 2019), as captum defines them."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._common import _check_batch_size
from lightning_saliency.metrics.functional.robustness import Explainer, _check_samples, infidelity, sensitivity_max

__all__ = ["Infidelity", "SensitivityMax"]


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
