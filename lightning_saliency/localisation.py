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
    """Threshold each map into a bool mask ``[B, H, W]``.

    * ``"quantile"``: pixels at or above the map's ``quantile`` (0.8 keeps about the top 20 %);
    * ``"otsu"``: Otsu's threshold (the split of a ``bins``-bin histogram over the map's own range that maximises
      the between-class variance); pixels in the bins above it are kept.

    Pixels at the map's minimum value are never kept, so a constant map (no evidence) gives an empty mask, and ties
    at the threshold are all kept. NaNs count as 0.

    Args:
        maps: ``[B, 1, H, W]`` or ``[B, H, W]`` saliency, any real range.
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
    flat = _maps(maps).flatten(1)  # [B,HW]
    b, (h, w) = flat.shape[0], _maps(maps).shape[-2:]
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
    return (keep & (flat > lo)).view(b, h, w)


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


def largest_component(mask: Tensor, connectivity: Literal[4, 8] = 8) -> Tensor:
    """Keep only the largest connected component of each mask ``[B, H, W]``.

    Components are found in torch by label propagation: every pixel starts with its own label and takes the
    largest label among its neighbours inside the mask (a 3 x 3 max-pool for 8-connectivity, the 4 direct
    neighbours for 4-connectivity), then the label of the pixel its label names (pointer jumping, which cuts the
    rounds for long, winding components), until nothing changes. Among equally large components the one that starts
    first in raster order wins. An empty mask stays empty.

    Args:
        mask: ``[B, H, W]`` bool (or 0/1) masks.
        connectivity: 8 (diagonal neighbours connect, the default) or 4.

    Returns:
        ``[B, H, W]`` bool, on the mask's device.

    Raises:
        ValueError: If the mask is not ``[B, H, W]`` or ``connectivity`` is not 4 or 8.

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
    if connectivity not in (4, 8) or isinstance(connectivity, bool):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}.")
    b, h, w = mask.shape
    n = h * w
    if mask.numel() == 0:
        return mask.clone()
    dtype = torch.float32 if n < 2**24 else torch.float64  # labels are exact integers in the float type
    # Label = n - raster index, so the label a component converges to (its maximum) marks its first pixel.
    start = (n - torch.arange(n, device=mask.device, dtype=dtype)).view(1, 1, h, w)
    inside = mask[:, None].to(dtype)  # [B,1,H,W]
    labels = start * inside  # [B,1,H,W], 0 outside
    while True:
        grown = _neighbour_max(labels, connectivity) * inside
        # Pointer jumping: label L names pixel n - L of the same component; take that pixel's (larger) label.
        pointers = (n - grown).clamp(0, n - 1).long().view(b, n)
        grown = torch.maximum(grown, grown.view(b, n).gather(1, pointers).view(b, 1, h, w) * inside)
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
    return ((flat == best) & (best > 0)).view(b, h, w)


def _neighbour_max(labels: Tensor, connectivity: int) -> Tensor:
    if connectivity == 8:
        return F.max_pool2d(labels, 3, stride=1, padding=1)
    padded = F.pad(labels, (1, 1, 1, 1))  # zero padding: labels are >= 0
    return torch.stack(
        [
            labels,
            padded[..., :-2, 1:-1],  # up
            padded[..., 2:, 1:-1],  # down
            padded[..., 1:-1, :-2],  # left
            padded[..., 1:-1, 2:],  # right
        ]
    ).amax(0)


def mask_to_box(mask: Tensor) -> Tensor:
    """The tight bounding box of each mask: ``[B, 4]`` float ``(x1, y1, x2, y2)``, half-open, ``x`` = column.

    An empty mask gives ``(0, 0, 0, 0)`` (zero area: its IoU with any box is 0).

    Args:
        mask: ``[B, H, W]`` bool (or 0/1) masks.

    Returns:
        ``[B, 4]`` float32, on the mask's device.

    Raises:
        ValueError: If the mask is not ``[B, H, W]``.

    Example:
        >>> mask = torch.zeros(2, 4, 5, dtype=torch.bool)
        >>> mask[0, 1:3, 2:5] = True
        >>> mask_to_box(mask)
        tensor([[2., 1., 5., 3.],
                [0., 0., 0., 0.]])
    """
    mask = _masks(mask, "mask")
    b, h, w = mask.shape
    rows, cols = mask.any(2), mask.any(1)  # [B,H], [B,W]
    r = torch.arange(h, device=mask.device)
    c = torch.arange(w, device=mask.device)
    y1 = torch.where(rows, r, h).amin(1, keepdim=True) if h else torch.zeros(b, 1, dtype=torch.long)
    y2 = torch.where(rows, r + 1, 0).amax(1, keepdim=True) if h else torch.zeros(b, 1, dtype=torch.long)
    x1 = torch.where(cols, c, w).amin(1, keepdim=True) if w else torch.zeros(b, 1, dtype=torch.long)
    x2 = torch.where(cols, c + 1, 0).amax(1, keepdim=True) if w else torch.zeros(b, 1, dtype=torch.long)
    boxes = torch.cat([x1, y1, x2, y2], 1).float()  # [B,4]
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
    if boxes_a.ndim != 2 or boxes_a.shape[-1] != 4 or boxes_a.shape != boxes_b.shape:
        raise ValueError(
            f"box_iou expects two [B, 4] tensors of boxes (x1, y1, x2, y2), got {tuple(boxes_a.shape)} and "
            f"{tuple(boxes_b.shape)}."
        )
    a, b = boxes_a.float(), boxes_b.to(device=boxes_a.device, dtype=torch.float32)
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
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


def _maps(maps: Tensor) -> Tensor:
    """``[B, H, W]`` float32, NaN-free, from ``[B, 1, H, W]`` or ``[B, H, W]``."""
    if not isinstance(maps, Tensor) or not (maps.ndim == 3 or (maps.ndim == 4 and maps.shape[1] == 1)):
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a Tensor [B, 1, H, W] or [B, H, W], got {got}.")
    maps = maps[:, 0] if maps.ndim == 4 else maps
    return torch.nan_to_num(maps.detach().float(), nan=0.0)


def _masks(mask: Tensor, arg: str) -> Tensor:
    """``[B, H, W]`` bool, from bool or 0/1 ``[B, H, W]`` (or ``[B, 1, H, W]``)."""
    if isinstance(mask, Tensor) and mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if not isinstance(mask, Tensor) or mask.ndim != 3:
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"{arg} must be a bool Tensor [B, H, W], got {got}.")
    return mask if mask.dtype == torch.bool else mask != 0


def _boxes(boxes: Tensor, b: int, arg: str) -> Tensor:
    if not isinstance(boxes, Tensor) or tuple(boxes.shape) != (b, 4):
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"{arg} must be a Tensor [B={b}, 4] of (x1, y1, x2, y2), got {got}.")
    return boxes.detach().float().cpu()
