"""Weakly supervised localisation from saliency maps (Simonyan, Vedaldi & Zisserman 2014, section 6): the geometry.

A map is thresholded into a mask (:func:`saliency_to_mask`: a quantile, or Otsu's threshold), the largest connected
blob is kept (:func:`largest_component`) and its bounding box taken (:func:`mask_to_box`); :func:`saliency_to_box`
chains the three. :func:`box_iou` and :func:`mask_iou` score the result against the ground truth;
:func:`lightning_saliency.render.draw_localisation` shows it (drawing lives with the rendering). The paper seeds
GraphCut with the 95th/30th saliency percentiles; thresholding plus the largest component (as CAM, Zhou et al.
2016, does) is the simpler, dependency-free variant.

Conventions, shared with :mod:`lightning_saliency.metrics` and :class:`lightning_saliency.probe.Probe`:

* maps are ``[B, 1, H, W]`` (``[B, H, W]`` accepted), masks ``[B, H, W]`` bool;
* boxes are ``[B, 4]`` float ``(x1, y1, x2, y2)`` in pixels, ``x`` the column and ``y`` the row, half-open: pixel
  ``(row, col)`` is inside when ``x1 <= col < x2`` and ``y1 <= row < y2`` (``(0, 0, W, H)`` is the whole image);
* an empty mask has the empty box ``(0, 0, 0, 0)``; an IoU whose union is empty is 0.

Everything is pure torch, batched, and runs on the maps' device.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "box_iou",
    "largest_component",
    "mask_iou",
    "mask_to_box",
    "saliency_to_box",
    "saliency_to_mask",
]

ThresholdMethod = Literal["quantile", "otsu"]


def saliency_to_mask(
    maps: Tensor, method: ThresholdMethod = "quantile", *, quantile: float = 0.8, bins: int = 256
) -> Tensor:
    """Threshold each map into a bool mask ``[B, H, W]`` (``[B, D, H, W]`` for volumes).

    * ``"quantile"``: pixels at or above the map's ``quantile`` (0.8 keeps about the top 20 %);
    * ``"otsu"``: Otsu's threshold (the split of a ``bins``-bin histogram over the map's own range that maximises
      the between-class variance); pixels in the bins above it are kept.

    Pixels at the map's minimum value are never kept, so a constant map (no evidence) gives an empty mask, and ties
    at the threshold are all kept. NaNs count as 0.

    Args:
        maps: ``[B, 1, H, W]`` or ``[B, H, W]`` saliency (``[B, 1, D, H, W]`` for volumes), any real range.
        method: ``"quantile"`` or ``"otsu"``.
        quantile: In ``[0, 1)``, for ``method="quantile"``.
        bins: Histogram bins (>= 2) for ``method="otsu"``.

    Returns:
        ``[B, H, W]`` bool, on the maps' device.

    Raises:
        ValueError: If an argument is out of range or the maps have the wrong shape.

    Example:
        >>> maps = torch.tensor([[[0.0, 0.1, 0.2], [0.1, 0.9, 1.0]]])
        >>> saliency_to_mask(maps, "otsu").int()
        tensor([[[0, 0, 0],
                 [0, 1, 1]]], dtype=torch.int32)
        >>> saliency_to_mask(maps, quantile=0.5).int()
        tensor([[[0, 0, 1],
                 [0, 1, 1]]], dtype=torch.int32)
    """
    values = _maps(maps)  # [B,H,W] or [B,D,H,W]
    flat = values.flatten(1)  # [B,HW]
    b, shape = flat.shape[0], values.shape[1:]
    lo = flat.min(1, keepdim=True).values if flat.numel() else flat[:, :1]  # [B,1]
    if method == "quantile":
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 <= quantile < 1:
            raise ValueError(f"quantile must be a float in [0, 1), got {quantile!r}.")
        threshold = torch.quantile(flat, float(quantile), dim=1, keepdim=True)  # [B,1]
        keep = flat >= threshold
    elif method == "otsu":
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an int >= 2, got {bins!r}.")
        keep = _otsu(flat, lo, bins)
    else:
        raise ValueError(f"method must be 'quantile' or 'otsu', got {method!r}.")
    return (keep & (flat > lo)).view(b, *shape)


def _otsu(flat: Tensor, lo: Tensor, bins: int) -> Tensor:
    """``[B, HW]`` bool: the pixels whose histogram bin lies above Otsu's split."""
    hi = flat.max(1, keepdim=True).values  # [B,1]
    span = (hi - lo).clamp_min(torch.finfo(flat.dtype).tiny)
    idx = ((flat - lo) / span * bins).floor().clamp(0, bins - 1).long()  # [B,HW]
    hist = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=flat.device)
    hist.scatter_add_(1, idx, torch.ones_like(flat, dtype=torch.float64))  # [B,bins]
    p = hist / hist.sum(1, keepdim=True).clamp_min(1)
    centres = torch.arange(bins, dtype=torch.float64, device=flat.device) + 0.5  # bin units: the scale cancels
    omega = p.cumsum(1)  # [B,bins] weight of the lower class when splitting after bin k
    mu = (p * centres).cumsum(1)  # [B,bins]
    mu_total = mu[:, -1:]
    between = (mu_total * omega - mu) ** 2 / (omega * (1 - omega))  # [B,bins]
    valid = (omega > 1e-12) & (1 - omega > 1e-12)
    split = torch.where(valid, between, torch.full_like(between, -1.0)).argmax(1, keepdim=True)  # [B,1]
    return idx > split


