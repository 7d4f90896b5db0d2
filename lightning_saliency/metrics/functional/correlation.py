"""Correlations: Spearman's rho between maps (torch, average ranks for ties), Pearson per row, map stability."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_saliency.metrics.functional._common import _check_maps

__all__ = ["map_stability", "pearson", "spearman"]


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks ``[B, N]`` float32 along dim 1, tied values sharing their average rank (as ``scipy.stats.rankdata``).

    0-based: each value's rank is the mean of the positions its ties occupy in sorted order.
    """
    ordered = torch.sort(values, dim=1).values  # [B,N]
    first = torch.searchsorted(ordered, values, side="left")  # [B,N] position of the first tie
    last = torch.searchsorted(ordered, values, side="right")  # [B,N] one past the last tie
    return (first + last - 1).float() / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row between ``a`` and ``b`` (flattened beyond the batch dimension).

    Pearson correlation of the average ranks (ties share their mean rank, as ``scipy.stats.spearmanr``). Where
    either row is constant (no order: e.g. an all-zero map) the correlation is undefined; it is returned as 0,
    never NaN.

    Args:
        a: ``[B, ...]`` values.
        b: ``[B, ...]`` values, same number of elements per row as ``a``.

    Returns:
        ``[B]`` float32 in [-1, 1].

    Raises:
        ValueError: If the shapes differ.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
        >>> spearman(a, torch.tensor([[10.0, 20.0, 30.0], [3.0, 3.0, 1.0]]))
        tensor([ 1.0000, -0.8660])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            f"spearman needs two Tensors of the same shape [B, ...], got {getattr(a, 'shape', type(a))} and "
            f"{getattr(b, 'shape', type(b))}."
        )
    ra = _average_ranks(torch.nan_to_num(a.detach().float()).flatten(1))  # [B,N]
    rb = _average_ranks(torch.nan_to_num(b.detach().float()).flatten(1))  # [B,N]
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()  # [B]
    rho = (ra * rb).sum(1) / denom.clamp_min(1e-12)
    return torch.where(denom > 0, rho.clamp(-1.0, 1.0), torch.zeros_like(rho))


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation per row of ``a`` and ``b`` ``[B, N]``, in float64 (as ``scipy.stats.pearsonr``).

    Where either row is constant the correlation is undefined (scipy: NaN); it is returned as 0, never NaN, as
    :func:`~lightning_saliency.metrics.functional.spearman` does.

    Example:
        >>> pearson(torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), torch.tensor([[2.0, 4.0, 7.0], [1.0, 2.0, 3.0]]))
        tensor([0.9934, 0.0000])
    """
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    denom = (a.square().sum(1) * b.square().sum(1)).sqrt()  # [B]
    r = (a * b).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, r.clamp(-1.0, 1.0), torch.zeros_like(r)).float()


def map_stability(prev_maps: Tensor, maps: Tensor) -> Tensor:
    """Stability of each image's map across epochs: Spearman rho between its previous and current map.

    Near 1: the map's pixel ordering barely changed; near 0: unrelated maps. A constant map on either side
    scores 0 (see :func:`spearman`). Average with :class:`~lightning_saliency.metrics.MapStability`.

    Args:
        prev_maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) maps of the same images at the previous epoch.
        maps: Maps now, same shape.

    Returns:
        ``[B]`` float32 in [-1, 1].

    Example:
        >>> m = torch.rand(2, 1, 4, 4)
        >>> map_stability(m, 2 * m + 1)
        tensor([1., 1.])
    """
    prev_maps, maps = _check_maps(prev_maps, name="prev_maps"), _check_maps(maps)
    if prev_maps.shape != maps.shape:
        raise ValueError(
            f"prev_maps and maps must have the same shape, got {tuple(prev_maps.shape)} and {tuple(maps.shape)}."
        )
    return spearman(prev_maps, maps)
