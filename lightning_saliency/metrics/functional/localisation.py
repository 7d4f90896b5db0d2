"""Localisation scores against boxes or masks: pointing games, IoU, and Quantus' top-k, rank accuracy, AUC, Focus."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_saliency.localisation import box_iou, largest_component, mask_iou, mask_to_box, saliency_to_mask
from lightning_saliency.metrics.functional._common import _check_maps
from lightning_saliency.metrics.functional._quantus import _check_flag, _prepared

__all__ = [
    "energy_pointing_game",
    "focus",
    "localisation_auc",
    "localisation_iou",
    "pointing_game",
    "region_masks",
    "relevance_rank_accuracy",
    "top_k_intersection",
]


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


# ---------------------------------------------------------------------- Quantus 0.6's localisation metrics


def _prepared_regions(
    maps: Tensor, boxes: Tensor | None, masks: Tensor | None, absolute: bool, normalise: bool
) -> tuple[Tensor, Tensor]:
    """``(values [B, N], regions [B, N] bool)``: the maps after Quantus' preprocessing, and the regions, flattened."""
    maps, regions = _regions(maps, boxes, masks)  # [B,H,W] each
    return _prepared(maps, absolute=absolute, normalise=normalise).flatten(1), regions.flatten(1)


def _hits_in_top(values: Tensor, regions: Tensor, k: Tensor) -> Tensor:
    """``[B]`` how many of each image's ``k[b]`` highest values lie in its region (ties: the earlier pixel first)."""
    order = torch.argsort(values, dim=1, descending=True, stable=True)  # [B,N]
    ranked = regions.gather(1, order)  # [B,N] region flags, most relevant first
    within = torch.arange(values.shape[1], device=values.device)[None] < k[:, None]  # [B,N]
    return (ranked & within).sum(1).double()


def _undefined_where_empty(scores: Tensor, regions: Tensor) -> Tensor:
    """``scores`` as float32, NaN for the images whose region is empty (as Quantus)."""
    return torch.where(regions.any(1), scores, torch.full_like(scores, float("nan"))).float()


def top_k_intersection(
    maps: Tensor,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    *,
    k: int = 1000,
    concept_influence: bool = False,
    absolute: bool = False,
    normalise: bool = True,
) -> Tensor:
    """Top-k intersection per image (Theiner et al. 2021), as Quantus' ``TopKIntersection``: higher is better.

    The share of the map's ``k`` most relevant pixels that lie in the region; with ``concept_influence`` it is
    divided by the region's share of the image (``* n / |region|``). Ties at the k-th value are broken by raster
    order (Quantus' ``np.argsort`` breaks them arbitrarily). An empty region gives NaN, as in Quantus. Quantus'
    preprocessing (``normalise``, then ``absolute``) cannot change the ranking of a map in [0, 1].

    Args:
        maps: ``[B, 1, H, W]`` saliency.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)`` (see :func:`region_masks`).
        masks: ``[B, H, W]`` bool regions, instead of boxes.
        k: Pixels taken, fewer than a map has (Quantus' default 1000, about 2 % of a 224 x 224 image).
        concept_influence: Divide by the region's share of the image.
        absolute: Rank magnitudes (Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32 in [0, 1] (``concept_influence``: up to ``n / |region|``), NaN where the region is empty.

    Raises:
        ValueError: If ``k`` is not an int in ``[1, H * W)``, or the maps and regions do not match.

    Example:
        >>> maps = torch.arange(16.0).view(1, 1, 4, 4)  # the 4 highest: the bottom row
        >>> top_k_intersection(maps, boxes=torch.tensor([[0, 2, 2, 4]]), k=4)
        tensor([0.5000])
    """
    _check_flag(concept_influence, "concept_influence")
    values, regions = _prepared_regions(maps, boxes, masks, absolute, normalise)
    n = values.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be an int in [1, {n}) (fewer than the {n} pixels of a map), got {k!r}.")
    size = regions.sum(1).double()  # [B]
    score = _hits_in_top(values, regions, torch.full_like(size, k, dtype=torch.long)) / k
    if concept_influence:
        score = score * n / size.clamp_min(1)
    return _undefined_where_empty(score, regions)


def relevance_rank_accuracy(
    maps: Tensor,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    *,
    absolute: bool = False,
    normalise: bool = True,
) -> Tensor:
    """Relevance rank accuracy per image (Arras et al. 2022), as Quantus' ``RelevanceRankAccuracy``: higher is better.

    With ``K = |region|``: the share of the map's ``K`` most relevant pixels that lie in the region (ties broken by
    raster order). An empty region gives NaN, as in Quantus.

    Args:
        maps: ``[B, 1, H, W]`` saliency.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)`` (see :func:`region_masks`).
        masks: ``[B, H, W]`` bool regions, instead of boxes.
        absolute: Rank magnitudes (Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32 in [0, 1], NaN where the region is empty.

    Example:
        >>> maps = torch.arange(16.0).view(1, 1, 4, 4)
        >>> relevance_rank_accuracy(maps, boxes=torch.tensor([[0, 2, 4, 4]]))  # the 8 highest fill the box
        tensor([1.])
    """
    values, regions = _prepared_regions(maps, boxes, masks, absolute, normalise)
    size = regions.sum(1)  # [B]
    return _undefined_where_empty(_hits_in_top(values, regions, size) / size.clamp_min(1).double(), regions)


