"""Colours: model inputs as displayable RGB, colormapped heat maps, overlays."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_saliency._colormaps import COLORMAPS
from lightning_saliency._shapes import per_sample

__all__ = ["COLORMAPS", "apply_colormap", "overlay", "to_display"]


def to_display(inputs: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Model inputs ``[B, C, H, W]`` as displayable RGB ``[B, 3, H, W]`` in [0, 1] (volumes ``[B, C, D, H, W]`` too).

    With ``mean``/``std`` (the normalisation the data pipeline applied) the inputs are denormalised
    (``x * std + mean``) and clipped. Without them, inputs already in [0, 1] are shown as they are and others
    are min-max scaled per image. One channel is shown as grey; more than three channels as the grey mean.

    Raises:
        ValueError: If ``mean``/``std`` do not have one value per channel (or one value).

    Example:
        >>> to_display(torch.zeros(2, 1, 4, 5), mean=[0.5], std=[0.25]).shape
        torch.Size([2, 3, 4, 5])
    """
    x = torch.nan_to_num(inputs.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)  # [B,C,*S]
    c = x.shape[1]
    if mean is not None or std is not None:
        m = _per_channel(mean if mean is not None else [0.0], c, "mean", x.ndim)
        s = _per_channel(std if std is not None else [1.0], c, "std", x.ndim)
        x = (x * s + m).clamp(0, 1)
    elif x.numel() and (x.min() < 0 or x.max() > 1):
        flat = x.flatten(1)
        lo, hi = per_sample(flat.min(1).values, x), per_sample(flat.max(1).values, x)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    rgb = (-1, 3, *x.shape[2:])
    if c == 1:
        return x.expand(rgb).contiguous()
    if c == 3:
        return x
    return x.mean(1, keepdim=True).expand(rgb).contiguous()


def _per_channel(values: Sequence[float], channels: int, arg: str, ndim: int = 4) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() not in (1, channels):
        raise ValueError(
            f"{arg} must have one value per input channel ({channels}) or a single value, got {list(values)!r}."
        )
    return t.view(1, -1, *([1] * (ndim - 2)))  # [1,C,1,1(,1)]


def apply_colormap(maps: Tensor, colormap: str = "turbo") -> Tensor:
    """Colour maps ``[B, 1, H, W]`` in [0, 1] with a 256-entry LUT, giving ``[B, 3, H, W]``.

    Example:
        >>> apply_colormap(torch.tensor([[[[0.0, 1.0]]]]), "viridis")[0, :, 0, 0]
        tensor([0.2667, 0.0039, 0.3294])
    """
    lut = _lut(colormap)  # [256,3]
    idx = (torch.nan_to_num(maps.detach().float().cpu(), nan=0.0).clamp(0, 1) * 255).round().long()  # [B,1,H,W]
    return lut[idx[:, 0]].permute(0, 3, 1, 2).contiguous()  # [B,H,W,3] -> [B,3,H,W]


def _lut(colormap: str) -> Tensor:
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}.")
    return torch.frombuffer(bytearray(COLORMAPS[colormap]), dtype=torch.uint8).view(256, 3).float() / 255


def overlay(images: Tensor, maps: Tensor, alpha: float = 0.5, colormap: str = "turbo") -> Tensor:
    """Blend colormapped ``maps [B, 1, H, W]`` over ``images [B, 3, H, W]``: ``(1 - alpha) * image + alpha * heat``."""
    return ((1 - alpha) * images.float().cpu() + alpha * apply_colormap(maps, colormap)).clamp(0, 1)
