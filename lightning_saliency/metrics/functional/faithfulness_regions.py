"""Region Perturbation, Selectivity, IROF, Sensitivity-N and Sufficiency as Quantus 0.6 computes them, batched.

Each removes what the attributions rank first (square patches, SLIC superpixels or single input elements) and reads
the target's confidence (for a class: its softmax probability, Quantus' ``softmax=True``) after every step. All
forwards run without gradients (``torch.inference_mode``), with the model in eval mode (each submodule's flag
restored after) and the global RNG preserved, in ``run``'s precision, ``batch_size`` perturbed inputs per forward.

Where Quantus leaves an order to numpy's unstable sort, ties (a constant map, or a ``[B, 1, H, W]`` map broadcast
over channels in Sensitivity-N) are broken here by position, the earlier region or element first. Quantus divides
the attributions by their maximum first (``normalise=True``); no score here depends on a positive scale of the
attributions, so there is nothing to normalise. Where Quantus replaces by a statistic of the input
(``"black"``: the minimum, ``"white"``: the maximum, ``"mean"``), it takes it from the already perturbed input at
every step, as here (a running mean for ``"mean"``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._checks import check_inputs
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _TINY,
    _check_batch_size,
    _check_model_inputs,
    _chunked_target_outputs,
    _scoring,
    _stable_ranks,
)
from lightning_saliency.metrics.functional._quantus import _baseline_values, _broadcast_attributions, _predicted
from lightning_saliency.metrics.functional.correlation import pearson
from lightning_saliency.metrics.functional.perturbation import _threshold_curves, curve_auc
from lightning_saliency.targets import Target, TargetLike

__all__ = ["irof", "region_perturbation", "selectivity", "sensitivity_n", "slic_segments", "sufficiency"]

Fill = str | float
"""What removed regions are replaced by: the input's minimum (``"black"``), maximum (``"white"``), running mean
(``"mean"``), or a constant."""

_FILLS = ("black", "white", "mean")


def _choice(value: object, arg: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{arg} must be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value.lower()


def _check_fill(perturb_baseline: object) -> None:
    if isinstance(perturb_baseline, bool) or not (
        isinstance(perturb_baseline, (int, float))
        or (isinstance(perturb_baseline, str) and perturb_baseline.lower() in _FILLS)
    ):
        raise ValueError(f"perturb_baseline must be 'black', 'white', 'mean' or a number, got {perturb_baseline!r}.")


def _check_attributions(attributions: Tensor, inputs: Tensor, absolute: bool) -> Tensor:
    """``attributions`` broadcast to the inputs ``[B, C, H, W]``, float32, NaN/inf read as 0 (``abs`` if ``absolute``).

    (:mod:`.faithfulness` raises on NaN instead: the two families chose differently; both kept as they were.)
    """
    attr = torch.nan_to_num(_broadcast_attributions(attributions, inputs).float(), nan=0.0, posinf=0.0, neginf=0.0)
    return attr.abs() if absolute else attr


def _running_means(total: Tensor, size: float, removed_sum: Tensor, removed_count: Tensor) -> Tensor:
    """Quantus' ``"mean"`` at each step ``[G, K]``: the mean of the array before step ``k`` replaced its region.

    ``total [G]`` is the sum of each array (``size`` elements), ``removed_sum [G, K]`` the sum of the original
    values step ``k`` replaces (regions are disjoint: they still hold them) and ``removed_count [G, K]`` how many.
    """
    total, removed_sum, removed_count = total.double(), removed_sum.double(), removed_count.double()
    means = []
    for k in range(removed_sum.shape[1]):
        mean = total / size
        means.append(mean)
        total = total - removed_sum[:, k] + removed_count[:, k] * mean
    return torch.stack(means, 1) if means else removed_sum.new_zeros(removed_sum.shape)


def _fill_values(perturb_baseline: Fill, x: Tensor, size: float, removed_sum: Tensor, removed_count: Tensor) -> Tensor:
    """The value each step writes ``[G, K]`` float64; the statistics are those of each of the ``G`` rows of ``x``."""
    g, k = removed_sum.shape
    flat = x.reshape(g, -1).double()  # [G,N] an image (or the whole batch) per row
    name = perturb_baseline.lower() if isinstance(perturb_baseline, str) else perturb_baseline
    if name == "mean":
        return _running_means(flat.sum(1), size, removed_sum, removed_count)
    # a number, or the minimum (maximum), which replacing keeps: the same value at every step
    return _baseline_values(flat, name)[:, None].expand(g, k)


def _padding(size: int, patch: int) -> tuple[int, int]:
    """Quantus' ``get_padding_size``: what a side needs to become a multiple of ``patch``, split floor/ceil."""
    total = -size % patch
    return total // 2, total - total // 2


