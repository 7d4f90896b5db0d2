"""Perturbation (faithfulness) scores: deletion/insertion curves and AUC, Average Drop, Increase in Confidence.

All forwards run without gradients (``torch.inference_mode``), with the model in eval mode (each submodule's
flag restored after) and the global RNG preserved, in ``run``'s precision, chunked to ``batch_size`` inputs
per forward. Scores read the *softmax probability of the given target class*.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_saliency._baselines import Baseline, perturbation_baseline
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_maps,
    _check_model_inputs,
    _chunked_target_outputs,
    _pixel_ranks,
    _scoring,
    _target_outputs,
)
from lightning_saliency.targets import Target, TargetLike

__all__ = [
    "average_drop",
    "curve_auc",
    "deletion_curve",
    "increase_in_confidence",
    "insertion_curve",
    "perturbation_baseline",
]

"""``"zero"``, ``"mean"``, ``"blur"``, a constant, or a tensor broadcastable to ``[B, C, H, W]``."""

DEFAULT_STEPS = 20


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")


def _perturbation_curves(
    model: nn.Module,
    targets: Target,
    ranks: Tensor,
    start: Tensor,
    finish: Tensor,
    steps: int,
    batch_size: int,
    run: Run,
) -> Tensor:
    """Curves ``[B, steps + 1]``: at step ``s`` the ``floor(s * H * W / steps)`` top-ranked pixels come from ``finish``.

    All ``B * (steps + 1)`` perturbed images are built lazily, ``batch_size`` per forward.
    """
    pixels = math.prod(start.shape[2:])
    counts = torch.arange(steps + 1, device=start.device) * pixels // steps  # [S+1] pixels changed at each step
    return _threshold_curves(model, targets, ranks, start, finish, counts, batch_size, run)


def _threshold_curves(
    model: nn.Module,
    targets: Target,
    ranks: Tensor,
    start: Tensor,
    finish: Tensor,
    counts: Tensor,
    batch_size: int,
    run: Run,
) -> Tensor:
    """Target confidences ``[B, S]``: at step ``s`` every element ranked below ``counts[s]`` comes from ``finish``.

    ``ranks`` is ``[B, H*W]`` (one rank per pixel, all channels alike) or ``[B, C*H*W]`` (one per element);
    ``finish`` broadcasts to ``start`` ``[B, C, H, W]``. All ``B * S`` perturbed images are built lazily,
    ``batch_size`` per forward.
    """
    b, spatial = start.shape[0], tuple(start.shape[2:])  # (H, W), or (D, H, W)
    n = counts.shape[0]
    probs = torch.empty(b * n, dtype=torch.float32, device=start.device)

    def chunk(lo: int, hi: int) -> None:
        idx = torch.arange(lo, hi, device=start.device)  # [P]
        img, step = idx // n, idx % n
        changed = (ranks[img] < counts[step][:, None]).view(hi - lo, -1, *spatial)  # [P,1 or C,H,W]
        x = torch.where(changed, finish[img], start[img])  # [P,C,H,W]
        probs[lo:hi] = _target_outputs(model, x, targets[img], run)

    # On out-of-memory a chunk is retried at half the size (results written by index: a retry overwrites).
    run_chunked(chunk, b * n, batch_size, what="perturbed images")
    return probs.view(b, n)  # [B,S]


def _curve(
    mode: str,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    steps: int,
    baseline: Baseline,
    batch_size: int,
    run: Run | None,
) -> Tensor:
    targets = _check_model_inputs(inputs, targets, model, run)
    maps = _check_maps(maps, inputs)
    _check_steps(steps)
    _check_batch_size(batch_size)
    with _scoring(model, inputs):
        return _mode_curves(mode, model, inputs, targets, _pixel_ranks(maps), baseline, steps, batch_size, run)


def _mode_curves(
    mode: str,
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    ranks: Tensor,
    baseline: Baseline,
    steps: int,
    batch_size: int,
    run: Run | None,
) -> Tensor:
    """Deletion moves from the inputs to the substrate, insertion from the substrate to the inputs; ``[B, S+1]``."""
    substrate = perturbation_baseline(inputs, baseline)
    start, finish = (inputs, substrate) if mode == "deletion" else (substrate, inputs)
    return _perturbation_curves(model, targets, ranks, start, finish, steps, batch_size, run or Run())


def deletion_curve(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: Baseline = "zero",
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Deletion curve (Petsiuk et al. 2018, RISE): target probability as the most salient pixels are removed.

    Pixels are ranked by saliency, descending (ties, e.g. a constant or all-zero map, broken by raster order:
    top-left first). At step ``s = 0..steps`` the first ``floor(s * H * W / steps)`` pixels (all channels) are
    replaced by the baseline substrate and the softmax probability of ``targets`` is read. RISE changes a fixed
    number of pixels per step; with ``H * W / steps`` an integer the two agree exactly. A faithful map makes the
    curve drop fast: lower :func:`curve_auc` is better. RISE scores the class predicted on the original image;
    pass ``targets=model(inputs).argmax(1)`` to reproduce that.

    Args:
        model: Classifier returning logits ``[N, num_classes]`` (read through ``run``).
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices.
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency at the input resolution; only the order matters.
        steps: Number of equal steps; the curve has ``steps + 1`` points (nothing removed ... everything).
        baseline: Substrate, see :func:`perturbation_baseline` (default ``"zero"`` as RISE).
        batch_size: Most perturbed images per forward (bounds memory).
        run: Precision and output adapter (default plain fp32).

    Returns:
        ``[B, steps + 1]`` float32 probabilities.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> curves = deletion_curve(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), torch.rand(3, 1, 2, 2),
        ...                         steps=4)
        >>> curves.shape
        torch.Size([3, 5])
    """
    return _curve("deletion", model, inputs, targets, maps, steps, baseline, batch_size, run)


