"""Shapes shared by images ``[B, C, H, W]`` and volumes ``[B, C, D, H, W]`` (video: ``[B, C, T, H, W]``)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["interpolation", "per_sample", "spatial"]


def spatial(x: Tensor) -> tuple[int, ...]:
    """The spatial dimensions of ``[B, C, *spatial]``: ``(2, 3)`` for images, ``(2, 3, 4)`` for volumes.

    Example:
        >>> import torch
        >>> spatial(torch.zeros(1, 3, 4, 5)), spatial(torch.zeros(1, 3, 2, 4, 5))
        ((2, 3), (2, 3, 4))
    """
    return tuple(range(2, x.ndim))


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``values [B]`` (or ``[B, K]``) viewed to broadcast against ``like [B, (K,) *spatial]``.

    Example:
        >>> import torch
        >>> per_sample(torch.ones(2), torch.zeros(2, 1, 3, 3)).shape
        torch.Size([2, 1, 1, 1])
    """
    return values.view(*values.shape, *([1] * (like.ndim - values.ndim)))


def interpolation(dims: int) -> str:
    """The linear interpolation mode of ``F.interpolate`` for ``dims`` spatial dimensions.

    Example:
        >>> interpolation(2), interpolation(3)
        ('bilinear', 'trilinear')
    """
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[dims]
