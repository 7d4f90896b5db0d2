"""Quantus' preprocessing of attributions, per image: divide by the largest magnitude, then take magnitudes.

Quantus 0.6 applies ``normalise_func`` (``normalise_by_max``: ``a / max|a|``) and then ``np.abs`` to every
``a_batch`` before its metrics see it. Its default ``normalise_by_max`` takes the maximum over the whole batch (no
``normalise_axes``), so one image's score depends on the other images in the batch; here each image is divided by
its own maximum, which is Quantus with ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``. The two agree
whenever every map of the batch has the same largest magnitude, as min-max-normalised maps in [0, 1] (maximum 1)
do. An all-zero image stays zero (Quantus would divide it by 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__: list[str] = []


def _check_flag(value: object, arg: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{arg} must be a bool, got {value!r}.")
    return value


def _prepared(attributions: Tensor, *, abs: bool, normalise: bool, arg: str = "maps") -> Tensor:
    """``attributions [B, ...]`` float32, NaN-free: divided by each image's max ``|a|``, then ``|a|``, as Quantus.

    Each step only when its flag is set, in Quantus' order (``general_preprocess``); the shape is kept.
    """
    _check_flag(abs, "abs")
    _check_flag(normalise, "normalise")
    if not isinstance(attributions, Tensor) or attributions.ndim < 2 or not attributions.is_floating_point():
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"{arg} must be a floating-point Tensor [B, ...] (batch first), got {got}.")
    a = torch.nan_to_num(attributions.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    if normalise:
        peak = a.flatten(1).abs().amax(1) if a.numel() else a.new_zeros(a.shape[0])  # [B]
        peak = peak.view(-1, *([1] * (a.ndim - 1)))
        a = torch.where(peak > 0, a / torch.where(peak > 0, peak, torch.ones_like(peak)), a)
    return a.abs() if abs else a