def _patch_curves(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    attr: Tensor,
    patch_size: int,
    descending: bool,
    regions: int | None,
    perturb_baseline: Fill,
    batch_size: int,
    run: Run,
) -> tuple[Tensor, Tensor]:
    """``(y [B], curves [B, K])``: the confidence on the inputs, and as the first ``regions`` patches go, in order.

    As Quantus' Region Perturbation and Selectivity, cumulatively:
    it pads the input to a multiple of the patch size (by repeating the edge; the attributions by zeros),
    cuts it into non-overlapping ``patch_size`` squares in raster order, ranks them by their attribution sum and
    replaces whole squares, all channels; the model sees the unpadded part.
    """
    b, c, h, w = inputs.shape
    (top, bottom), (left, right) = _padding(h, patch_size), _padding(w, patch_size)
    x_pad = F.pad(inputs.float(), (left, right, top, bottom), mode="replicate")  # [B,C,Hp,Wp]
    a_pad = F.pad(attr.sum(1), (left, right, top, bottom))  # [B,Hp,Wp]
    hp, wp = x_pad.shape[2:]
    nh, nw = hp // patch_size, wp // patch_size

    def patch_sums(t: Tensor) -> Tensor:  # [B,Hp,Wp] -> [B,nh*nw], raster order of the patches
        return t.reshape(b, nh, patch_size, nw, patch_size).sum((2, 4)).flatten(1)

    order, ranks = _stable_ranks(patch_sums(a_pad), descending)  # [B,K]
    k = nh * nw if regions is None else min(regions, nh * nw)
    removed = patch_sums(x_pad.double().sum(1)).gather(1, order)[:, :k]  # [B,k] original values each step replaces
    count = torch.full_like(removed, float(c * patch_size * patch_size))
    fills = _fill_values(perturb_baseline, x_pad, float(c * hp * wp), removed, count)  # [B,k]
    patch_of = torch.arange(nh * nw, device=inputs.device).view(nh, 1, nw, 1)
    patch_of = patch_of.expand(nh, patch_size, nw, patch_size).reshape(hp, wp)[top : top + h, left : left + w]
    pixel_ranks = ranks[:, patch_of.flatten()]  # [B,H*W] the rank of each pixel's patch
    fill = fills.gather(1, pixel_ranks.clamp_max(k - 1)).view(b, 1, h, w).to(inputs.dtype)  # [B,1,H,W]
    counts = torch.arange(1, k + 1, device=inputs.device)  # [k] step s replaces the patches ranked < s
    y = _chunked_target_outputs(model, inputs, targets, run, batch_size)
    return y, _threshold_curves(model, targets, pixel_ranks, inputs, fill, counts, batch_size, run)


def _check_patch_args(inputs: Tensor, attributions: Tensor, patch_size: int, absolute: bool) -> Tensor:
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be 2-D images [B, C, H, W] for square patches, got {tuple(inputs.shape)}.")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an int >= 1 (pixels per patch side), got {patch_size!r}.")
    return _check_attributions(attributions, inputs, absolute)