def _roc_auc(values: Tensor, labels: Tensor) -> Tensor:
    """``[B]`` float64 area under the ROC curve of scores ``values [B, N]`` for ``labels [B, N]`` bool.

    The Mann-Whitney form, equal to the trapezoidal area under scikit-learn's ``roc_curve`` (ties count one half):
    ``(sum of the positives' ranks - P (P + 1) / 2) / (P N)`` with average ranks over tied values. NaN without
    positives or negatives (scikit-learn's curve is undefined then too).
    """
    ordered, order = values.double().sort(dim=1, stable=True)  # [B,N] ascending
    positive = labels.gather(1, order).double()
    n = values.shape[1]
    index = torch.arange(n, device=values.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # a new value begins here
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]  # a value's last position
    first = torch.where(starts, index, 0).cummax(1).values  # [B,N] first position of each value's run
    last = torch.where(ends, index, n - 1).flip(1).cummin(1).values.flip(1)  # [B,N] its last position
    ranks = (first + last).double() / 2 + 1  # [B,N] average 1-based ranks
    p = positive.sum(1)
    return ((ranks * positive).sum(1) - p * (p + 1) / 2) / (p * (n - p))


def localisation_auc(
    maps: Tensor,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    *,
    absolute: bool = False,
    normalise: bool = True,
) -> Tensor:
    """Area under the ROC curve of the map as a detector of the region's pixels (Fawcett 2006), as Quantus' ``AUC``.

    Quantus scores each image with scikit-learn's ``roc_curve`` and ``auc``; here the same area comes from the
    ranks, batched in torch: the probability that a region pixel outranks a pixel outside (ties count one half).
    0.5 is chance, higher is better. NaN where the region is empty or covers the whole map (Quantus: empty region
    NaN; scikit-learn: no negatives, NaN).

    Args:
        maps: ``[B, 1, H, W]`` saliency.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)`` (see :func:`region_masks`).
        masks: ``[B, H, W]`` bool regions, instead of boxes.
        absolute: Score magnitudes (Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32 in [0, 1].

    Example:
        >>> maps = torch.tensor([[[[0.1, 0.9], [0.4, 0.4]]]])
        >>> localisation_auc(maps, masks=torch.tensor([[[False, True], [True, False]]]))  # (1 + 1 + 1 + 0.5) / 4
        tensor([0.8750])
    """
    values, regions = _prepared_regions(maps, boxes, masks, absolute, normalise)
    return _undefined_where_empty(_roc_auc(values, regions), regions)


def focus(attributions: Tensor, quadrants: Tensor, *, absolute: bool = False, normalise: bool = True) -> Tensor:
    """Focus per mosaic (Arias-Duart et al. 2022; Quantus' ``Focus``): relevance on the target class's quadrants.

    The share of positive relevance on the quadrants that show the target class, higher is better.

    The inputs are mosaics of four images (two of the target class, two of others: Quantus'
    ``mosaic_creation``), and the attributions explain the target class on the mosaic. ``quadrants [B, 4]`` says
    which quadrants show it, in Quantus' ``custom_batch`` order ``(top_left, top_right, bottom_left,
    bottom_right)``; the top and left halves are ``H // 2`` rows and ``W // 2`` columns. The score is
    ``sum(relu(a) on them) / (sum(relu(a)) + 1e-9)``.

    Args:
        attributions: ``[B, 1, H, W]`` maps or ``[B, C, H, W]`` attributions of the mosaics (``[B, H, W]`` too).
        quadrants: ``[B, 4]`` 0/1 (or bool): which quadrants show the target class.
        absolute: Take magnitudes first (Quantus' default ``False``).
        normalise: Divide each map by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32 in [0, 1].

    Raises:
        ValueError: If the attributions are not 2-D images or ``quadrants`` is not ``[B, 4]`` of 0/1.

    Example:
        >>> maps = torch.zeros(1, 1, 4, 4)
        >>> maps[0, 0, :2, :2] = 3.0  # top-left
        >>> maps[0, 0, 2:, 2:] = 1.0  # bottom-right
        >>> focus(maps, torch.tensor([[1, 0, 0, 1]])), focus(maps, torch.tensor([[1, 1, 0, 0]]))
        (tensor([1.]), tensor([0.7500]))
    """
    if not isinstance(attributions, Tensor) or attributions.ndim not in (3, 4):
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be a Tensor [B, 1, H, W] or [B, C, H, W] of mosaics, got {got}.")
    a = _prepared(
        attributions if attributions.ndim == 4 else attributions[:, None], absolute=absolute, normalise=normalise
    )
    b, _, h, w = a.shape
    bad = not isinstance(quadrants, Tensor) or tuple(quadrants.shape) != (b, 4)
    if not bad and not bool(((quadrants == 0) | (quadrants == 1)).all()):
        bad = True
    if bad:
        got = tuple(quadrants.shape) if isinstance(quadrants, Tensor) else type(quadrants).__name__
        raise ValueError(
            f"quadrants must be a Tensor [B={b}, 4] of 0/1 (top_left, top_right, bottom_left, bottom_right), got "
            f"{got}" + (" with values other than 0 and 1." if isinstance(quadrants, Tensor) else ".")
        )
    rows = (torch.arange(h, device=a.device) >= h // 2).long()  # [H] 1 in the bottom half
    cols = (torch.arange(w, device=a.device) >= w // 2).long()  # [W] 1 in the right half
    which = 2 * rows[:, None] + cols[None]  # [H,W] quadrant index 0..3
    on_target = quadrants.to(a.device).double()[:, which]  # [B,H,W]
    positive = a.clamp_min(0).double()  # [B,C,H,W]
    inside = (positive * on_target[:, None]).flatten(1).sum(1)
    return (inside / (positive.flatten(1).sum(1) + 1e-9)).float()
