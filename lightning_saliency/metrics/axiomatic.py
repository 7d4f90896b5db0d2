"""Axiomatic metrics (modular): Quantus' completeness, non-sensitivity and input invariance."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics._base import _MeanScore
from lightning_saliency.metrics.functional._quantus import Explainer
from lightning_saliency.metrics.functional.axiomatic import (
    QuantusBaseline,
    completeness,
    input_invariance,
    non_sensitivity,
)

__all__ = ["Completeness", "InputInvariance", "NonSensitivity"]


class Completeness(_MeanScore):
    """Share of images whose attributions sum to ``f(x) - f(x')`` (Quantus' ``Completeness``), higher is better.

    See :func:`~lightning_saliency.metrics.functional.completeness` (exact by default, as Quantus; ``rtol``/``atol``
    for a tolerance). Pass raw attributions with ``normalise=False``.

    Args:
        perturb_baseline: ``x'``: ``"black"``, ``"white"``, ``"mean"``, a float or a tensor.
        absolute: Take magnitudes first (``False``).
        normalise: Divide by the largest magnitude first (``True``, as Quantus).
        rtol: Relative tolerance (0).
        atol: Absolute tolerance (0).
        batch_size: Most images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.fill_(1.0)
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> metric = Completeness(perturb_baseline=0.0, normalise=False)
        >>> metric.update(net, x, torch.tensor([0]), x)
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True

    def __init__(
        self,
        perturb_baseline: QuantusBaseline = "black",
        absolute: bool = False,
        normalise: bool = True,
        rtol: float = 0.0,
        atol: float = 0.0,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options: dict[str, Any] = {
            "perturb_baseline": perturb_baseline,
            "absolute": absolute,
            "normalise": normalise,
        }
        self.options.update(rtol=rtol, atol=atol, batch_size=batch_size, run=run)

    def update(self, model: nn.Module, inputs: Tensor, targets: Any, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions [B, C or 1, H, W]``."""
        self._accumulate(completeness(model, inputs, targets, attributions, **self.options))


class NonSensitivity(_MeanScore):
    """Mean number of violations of non-sensitivity (Quantus' ``NonSensitivity``), lower is better.

    See :func:`~lightning_saliency.metrics.functional.non_sensitivity` (``ceil(C * H * W / features_in_step)``
    forwards per image).

    Args:
        eps: Threshold on the attributions and on the output's change (``1e-5``).
        features_in_step: Values replaced per forward (1).
        perturb_baseline: What they are replaced by (``"black"``).
        absolute: Take magnitudes first (``True``).
        normalise: Divide by the largest magnitude first (``True``).
        softmax: Compare probabilities (``True``) or scores.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> metric = NonSensitivity()
        >>> metric.update(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), torch.ones(2, 1, 2, 2))
        >>> bool(metric.compute() <= 4)
        True
    """

    higher_is_better: bool = False

    def __init__(
        self,
        eps: float = 1e-5,
        features_in_step: int = 1,
        perturb_baseline: QuantusBaseline = "black",
        absolute: bool = True,
        normalise: bool = True,
        softmax: bool = True,
        batch_size: int = 64,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options: dict[str, Any] = {"eps": eps, "features_in_step": features_in_step}
        self.options.update(perturb_baseline=perturb_baseline)
        self.options.update(absolute=absolute, normalise=normalise, softmax=softmax, batch_size=batch_size, run=run)

    def update(self, model: nn.Module, inputs: Tensor, targets: Any, attributions: Tensor) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, ``attributions [B, C or 1, H, W]``."""
        self._accumulate(non_sensitivity(model, inputs, targets, attributions, **self.options))


class InputInvariance(_MeanScore):
    """Share of images whose explanation survives a constant input shift (Quantus' ``InputInvariance``): higher better.

    See :func:`~lightning_saliency.metrics.functional.input_invariance`.

    Args:
        explain: A saliency method instance or ``f(model, inputs, targets)``.
        input_shift: The constant added to the inputs (-1).
        absolute: Take magnitudes first (``False``).
        normalise: Divide by the largest magnitude first (``False``).
        run: Precision and output adapter.
        kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> from lightning_saliency.methods import Gradient
        >>> metric = InputInvariance(Gradient())
        >>> metric.update(nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(8, 2)), torch.rand(2, 1, 3, 3),
        ...               torch.tensor([0, 1]))
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better: bool = True

    def __init__(
        self,
        explain: Explainer,
        input_shift: float = -1.0,
        absolute: bool = False,
        normalise: bool = False,
        run: Run | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(explain):
            raise TypeError(f"explain must be a SaliencyMethod or a callable, got {type(explain).__name__}.")
        self.explain, self.input_shift, self.absolute, self.normalise, self.run = (
            explain,
            input_shift,
            absolute,
            normalise,
            run,
        )

    def update(self, model: nn.Module, inputs: Tensor, targets: Any, attributions: Tensor | None = None) -> None:
        """Score a batch: ``inputs [B, C, H, W]``, ``targets [B]``, optionally the explanation of ``inputs``."""
        self._accumulate(
            input_invariance(
                self.explain,
                model,
                inputs,
                targets,
                attributions,
                input_shift=self.input_shift,
                absolute=self.absolute,
                normalise=self.normalise,
                run=self.run,
            )
        )