def largest_component(mask: Tensor, connectivity: Literal[4, 8, 6, 26] = 8) -> Tensor:
    """Keep only the largest connected component of each mask ``[B, H, W]`` (or volume mask ``[B, D, H, W]``).

    Components are found in torch by label propagation: every pixel starts with its own label and takes the
    largest label among its neighbours inside the mask (a 3 x 3 max-pool for 8-connectivity, the 4 direct
    neighbours for 4-connectivity), then the label of the pixel its label names (pointer jumping, which cuts the
    rounds for long, winding components), until nothing changes. Among equally large components the one that starts
    first in raster order wins. An empty mask stays empty.

    Args:
        mask: ``[B, H, W]`` bool (or 0/1) masks, or ``[B, D, H, W]``.
        connectivity: 8 (diagonal neighbours connect, the default) or 4 (only the direct ones); for volumes 26 (the
            default; 8 means it too) or 6 (4 means it too).

    Returns:
        ``[B, H, W]`` bool, on the mask's device.

    Raises:
        ValueError: If the mask is not ``[B, H, W]`` (``[B, D, H, W]``) or ``connectivity`` is not 4, 8, 6 or 26.

    Example:
        >>> mask = torch.tensor([[[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]]], dtype=torch.bool)
        >>> largest_component(mask, connectivity=4).int()
        tensor([[[0, 0, 0, 1],
                 [0, 0, 0, 1],
                 [0, 0, 0, 1]]], dtype=torch.int32)
        >>> largest_component(mask, connectivity=8).int()[0, :, 0].tolist()  # 1 + 1 diagonal vs 3: still the line
        [0, 0, 0]
    """
    mask = _masks(mask, "mask")
    allowed = (4, 8) if mask.ndim == 3 else (4, 8, 6, 26)
    if connectivity not in allowed or isinstance(connectivity, bool):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r} (6 or 26 for volumes).")
    full = connectivity in (8, 26)
    b, shape = mask.shape[0], tuple(mask.shape[1:])
    n = math.prod(shape)
    if mask.numel() == 0:
        return mask.clone()
    dtype = torch.float32 if n < 2**24 else torch.float64  # labels are exact integers in the float type
    # Label = n - raster index, so the label a component converges to (its maximum) marks its first pixel.
    start = (n - torch.arange(n, device=mask.device, dtype=dtype)).view(1, 1, *shape)
    inside = mask[:, None].to(dtype)  # [B,1,H,W]
    labels = start * inside  # [B,1,H,W], 0 outside
    while True:
        grown = _neighbour_max(labels, full) * inside
        # Pointer jumping: label L names pixel n - L of the same component; take that pixel's (larger) label.
        pointers = (n - grown).clamp(0, n - 1).long().view(b, n)
        grown = torch.maximum(grown, grown.view(b, n).gather(1, pointers).view(b, 1, *shape) * inside)
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.flatten(1).long()  # [B,HW], values in [0, n]
    counts = torch.zeros(b, n + 1, dtype=torch.long, device=mask.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, 0] = 0  # background
    # largest count first, ties to the larger label (the earlier start)
    score = counts * (n + 1) + torch.arange(n + 1, device=mask.device)
    best = score.argmax(1, keepdim=True)  # [B,1]
    return ((flat == best) & (best > 0)).view(b, *shape)


