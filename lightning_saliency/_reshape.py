"""Turning transformer activations into CAM feature maps ``[B, K, h, w]``.

CAM methods read a layer's activations and gradients as ``[B, K, h, w]``. Vision transformers give other shapes:

* ViT (torchvision ``VisionTransformer``, timm ``VisionTransformer``): tokens ``[B, P + h*w, D]`` with ``P`` prefix
  tokens (the class token, distillation or register tokens) before the patch tokens;
* Swin (torchvision ``SwinTransformer``) and ConvNeXt blocks: channels-last ``[B, h, w, C]``.

:func:`to_feature_map` (the ``reshape="auto"`` of CAM methods) infers the token grid from the *input* size
alone, never a hard-coded 14x14: with ``n = T - P`` patch tokens it takes the factorisation ``h * w = n`` whose
aspect ratio ``h / w`` is closest to the input's ``H / W``, and the smallest prefix ``P = 0, 1, ..., 8`` (``P < n``)
for which one is within a factor 1.5 of it and square patches (``H // h == W // w``). That is the patch grid for
any patch size (``h = H / patch`` rounded down when the input is not a multiple of the patch), so the model's patch
size need not be known; the square-patch test tells a class token and 4 registers (timm's ``*_reg4`` models) from a
non-square grid of one token fewer. A prefix count the model declares (timm's ``num_prefix_tokens``, see
:func:`lightning_saliency.layers.token_prefix`) is tried first. Only when no prefix gives square patches is the
aspect ratio alone used. The prefix tokens are dropped (the *last* ``n`` tokens are the patches, as in torchvision
and timm).

A 4-D tensor is taken as channels-first ``[B, K, h, w]`` (as-is) when its last two dims have the input's aspect
ratio, else as channels-last ``[B, h, w, C]`` (permuted) when dims 1 and 2 do; when both read well (e.g.
``[B, 8, 8, 8]``) channels-first wins, so convolutional layers are never permuted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Reshape", "apply_reshape", "check_reshape", "grid_size", "to_feature_map"]

Reshape = str | Callable[[Tensor], Tensor] | None
"""``"auto"`` (:func:`to_feature_map`), ``None`` (use the activation as-is) or ``callable(tensor) -> [B, K, h, w]``."""

_ASPECT_TOLERANCE = math.log(1.5)
_MAX_PREFIX = 8


def check_reshape(reshape: Reshape) -> Reshape:
    """Validate a ``reshape`` argument; returns it unchanged.

    Raises:
        ValueError: If it is neither ``"auto"``, ``None`` nor a callable.
    """
    if reshape is None or reshape == "auto" or (callable(reshape) and not isinstance(reshape, str)):
        return reshape
    raise ValueError(
        f"reshape must be 'auto', None or a callable mapping a layer output to [B, K, h, w], got {reshape!r}."
    )


def _aspect_error(h: int, w: int, size: tuple[int, int]) -> float:
    return abs(math.log((h / w) / (size[0] / size[1])))


def _token_grid(n: int, size: tuple[int, int]) -> tuple[int, int, float]:
    """The factorisation ``(h, w)`` of ``n`` closest to the aspect ratio of ``size``, with its log-ratio error."""
    best = (n, 1, math.inf)
    for h in range(1, n + 1):
        if n % h == 0:
            err = _aspect_error(h, n // h, size)
            if err < best[2]:
                best = (h, n // h, err)
    return best


def grid_size(shape: tuple[int, ...], size: tuple[int, int], prefix: int | None = None) -> tuple[int, int] | None:
    """The spatial grid ``(h, w)`` that :func:`to_feature_map` reads in an output of ``shape``, or ``None``.

    Args:
        shape: A layer output's shape, ``[B, T, D]`` or ``[B, *, *, *]``.
        size: The input's ``(H, W)``.
        prefix: The number of prefix tokens the model declares, tried first; ``None`` to infer it.

    Example:
        >>> grid_size((1, 197, 768), (224, 224)), grid_size((1, 8, 8, 96), (32, 32)), grid_size((1, 5), (8, 8))
        ((14, 14), (8, 8), None)
        >>> grid_size((1, 1 + 4 + 16, 384), (64, 64))  # class token, 4 registers, 4x4 patches (not 1 + 4x5)
        (4, 4)
    """
    if len(shape) == 3:
        tokens = shape[1]
        declared = [prefix] if prefix is not None and 0 <= prefix < tokens else []
        inferred = range(min(_MAX_PREFIX, (tokens - 1) // 2) + 1)  # fewer prefix tokens than patches
        for square in (True, False):
            for p in [*declared, *inferred]:
                h, w, err = _token_grid(tokens - p, size)
                if err <= _ASPECT_TOLERANCE and (not square or size[0] // h == size[1] // w):
                    return h, w
        return None
    if len(shape) == 4:
        for h, w in ((shape[2], shape[3]), (shape[1], shape[2])):
            if h <= size[0] and w <= size[1] and _aspect_error(h, w, size) <= _ASPECT_TOLERANCE:
                return h, w
    return None


def to_feature_map(x: Tensor, size: tuple[int, int], prefix: int | None = None) -> Tensor:
    """A layer output as a feature map ``[B, K, h, w]`` for an input of spatial ``size = (H, W)``.

    Tokens ``[B, P + h*w, D]`` -> ``[B, D, h, w]`` (prefix tokens dropped); channels-last ``[B, h, w, C]`` ->
    ``[B, C, h, w]``; channels-first ``[B, K, h, w]`` and anything unrecognised are returned as they are (the CAM's
    shape check then names the layer). ``prefix``: the model's declared prefix-token count (see :func:`grid_size`).

    Example:
        >>> vit = torch.zeros(2, 1 + 4 * 8, 16)  # class token + a 4x8 grid of patches, 16-dim
        >>> to_feature_map(vit, (64, 128)).shape
        torch.Size([2, 16, 4, 8])
        >>> to_feature_map(torch.zeros(2, 7, 7, 96), (224, 224)).shape  # Swin, channels-last
        torch.Size([2, 96, 7, 7])
    """
    if x.ndim == 3:
        grid = grid_size(tuple(x.shape), size, prefix)
        if grid is None:
            return x
        h, w = grid
        patches = x[:, x.shape[1] - h * w :]  # [B,h*w,D], prefix tokens dropped
        return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)  # [B,D,h,w]
    if x.ndim == 4:
        grid = grid_size(tuple(x.shape), size)
        if grid is not None and grid == (x.shape[1], x.shape[2]) and grid != (x.shape[2], x.shape[3]):
            return x.permute(0, 3, 1, 2)  # [B,h,w,C] -> [B,C,h,w]
    return x


def apply_reshape(reshape: Reshape, x: Tensor, size: tuple[int, int], prefix: int | None = None) -> Tensor:
    """Apply a ``reshape`` option (see :data:`Reshape`) to an activation or gradient (``prefix``: for ``"auto"``)."""
    if reshape is None:
        return x
    if isinstance(reshape, str):
        return to_feature_map(x, size, prefix)
    out = reshape(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"reshape must return a Tensor [B, K, h, w], got {type(out).__name__}.")
    return out