def region_perturbation(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    patch_size: int = 8,
    order: Literal["morf", "lerf"] = "morf",
    regions_evaluation: int = 100,
    perturb_baseline: Fill = "black",
    absolute: bool = False,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Region Perturbation (Samek et al. 2016) as Quantus' ``RegionPerturbation``: the confidence drop per step.

    The input (edge-padded to a multiple of ``patch_size``) is cut into non-overlapping ``patch_size`` squares,
    ranked by the sum of their attributions, most relevant first (``order="morf"``) or least (``"lerf"``). The
    first ``regions_evaluation`` squares are replaced one after the other, all channels, by ``perturb_baseline``
    (default the image's minimum, Quantus' ``"black"``); after each, ``y - y_perturbed`` of the target's confidence
    is read. Equal to Quantus 0.6's ``evaluation_scores`` (one curve per image). Its ``get_auc_score`` is the mean
    over images of ``np.trapz(curve)``, that is ``(K - 1) * curve_auc(curve)`` for ``K`` points. With MoRF a
    faithful map makes the curve rise fast (higher is better); with LeRF it should stay low.

    Args:
        model: Classifier (any output with a confidence, see :mod:`lightning_saliency.targets`).
        inputs: ``[B, C, H, W]`` float images.
        targets: What the attributions explain (``[B]`` class indices or a :class:`~lightning_saliency.targets.Target`).
        attributions: ``[B, C, H, W]`` or ``[B, 1, H, W]`` (``[B, H, W]``), broadcast over channels.
        patch_size: Side of the square patches, in pixels (Quantus: 8).
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        regions_evaluation: How many patches are replaced (at most all of them; Quantus: 100).
        perturb_baseline: ``"black"`` (the image's minimum), ``"white"`` (its maximum), ``"mean"`` (the running mean
            of the padded, already perturbed image, as Quantus) or a number.
        absolute: Rank by ``abs(attributions)`` (Quantus' ``abs``).
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter (default plain fp32).

    Returns:
        ``[B, K]`` float32 confidence drops, ``K = min(regions_evaluation, number of patches)``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> region_perturbation(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.rand(2, 1, 8, 8),
        ...                     patch_size=4).shape
        torch.Size([2, 4])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    attr = _check_patch_args(inputs, attributions, patch_size, absolute)
    descending = _choice(order, "order", ("morf", "lerf")) == "morf"
    if isinstance(regions_evaluation, bool) or not isinstance(regions_evaluation, int) or regions_evaluation < 1:
        raise ValueError(f"regions_evaluation must be an int >= 1 (patches replaced), got {regions_evaluation!r}.")
    _check_fill(perturb_baseline)
    _check_batch_size(batch_size)
    with _scoring(model, inputs):
        y, curves = _patch_curves(
            model,
            inputs,
            target,
            attr,
            patch_size,
            descending,
            regions_evaluation,
            perturb_baseline,
            batch_size,
            run or Run(),
        )
    return y[:, None] - curves


def selectivity(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    patch_size: int = 8,
    perturb_baseline: Fill = "black",
    absolute: bool = False,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Selectivity (Montavon et al. 2018) as Quantus' ``Selectivity``: the confidence as patches are removed.

    The patches of :func:`region_perturbation`, most relevant first, all of them, each replaced by
    ``perturb_baseline``; after each, the target's confidence is read. Equal to Quantus 0.6's
    ``evaluation_scores`` (one curve per image); its ``get_auc_score`` is ``(K - 1) * curve_auc(curve)`` averaged
    over images. A faithful map makes the confidence fall fast: a lower area is better.

    Args:
        model: Classifier (any output with a confidence).
        inputs: ``[B, C, H, W]`` float images.
        targets: What the attributions explain.
        attributions: ``[B, C, H, W]`` or ``[B, 1, H, W]`` (``[B, H, W]``).
        patch_size: Side of the square patches (Quantus: 8).
        perturb_baseline: ``"black"``, ``"white"``, ``"mean"`` or a number, as in :func:`region_perturbation`.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B, K]`` float32 confidences, ``K`` the number of patches.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> selectivity(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.rand(2, 8, 8), patch_size=4).shape
        torch.Size([2, 4])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    attr = _check_patch_args(inputs, attributions, patch_size, absolute)
    _check_fill(perturb_baseline)
    _check_batch_size(batch_size)
    with _scoring(model, inputs):
        _, curves = _patch_curves(
            model, inputs, target, attr, patch_size, True, None, perturb_baseline, batch_size, run or Run()
        )
    return curves


def slic_segments(inputs: Tensor, **slic_kwargs: object) -> Tensor:
    """SLIC superpixels of each image as Quantus' IROF makes them (``skimage.segmentation.slic(img, start_label=0)``).

    Needs scikit-image (not a dependency of this package). Runs on the CPU, image by image, on the inputs as given
    (channels last, float64; three channels are converted to Lab by scikit-image, as in Quantus).

    Args:
        inputs: ``[B, C, H, W]`` images.
        slic_kwargs: Passed to ``slic`` (e.g. ``n_segments=100``, ``compactness=10``, scikit-image's defaults).

    Returns:
        ``[B, H, W]`` long segment labels from 0, on the inputs' device.

    Raises:
        ImportError: Without scikit-image.
    """
    try:
        from skimage.segmentation import slic
    except ImportError as err:
        raise ImportError(
            "IROF's SLIC superpixels need scikit-image (`pip install scikit-image`); or pass your own "
            "`segments=` [B, H, W] to irof()."
        ) from err
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a Tensor [B, C, H, W] for SLIC superpixels, got {got}.")
    images = np.moveaxis(inputs.detach().cpu().double().numpy(), 1, -1)  # [B,H,W,C]
    labels = [slic(image, start_label=0, **slic_kwargs) for image in images]
    return torch.as_tensor(np.stack(labels), dtype=torch.long, device=inputs.device)


def _check_segments(segments: Tensor, inputs: Tensor) -> Tensor:
    """``[B, H, W]`` labels relabelled ``0..n_b - 1`` per image (in the order of the labels)."""
    b, _, h, w = inputs.shape
    if not isinstance(segments, Tensor) or tuple(segments.shape) != (b, h, w) or segments.is_floating_point():
        got = tuple(segments.shape) if isinstance(segments, Tensor) else type(segments).__name__
        raise ValueError(f"segments must be an integer Tensor [B, H, W] = {[b, h, w]} of labels, got {got}.")
    segments = segments.to(inputs.device).long()
    out = torch.empty_like(segments)
    for i in range(b):  # Quantus labels 0..n-1 (SLIC's start_label=0); other labels are mapped to those in order
        labels, out[i] = torch.unique(segments[i], return_inverse=True)
        if labels.numel() < 2:
            raise ValueError(f"IROF needs more than one segment per image; image {i} has {labels.numel()}.")
    return out


def irof(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    segments: Tensor | None = None,
    perturb_baseline: Fill = "mean",
    baseline_over: Literal["batch", "image"] = "batch",
    absolute: bool = False,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Iterative Removal of Features (Rieger & Hansen 2020) as Quantus' ``IROF``: area over the removal curve.

    Each image is cut into superpixels (``segments``, default :func:`slic_segments`), ranked by their mean
    attribution, most relevant first. They are replaced one after the other, all channels, by ``perturb_baseline``, and
    after each the target's confidence is read relative to the clean one, ``p_k = y_k / y``. The score is Quantus'
    area over that curve: ``n - trapz(p)`` with ``n`` the image's number of segments (steps past an image's last
    segment count as 0, as in Quantus). Higher is better.

    Quantus works across the batch (``baseline_over="batch"``): the baseline's statistic is that of every image of
    the current, already perturbed batch at every step (the mean, minimum or maximum), and the trapezoid runs over
    the batch's longest curve. ``"image"`` scores each image on its own: its own statistic, its own ``n`` points.

    Args:
        model: Classifier (any output with a confidence).
        inputs: ``[B, C, H, W]`` float images.
        targets: What the attributions explain.
        attributions: ``[B, C, H, W]`` or ``[B, 1, H, W]`` (``[B, H, W]``).
        segments: ``[B, H, W]`` integer superpixel labels; ``None`` for SLIC (needs scikit-image).
        perturb_baseline: ``"mean"`` (Quantus' default), ``"black"``, ``"white"`` or a number.
        baseline_over: ``"batch"`` (as Quantus) or ``"image"`` (independent of the other images).
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 areas over the curve, in ``[0, n]`` when no removal raises the confidence.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        >>> segments = torch.arange(4).repeat_interleave(4).view(1, 4, 4).expand(2, 4, 4)  # four rows
        >>> irof(net, torch.rand(2, 3, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4), segments=segments).shape
        torch.Size([2])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be 2-D images [B, C, H, W] for superpixels, got {tuple(inputs.shape)}.")
    attr = _check_attributions(attributions, inputs, absolute)
    _check_fill(perturb_baseline)
    over = _choice(baseline_over, "baseline_over", ("batch", "image"))
    _check_batch_size(batch_size)
    seg = _check_segments(slic_segments(inputs) if segments is None else segments, inputs).flatten(1)  # [B,HW]
    b, c = inputs.shape[:2]
    k = int(seg.max()) + 1
    n = seg.amax(1) + 1  # [B] segments per image

    def per_segment(values: Tensor) -> Tensor:  # [B,HW] -> [B,K] sums over each segment
        return values.new_zeros(b, k).scatter_add_(1, seg, values)

    pixels = per_segment(torch.ones_like(seg, dtype=torch.float64))  # [B,K]
    mean_attr = per_segment(attr.double().sum(1).flatten(1)) / (c * pixels).clamp_min(1)
    mean_attr = mean_attr.masked_fill(pixels == 0, -math.inf)  # labels an image lacks rank last
    order, ranks = _stable_ranks(mean_attr)  # [B,K]
    removed = per_segment(inputs.double().sum(1).flatten(1)).gather(1, order)  # [B,K] by rank
    count = c * pixels.gather(1, order)
    if over == "batch":
        fills = _fill_values(perturb_baseline, inputs, float(inputs.numel()), removed.sum(0, True), count.sum(0, True))
        fills = fills.expand(b, k)
    else:
        fills = _fill_values(perturb_baseline, inputs, float(inputs[0].numel()), removed, count)
    pixel_ranks = ranks.gather(1, seg)  # [B,HW]
    fill = fills.gather(1, pixel_ranks).view(b, 1, *inputs.shape[2:]).to(inputs.dtype)
    counts = torch.arange(1, k + 1, device=inputs.device)
    run = run or Run()
    with _scoring(model, inputs):
        y = _chunked_target_outputs(model, inputs, target, run, batch_size)
        curves = _threshold_curves(model, target, pixel_ranks, inputs, fill, counts, batch_size, run)  # [B,K]
    valid = torch.arange(k, device=inputs.device) < n[:, None]  # [B,K]
    p = (curves.double() / y.double().clamp_min(_TINY)[:, None]) * valid
    # Quantus' trapezoid runs over the batch's longest curve: past an image's last segment, p is 0
    last = p[:, -1] if over == "batch" else p.gather(1, (n - 1)[:, None])[:, 0]
    area = p.sum(1) - (p[:, 0] + last) / 2
    return (n.double() - area).float()


def _curve_area(curves: Tensor) -> Tensor:
    """:func:`curve_auc` per image ``[B]`` (Quantus' ``np.trapz`` over ``K - 1``); a one-point curve is its value."""
    return curve_auc(curves) if curves.shape[1] > 1 else curves[:, 0].float()


def sensitivity_n(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    n_max_percentage: float = 0.8,
    features_in_step: int = 1,
    perturb_baseline: Fill = "black",
    absolute: bool = False,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Sensitivity-n (Ancona et al. 2018) as Quantus' ``SensitivityN``: one correlation per step, across the batch.

    Every input element (channel, pixel) is ranked by its attribution, most relevant first; step ``s`` replaces
    the next ``features_in_step`` elements by ``perturb_baseline``, cumulatively. For each step, the Pearson correlation
    over the images of the batch between the confidence drop ``y - y_s`` and the attribution sum of that step's
    elements is returned, for the first ``int(n_max_percentage * H * W // features_in_step)`` steps (Quantus
    counts pixels, not elements, there). Quantus' score is their mean (its ``return_aggregate=True``). A
    correlation is 0 where undefined (a constant column), where scipy gives NaN. Higher is better.

    The batch matters: Quantus correlates within its first batch (``batch_size`` images, 64 by default); this
    correlates over all ``B`` images given.

    Args:
        model: Classifier (any output with a confidence).
        inputs: ``[B, C, H, W]`` (or volumes ``[B, C, D, H, W]``), ``B >= 2``.
        targets: What the attributions explain.
        attributions: ``[B, C, ...]``, or ``[B, 1, ...]`` broadcast over channels (ties between the channels of a
            pixel in position order; Quantus' numpy sort leaves their order unspecified).
        n_max_percentage: Share of the pixels the steps reach (Quantus: 0.8).
        features_in_step: Elements replaced per step (Quantus: 1, one forward per element: costly).
        perturb_baseline: ``"black"`` (each image's minimum), ``"white"``, ``"mean"`` (running) or a number.
        absolute: Rank by ``abs(attributions)``.
        batch_size: Most perturbed inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[S]`` float32 correlations in [-1, 1], one per step.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> sensitivity_n(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), torch.rand(3, 1, 2, 2)).shape
        torch.Size([3])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    attr = _check_attributions(attributions, inputs, absolute).flatten(1)  # [B,F]
    if inputs.shape[0] < 2:
        raise ValueError(f"sensitivity_n correlates across the batch: inputs need >= 2 images, got {inputs.shape[0]}.")
    if isinstance(n_max_percentage, bool) or not isinstance(n_max_percentage, (int, float)):
        raise ValueError(f"n_max_percentage must be a number in (0, 1], got {n_max_percentage!r}.")
    if not 0 < n_max_percentage <= 1:
        raise ValueError(f"n_max_percentage must be a number in (0, 1], got {n_max_percentage!r}.")
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) or features_in_step < 1:
        raise ValueError(f"features_in_step must be an int >= 1 (elements per step), got {features_in_step!r}.")
    _check_fill(perturb_baseline)
    _check_batch_size(batch_size)
    b, f = attr.shape
    steps = min(int(n_max_percentage * math.prod(inputs.shape[2:]) // features_in_step), f // features_in_step)
    if steps < 1:
        raise ValueError(
            f"features_in_step={features_in_step} leaves no step within n_max_percentage={n_max_percentage} of the "
            f"{math.prod(inputs.shape[2:])} pixels."
        )
    reach = steps * features_in_step
    order, ranks = _stable_ranks(attr)  # [B,F]
    att_sums = attr.gather(1, order[:, :reach]).view(b, steps, features_in_step).sum(2)  # [B,S]
    removed = inputs.flatten(1).double().gather(1, order[:, :reach]).view(b, steps, features_in_step).sum(2)
    count = torch.full_like(removed, float(features_in_step))
    fills = _fill_values(perturb_baseline, inputs, float(f), removed, count)  # [B,S]
    fill = fills.gather(1, (ranks // features_in_step).clamp_max(steps - 1)).view_as(inputs).to(inputs.dtype)
    counts = torch.arange(1, steps + 1, device=inputs.device) * features_in_step
    run = run or Run()
    with _scoring(model, inputs):
        y = _chunked_target_outputs(model, inputs, target, run, batch_size)
        curves = _threshold_curves(model, target, ranks, inputs, fill, counts, batch_size, run)  # [B,S]
    return pearson((y[:, None] - curves).T, att_sums.T)  # [S] over the images of each step


def sufficiency(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    *,
    threshold: float = 0.6,
    distance: Literal["seuclidean", "euclidean"] = "seuclidean",
    absolute: bool = True,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Sufficiency (Dasgupta et al. 2022) as Quantus': do images with similar explanations share the prediction?

    Across the batch: the distances between the flattened attributions (``"seuclidean"``: each feature scaled by
    its variance over the batch, as ``scipy.spatial.distance.cdist``), divided by the largest, mark two images as
    neighbours where at most ``threshold``. Each image's score is the share of its neighbours (itself excluded)
    predicted as the same class (the model's argmax; no target is read, as Quantus ignores ``y_batch``); 0
    without neighbours. Higher is better. Quantus works within each of its batches (64 images by default); this
    works across all ``B`` images given. A feature equal in every image (variance 0) adds nothing to the
    standardised distance here; in Quantus it makes every distance NaN and every score 0.

    Args:
        model: Classifier returning logits ``[B, num_classes]``.
        inputs: ``[B, C, ...]`` float inputs.
        attributions: ``[B, ...]`` attributions (flattened per image).
        threshold: Largest normalised distance of neighbours (Quantus: 0.6).
        distance: ``"seuclidean"`` (Quantus' default) or ``"euclidean"``.
        absolute: Compare ``abs(attributions)`` (Quantus' default ``abs=True``).
        batch_size: Most images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 shares in [0, 1].

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> sufficiency(net, torch.rand(3, 1, 2, 2), torch.ones(3, 1, 2, 2))  # all neighbours
        tensor([1., 1., 1.])
    """
    check_inputs(inputs)
    if not isinstance(attributions, Tensor) or attributions.ndim < 2 or attributions.shape[0] != inputs.shape[0]:
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be a Tensor [B, ...] with B={inputs.shape[0]}, got {got}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0 (a distance relative to the largest), got {threshold!r}.")
    metric = _choice(distance, "distance", ("seuclidean", "euclidean"))
    _check_batch_size(batch_size)
    a = torch.nan_to_num(attributions.detach().to(inputs.device).double().flatten(1))  # [B,D]
    a = a.abs() if absolute else a
    if metric == "seuclidean":
        var = torch.cat([a, a]).var(0)  # [D] as scipy's cdist(XA, XB): over XA and XB stacked
        a = torch.where(var > 0, a / var.clamp_min(1e-300).sqrt(), torch.zeros_like(a))
    dist = torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")  # [B,B]
    dist = dist / dist.max() if bool(dist.max() > 0) else dist
    near = (dist <= threshold) & ~torch.eye(a.shape[0], dtype=torch.bool, device=a.device)  # [B,B]
    run = run or Run()
    with _scoring(model, inputs):
        chunks = run_chunked(
            lambda lo, hi: _predicted_classes(model, inputs[lo:hi], run), inputs.shape[0], batch_size, what="images"
        )
    pred = torch.cat(chunks)  # [B]
    same = near & (pred[None] == pred[:, None])
    return (same.sum(1) / near.sum(1).clamp_min(1)).float()


def _predicted_classes(model: nn.Module, inputs: Tensor, run: Run) -> Tensor:
    """The predicted class ``[N]`` of classifier logits ``[N, K]``; any other output is an error (one forward)."""
    out = run.output(model, inputs)
    if out.ndim != 2:
        raise ValueError(
            f"sufficiency compares predicted classes: the model must return logits [B, num_classes], got an output "
            f"of shape {tuple(out.shape)}."
        )
    return _predicted(out)[:, 0]