def _neighbour_max(labels: Tensor, full: bool) -> Tensor:
    """The largest label among each pixel and its neighbours: all of them (``full``), or the face neighbours."""
    if full:
        pool = F.max_pool2d if labels.ndim == 4 else F.max_pool3d
        return pool(labels, 3, stride=1, padding=1)
    dims = labels.ndim - 2
    padded = F.pad(labels, (1, 1) * dims)  # zero padding: labels are >= 0
    shifted = [labels]
    for axis in range(dims):  # the two face neighbours along each axis
        for lo, hi in ((None, -2), (2, None)):
            index: list[slice] = [slice(1, -1)] * dims
            index[axis] = slice(lo, hi)
            shifted.append(padded[(slice(None), slice(None), *index)])
    return torch.stack(shifted).amax(0)


def mask_to_box(mask: Tensor) -> Tensor:
    """The tight bounding box of each mask: ``[B, 4]`` float ``(x1, y1, x2, y2)``, half-open, ``x`` = column.

    For volume masks ``[B, D, H, W]``: ``[B, 6]`` ``(x1, y1, z1, x2, y2, z2)``, ``z`` the depth. An empty mask gives
    the all-zero box (zero volume: its IoU with any box is 0).

    Args:
        mask: ``[B, H, W]`` bool (or 0/1) masks, or ``[B, D, H, W]``.

    Returns:
        ``[B, 4]`` (``[B, 6]``) float32, on the mask's device.

    Raises:
        ValueError: If the mask is not ``[B, H, W]`` or ``[B, D, H, W]``.

    Example:
        >>> mask = torch.zeros(2, 4, 5, dtype=torch.bool)
        >>> mask[0, 1:3, 2:5] = True
        >>> mask_to_box(mask)
        tensor([[2., 1., 5., 3.],
                [0., 0., 0., 0.]])
    """
    mask = _masks(mask, "mask")
    b = mask.shape[0]
    axes = list(range(mask.ndim - 1, 0, -1))  # x (the last axis, columns) first, then y, then z
    starts, stops = [], []
    for axis in axes:
        size = mask.shape[axis]
        present = mask.any(dim=[d for d in range(1, mask.ndim) if d != axis])  # [B,size]
        index = torch.arange(size, device=mask.device)
        zero = torch.zeros(b, 1, dtype=torch.long, device=mask.device)
        starts.append(torch.where(present, index, size).amin(1, keepdim=True) if size else zero)
        stops.append(torch.where(present, index + 1, 0).amax(1, keepdim=True) if size else zero)
    boxes = torch.cat(starts + stops, 1).float()  # [B,4] (x1, y1, x2, y2) or [B,6]
    empty = ~mask.flatten(1).any(1)  # [B]
    return boxes.masked_fill(empty[:, None], 0.0)


def saliency_to_box(
    maps: Tensor,
    method: ThresholdMethod = "quantile",
    *,
    quantile: float = 0.8,
    bins: int = 256,
    connectivity: Literal[4, 8] = 8,
) -> Tensor:
    """Maps ``[B, 1, H, W]`` -> boxes ``[B, 4]``: threshold, keep the largest component, take its bounding box.

    See :func:`saliency_to_mask`, :func:`largest_component` and :func:`mask_to_box` for the arguments.

    Example:
        >>> maps = torch.zeros(1, 1, 6, 6)
        >>> maps[0, 0, 1:3, 2:5] = 1.0
        >>> maps[0, 0, 5, 0] = 0.5
        >>> saliency_to_box(maps, "otsu")
        tensor([[2., 1., 5., 3.]])
    """
    mask = saliency_to_mask(maps, method, quantile=quantile, bins=bins)
    return mask_to_box(largest_component(mask, connectivity))


