"""Localisation scores: pointing game and energy-based pointing game, against boxes or masks."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_saliency.localisation import box_iou, largest_component, mask_iou, mask_to_box, saliency_to_mask
from lightning_saliency.metrics.functional._common import _check_maps

__all__ = ["energy_pointing_game", "pointing_game", "region_masks", "localisation_iou"]


def region_masks(
    shape: tuple[int, ...], *, boxes: Tensor | None = None, masks: Tensor | None = None, device: torch.device
) -> Tensor:
    """Ground-truth regions as bool masks ``[B, H, W]`` (``[B, D, H, W]``), from boxes or masks (exactly one).

    Box convention: ``boxes [B, 4]`` are ``(x1, y1, x2, y2)`` in pixel coordinates of the map, ``x`` the column
    and ``y`` the row, half-open: pixel ``(row, col)`` is inside when ``x1 <= col < x2`` and ``y1 <= row < y2``
    (so ``(0, 0, W, H)`` is the whole image). For volumes ``boxes [B, 6]`` are ``(x1, y1, z1, x2, y2, z2)``, ``z``
    the depth. Coordinates outside the image are clipped.

    Args:
        shape: ``(B, H, W)``, or ``(B, D, H, W)``.
        boxes: ``[B, 4]`` (``[B, 6]``) boxes, or ``None``.
        masks: ``[B, H, W]`` (or ``[B, 1, H, W]``; ``[B, D, H, W]``) bool/0-1 masks, or ``None``.
        device: Where the result goes.

    Returns:
        ``[B, H, W]`` (``[B, D, H, W]``) bool.

    Raises:
        ValueError: Unless exactly one of ``boxes``/``masks`` is given with the right shape.

    Example:
        >>> region_masks((1, 2, 3), boxes=torch.tensor([[1, 0, 3, 1]]), device=torch.device("cpu")).int()
        tensor([[[0, 1, 1],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    b, spatial = shape[0], tuple(shape[1:])
    corners = 2 * len(spatial)
    if (boxes is None) == (masks is None):
        raise ValueError(
            f"Pass exactly one of boxes [B, {corners}] or masks [B, *spatial] for localisation scores, got "
            f"{'both' if boxes is not None else 'neither'}."
            if corners != 4
            else "Pass exactly one of boxes [B, 4] (x1, y1, x2, y2) or masks [B, H, W] for localisation scores."
        )
    if masks is not None:
        if masks.ndim == len(spatial) + 2 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if tuple(masks.shape) != (b, *spatial):
            want = "[B, H, W]" if len(spatial) == 2 else "[B, D, H, W]"
            raise ValueError(f"masks must have shape {want} = {[b, *spatial]}, got {tuple(masks.shape)}.")
        return masks.to(device=device) != 0
    assert boxes is not None
    if tuple(boxes.shape) != (b, corners):
        want = "(x1, y1, x2, y2)" if corners == 4 else "(x1, y1, z1, x2, y2, z2)"
        raise ValueError(
            f"boxes must have shape [B, {corners}] = [{b}, {corners}] as {want}, got {tuple(boxes.shape)}."
        )
    boxes = boxes.to(device=device, dtype=torch.float32)
    k = len(spatial)
    inside = torch.ones((b, *spatial), dtype=torch.bool, device=device)
    for j, axis in enumerate(range(k - 1, -1, -1)):  # box coordinate j (x, y, z) runs along this spatial axis
        index = torch.arange(spatial[axis], device=device, dtype=torch.float32)  # [size]
        within = (index[None] >= boxes[:, j : j + 1]) & (index[None] < boxes[:, k + j : k + j + 1])  # [B,size]
        view = [b] + [1] * k
        view[axis + 1] = spatial[axis]
        inside &= within.view(view)
    return inside  # [B,H,W]


def _regions(maps: Tensor, boxes: Tensor | None, masks: Tensor | None) -> tuple[Tensor, Tensor]:
    maps = _check_maps(maps, volumes=_is_volume(maps, boxes, masks))[:, 0]  # [B,H,W] or [B,D,H,W]
    return maps, region_masks(tuple(maps.shape), boxes=boxes, masks=masks, device=maps.device)


def _is_volume(maps: Tensor, boxes: Tensor | None, masks: Tensor | None) -> bool:
    """Whether ``maps`` are volume maps ``[B, 1, D, H, W]`` (or ``[B, D, H, W]`` beside 6-number boxes/4-D masks)."""
    if isinstance(maps, Tensor) and maps.ndim == 5:
        return True
    if isinstance(boxes, Tensor) and boxes.ndim == 2 and boxes.shape[1] == 6:
        return True
    return (
        isinstance(masks, Tensor)
        and isinstance(maps, Tensor)
        and maps.ndim == 4
        and masks.ndim == 4
        and (maps.shape[1] != 1)
    )


def pointing_game(
    maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None, *, tolerance: float = 0.0
) -> Tensor:
    """Pointing game per image (Zhang et al. 2016; as used by Score-CAM): is the map's maximum in the region?

    A hit is 1 when the maximum point (the first in raster order if several pixels share the maximum) lies
    within ``tolerance`` pixels (Euclidean) of a region pixel. Zhang et al. use 15 px at ImageNet resolution; the
    default 0 requires the point itself to be inside. A constant map (including all zeros) points nowhere and is a
    miss, as is an empty region. The score is the mean hit rate (higher is better).

    Args:
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)``, see :func:`region_masks` for the convention.
        masks: ``[B, H, W]`` bool regions (instead of boxes).
        tolerance: Radius in pixels around the maximum.

    Returns:
        ``[B]`` float32 hits, 0 or 1.

    Example:
        >>> maps = torch.zeros(2, 1, 4, 4)
        >>> maps[0, 0, 1, 2] = 1.0  # row 1, column 2
        >>> maps[1, 0, 3, 3] = 1.0
        >>> pointing_game(maps, boxes=torch.tensor([[2, 0, 4, 2], [2, 0, 4, 2]]))
        tensor([1., 0.])
        >>> pointing_game(maps, boxes=torch.tensor([[2, 0, 4, 2], [2, 0, 4, 2]]), tolerance=2)
        tensor([1., 1.])
    """
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative number of pixels, got {tolerance!r}.")
    maps, regions = _regions(maps, boxes, masks)
    b, spatial = maps.shape[0], maps.shape[1:]
    flat = maps.reshape(b, -1)  # [B,HW]
    peak = flat.argmax(1)  # [B] first maximum in raster order
    coords = torch.stack(torch.unravel_index(peak, tuple(spatial)), 1).float()  # [B,k] (row, col) or (z, y, x)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, device=maps.device) for n in spatial], indexing="ij"))
    dist2 = ((grid[None].float() - coords.view(b, -1, *([1] * len(spatial)))) ** 2).sum(1)  # [B,H,W]
    hit = (regions & (dist2 <= float(tolerance) ** 2)).flatten(1).any(1)  # [B]
    informative = flat.max(1).values > flat.min(1).values  # [B]
    return (hit & informative).float()


def energy_pointing_game(maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> Tensor:
    """Energy-based pointing game per image (Wang et al. 2020, Score-CAM): share of the map's mass in the region.

    ``sum(map inside) / sum(map)``; negative map values count as 0; an all-zero map scores 0 (never NaN). This is
    Score-CAM's ``energy_bbox / energy_whole`` (with ``x`` the column, see :func:`region_masks`) and Quantus'
    ``AttributionLocalisation`` ratio. Higher is better.

    Args:
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)``.
        masks: ``[B, H, W]`` bool regions (instead of boxes).

    Returns:
        ``[B]`` float32 in [0, 1].

    Example:
        >>> energy_pointing_game(torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]]), boxes=torch.tensor([[1, 0, 2, 1]] * 2))
        tensor([0.7500, 0.0000])
    """
    maps, regions = _regions(maps, boxes, masks)
    maps = maps.clamp_min(0)
    inside = (maps * regions).flatten(1).sum(1)  # [B]
    total = maps.flatten(1).sum(1)  # [B]
    return torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))


def localisation_iou(maps: Tensor, boxes: Tensor | None = None, masks: Tensor | None = None) -> Tensor:
    """Weakly-supervised localisation quality per image (Simonyan et al. 2014, section 6), higher is better.

    Each map is thresholded with Otsu's method and its largest 8-connected component kept
    (:mod:`lightning_saliency.localisation`); the score is the IoU of that component's bounding box with
    ``boxes`` (``(x1, y1, x2, y2)``, x = column, half-open), or of the component itself with ``masks`` when
    masks are given. An empty prediction scores 0. The paper's GraphCut refinement is not applied.

    Args:
        maps: ``[B, 1, H, W]`` saliency maps.
        boxes: ``[B, 4]`` true boxes.
        masks: ``[B, H, W]`` true masks (take precedence over boxes).

    Returns:
        ``[B]`` IoU in [0, 1].

    Example:
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 2:6, 1:5] = 1.0
        >>> localisation_iou(maps, boxes=torch.tensor([[1.0, 2.0, 5.0, 8.0]]))
        tensor([0.6667])
    """
    if boxes is None and masks is None:
        raise ValueError("localisation_iou needs boxes [B, 4] or masks [B, H, W], got neither.")
    predicted = largest_component(saliency_to_mask(maps, "otsu"))  # [B,H,W]
    if masks is not None:
        return mask_iou(predicted, masks.to(predicted.device)).float()
    assert boxes is not None
    return box_iou(mask_to_box(predicted), boxes.to(predicted.device)).float()
