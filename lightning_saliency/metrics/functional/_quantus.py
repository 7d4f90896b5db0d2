"""Private pieces shared by the Quantus families: flags, attribution preprocessing, explainers, baselines, classes.

Quantus 0.6 applies ``normalise_func`` (``normalise_by_max``: ``a / max|a|``) and then ``np.abs`` to every
``a_batch`` before its metrics see it. Its default ``normalise_by_max`` takes the maximum over the whole batch (no
``normalise_axes``), so one image's score depends on the other images in the batch; here each image is divided by
its own maximum (:func:`_prepared`, :func:`_normalised`), which is Quantus with
``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``. The two agree whenever every map of the batch has the same
largest magnitude, as min-max-normalised maps in [0, 1] (maximum 1) do. An all-zero image stays zero (Quantus would
divide it by 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import SaliencyMethod
from lightning_saliency.targets import Target

__all__: list[str] = []

Explainer = SaliencyMethod | Callable[[nn.Module, Tensor, Any], Tensor]
"""A saliency method instance, or ``f(model, inputs, targets) -> explanation`` (any shape with batch first)."""


def _check_flag(value: object, arg: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{arg} must be a bool, got {value!r}.")
    return value


def _normalised(a: Tensor, normalise: str | None, absolute: bool) -> Tensor:
    """Quantus' post-processing of explanations ``[N, D]``, per explanation (an all-zero one left as is).

    ``normalise``: ``"max"`` divides by the largest ``|a|`` (Quantus' ``normalise_by_max``), ``"second_moment"``
    by ``sqrt(mean(a^2))`` (``normalise_by_average_second_moment_estimate``); then ``|a|`` if ``absolute``.
    """
    if normalise is not None:
        scale = a.abs().amax(1, keepdim=True) if normalise == "max" else a.pow(2).mean(1, keepdim=True).sqrt()
        a = a / torch.where(scale == 0, torch.ones_like(scale), scale)
    return a.abs() if absolute else a


def _prepared(attributions: Tensor, *, absolute: bool, normalise: bool, arg: str = "maps") -> Tensor:
    """``attributions [B, ...]`` float32, NaN-free: divided by each image's max ``|a|``, then ``|a|``, as Quantus.

    Each step only when its flag is set, in Quantus' order (``general_preprocess``); the shape is kept.
    """
    _check_flag(absolute, "absolute")
    _check_flag(normalise, "normalise")
    if not isinstance(attributions, Tensor) or attributions.ndim < 2 or not attributions.is_floating_point():
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"{arg} must be a floating-point Tensor [B, ...] (batch first), got {got}.")
    a = torch.nan_to_num(attributions.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    mode = "max" if normalise and a.numel() else None
    return _normalised(a.flatten(1), mode, absolute).view_as(a)


def _broadcast_attributions(attributions: Tensor, inputs: Tensor) -> Tensor:
    """``attributions [B, C, ...]``, ``[B, 1, ...]`` or ``[B, ...]`` broadcast to the inputs ``[B, C, ...]``.

    A detached view on the inputs' device, in the attributions' dtype; each caller decides about NaN/inf.
    """
    if isinstance(attributions, Tensor) and attributions.ndim == inputs.ndim - 1:
        attributions = attributions[:, None]  # [B,1,...]
    ok = isinstance(attributions, Tensor) and attributions.ndim == inputs.ndim
    ok = ok and attributions.shape[0] == inputs.shape[0]
    ok = ok and all(a in (1, x) for a, x in zip(attributions.shape[1:], inputs.shape[1:], strict=True))
    if not ok:
        got = f"shape {tuple(attributions.shape)}" if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(
            f"attributions must be a Tensor [B, 1 or C, H, W] (or [B, H, W]) that broadcasts to the inputs "
            f"{tuple(inputs.shape)}, got {got}."
        )
    return attributions.detach().to(inputs.device).expand(inputs.shape)


def _explained(
    explain: Explainer, model: nn.Module, x: Tensor, rows: Tensor, target: Target, targets: Any, run: Run
) -> Tensor:
    """The explanation ``[N, ...]`` (float32, detached) of inputs ``x [N, ...]`` for the targets of images ``rows``.

    A saliency method gets the :class:`~lightning_saliency.targets.Target`, a callable the targets in the form the
    caller gave them.
    """
    if not callable(explain):
        raise TypeError(f"explain must be a SaliencyMethod or a callable, got {type(explain).__name__}.")
    if isinstance(explain, SaliencyMethod):
        out = explain(model, x, target[rows], precision=run.precision, output_adapter=run.output_adapter)
    else:
        if isinstance(targets, Tensor):
            picked: Any = targets[rows.to(targets.device)]
        elif isinstance(targets, Target):
            picked = targets[rows]
        else:
            picked = targets
        out = explain(model, x, picked)
    if not isinstance(out, Tensor) or out.ndim < 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"explain must return a Tensor [N, ...] for inputs {tuple(x.shape)}, got {got}.")
    return out.detach().float()


def _predicted(out: Tensor) -> Tensor:
    """The predicted class ``[N, P]`` of an output: ``argmax`` over dim 1, per position (``P = 1`` for ``[N, K]``)."""
    return out.float().argmax(1).reshape(out.shape[0], -1) if out.ndim > 1 else out.new_zeros(out.shape[0], 1).long()


def _baseline_values(flat: Tensor, perturb_baseline: str | float) -> Tensor:
    """Quantus' ``get_baseline_value`` per row of ``flat [B, F]``: ``[B]`` in ``flat``'s dtype.

    ``"black"`` the row's minimum, ``"white"`` its maximum, ``"mean"`` its mean, a number itself; callers check
    the name first (each family accepts its own set).
    """
    if perturb_baseline == "black":
        return flat.amin(1)
    if perturb_baseline == "white":
        return flat.amax(1)
    if perturb_baseline == "mean":
        return flat.mean(1)
    return flat.new_full((flat.shape[0],), float(perturb_baseline))