def box_iou(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Intersection over union of matching boxes, ``[B, 4]`` x ``[B, 4]`` -> ``[B]`` float32.

    Boxes are ``(x1, y1, x2, y2)``; boxes with ``x2 <= x1`` or ``y2 <= y1`` have zero area. The IoU of two empty
    boxes (empty union) is 0.

    Raises:
        ValueError: If the shapes are not both ``[B, 4]``.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 4, 4], [0, 0, 0, 0]]), torch.tensor([[2.0, 0, 6, 4], [0, 0, 0, 0]]))
        tensor([0.3333, 0.0000])
    """
    if boxes_a.ndim != 2 or boxes_a.shape[-1] not in (4, 6) or boxes_a.shape != boxes_b.shape:
        raise ValueError(
            f"box_iou expects two [B, 4] tensors of boxes (x1, y1, x2, y2) (or [B, 6] for volumes), got "
            f"{tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}."
        )
    a, b = boxes_a.float(), boxes_b.to(device=boxes_a.device, dtype=torch.float32)
    k = a.shape[1] // 2  # axes
    area_a = (a[:, k:] - a[:, :k]).clamp_min(0).prod(1)
    area_b = (b[:, k:] - b[:, :k]).clamp_min(0).prod(1)
    inter = (torch.minimum(a[:, k:], b[:, k:]) - torch.maximum(a[:, :k], b[:, :k])).clamp_min(0).prod(1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


def mask_iou(masks_a: Tensor, masks_b: Tensor) -> Tensor:
    """Intersection over union of matching masks, ``[B, H, W]`` x ``[B, H, W]`` -> ``[B]`` float32.

    The IoU of two empty masks (empty union) is 0.

    Raises:
        ValueError: If the shapes differ or are not ``[B, H, W]``.

    Example:
        >>> a = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.bool)
        >>> mask_iou(a, torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool))
        tensor([0.3333])
    """
    a, b = _masks(masks_a, "masks_a"), _masks(masks_b, "masks_b")
    if a.shape != b.shape:
        raise ValueError(f"mask_iou expects masks of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    b = b.to(a.device)
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))


# ---------------------------------------------------------------------- checks


def _squeezed(x: Tensor) -> Tensor:
    """``[B, *spatial]`` from ``[B, 1, *spatial]`` (a channel of one) or ``[B, *spatial]``."""
    return x[:, 0] if x.ndim in (4, 5) and x.shape[1] == 1 else x


def _maps(maps: Tensor) -> Tensor:
    """``[B, H, W]`` (``[B, D, H, W]``) float32, NaN-free, from ``[B, 1, H, W]``, ``[B, H, W]``, ``[B, 1, D, H, W]``."""
    ok = isinstance(maps, Tensor) and (maps.ndim == 3 or (maps.ndim in (4, 5) and maps.shape[1] == 1))
    if not ok:
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a Tensor [B, 1, H, W] or [B, H, W], got {got} (volumes: [B, 1, D, H, W]).")
    return torch.nan_to_num(_squeezed(maps).detach().float(), nan=0.0)


def _masks(mask: Tensor, arg: str) -> Tensor:
    """``[B, H, W]`` (``[B, D, H, W]``) bool, from bool or 0/1 masks (a channel of one accepted)."""
    if not isinstance(mask, Tensor) or _squeezed(mask).ndim not in (3, 4):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{arg} must be a bool Tensor [B, H, W], got {got} (volumes: [B, D, H, W]).")
    mask = _squeezed(mask)
    return mask if mask.dtype == torch.bool else mask != 0


def _boxes(boxes: Tensor, b: int, arg: str) -> Tensor:
    if not isinstance(boxes, Tensor) or tuple(boxes.shape) != (b, 4):
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{arg} must be a Tensor [B={b}, 4] of (x1, y1, x2, y2), got {got}.")
    return boxes.detach().float().cpu()