def insertion_curve(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: Baseline = "blur",
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Insertion curve (Petsiuk et al. 2018, RISE): target probability as the most salient pixels are restored.

    Starts from the baseline substrate (default a blur, as RISE) and, at step ``s = 0..steps``, restores the
    ``floor(s * H * W / steps)`` most salient original pixels (same ranking and tie rule as
    :func:`deletion_curve`). A faithful map makes the curve rise fast: higher :func:`curve_auc` is better.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices (RISE: the class predicted on the original).
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency at the input resolution.
        steps: Number of equal steps; the curve has ``steps + 1`` points.
        baseline: Substrate to start from, see :func:`perturbation_baseline` (default ``"blur"``).
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter (default plain fp32).

    Returns:
        ``[B, steps + 1]`` float32 probabilities.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> insertion_curve(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 4, 4), steps=8).shape
        torch.Size([2, 9])
    """
    return _curve("insertion", model, inputs, targets, maps, steps, baseline, batch_size, run)


def curve_auc(curves: Tensor) -> Tensor:
    """Area under curves sampled at equal steps over ``x in [0, 1]``, as RISE's ``auc``.

    ``(sum(a) - a[0] / 2 - a[n] / 2) / n`` for ``n + 1`` points ``a[0..n]`` (the trapezoid rule).

    Args:
        curves: ``[..., n + 1]`` with ``n >= 1``.

    Returns:
        ``[...]`` float32 areas.

    Example:
        >>> curve_auc(torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]]))
        tensor([0.5000, 1.0000])
    """
    if not isinstance(curves, Tensor) or curves.ndim < 1 or curves.shape[-1] < 2:
        got = f"shape {tuple(curves.shape)}" if isinstance(curves, Tensor) else type(curves).__name__
        raise ValueError(f"curves must be a Tensor [..., n + 1] with at least 2 points, got {got}.")
    curves = curves.float()
    n = curves.shape[-1] - 1
    return (curves.sum(-1) - curves[..., 0] / 2 - curves[..., -1] / 2) / n


def _confidences(
    model: nn.Module, inputs: Tensor, targets: TargetLike, maps: Tensor, batch_size: int, run: Run | None
) -> tuple[Tensor, Tensor]:
    """``(Y, O)``: target probability ``[B]`` on the inputs and on ``inputs * map`` (map broadcast over channels)."""
    targets = _check_model_inputs(inputs, targets, model, run)
    maps = _check_maps(maps, inputs)
    _check_batch_size(batch_size)
    run = run or Run()
    with _scoring(model, inputs):
        y = _chunked_target_outputs(model, inputs, targets, run, batch_size)
        o = _chunked_target_outputs(model, inputs * maps.to(inputs.dtype), targets, run, batch_size)
    return y, o


def _average_drop_per_image(y: Tensor, o: Tensor) -> Tensor:
    """``max(0, Y - O) / Y`` per image, a fraction in [0, 1] (``Y`` floored at 1e-12 so it is never NaN)."""
    return (y - o).clamp_min(0) / y.clamp_min(1e-12)


def _increase_per_image(y: Tensor, o: Tensor) -> Tensor:
    """``1[Y < O]`` per image: 0 or 1."""
    return (y < o).float()


def average_drop(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Average Drop per image (Chattopadhyay et al. 2018, Grad-CAM++; as used by Score-CAM), a fraction in [0, 1].

    ``max(0, Y - O) / Y``, with ``Y`` the softmax probability of the target on the input and ``O`` on the
    "explanation map" ``inputs * map`` (map in [0, 1] broadcast over channels). The paper's score is the mean over
    images (``average_drop(...).mean()``, or :class:`~lightning_saliency.metrics.AverageDrop`); lower is better.
    The paper reports it in percent (``100 *`` this); every score of this package is in [0, 1].
    pytorch-grad-cam's ``DropInConfidence`` (with a softmax target) is ``max(0, Y - O)``, without the division
    by ``Y``.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images (the map multiplies them as given, i.e. normalised inputs).
        targets: ``[B]`` class indices.
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) maps in [0, 1] at the input resolution.
        batch_size: Most images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 relative drops, in [0, 1].

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> average_drop(net, x, torch.tensor([0, 1]), torch.ones(2, 1, 2, 2))  # an all-ones map changes nothing
        tensor([0., 0.])
    """
    return _average_drop_per_image(*_confidences(model, inputs, targets, maps, batch_size, run))


def increase_in_confidence(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Increase in Confidence per image (Chattopadhyay et al. 2018): ``1[Y < O]``.

    ``Y`` and ``O`` as in :func:`average_drop`; the paper's score is the mean over images (higher is better),
    reported in percent (``100 *`` this). Equals pytorch-grad-cam's ``IncreaseInConfidence``.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices.
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) maps in [0, 1] at the input resolution.
        batch_size: Most images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32, each 0 or 1.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> increase_in_confidence(net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), torch.ones(2, 2, 2))
        tensor([0., 0.])
    """
    return _increase_per_image(*_confidences(model, inputs, targets, maps, batch_size, run))
