"""ROAD (Rong et al. 2022): remove pixels by saliency and refill them by noisy linear imputation, then re-score.

Removing pixels by setting them to a constant leaks the mask's shape to the classifier; ROAD refills each removed pixel
with the weighted mean of its 8 neighbours (weights 1/6 direct, 1/12 diagonal; removed neighbours are unknowns too),
i.e. solves a sparse linear system, and adds ``N(0, noise^2)`` noise to the refilled pixels. Here the system is
solved in torch, on the inputs' device, batched over images, channels and removal levels, by conjugate gradients
on its symmetric positive definite form (see :func:`noisy_linear_imputation`); pytorch-grad-cam (from the authors'
code) solves it with ``scipy.sparse.linalg.spsolve`` on the CPU, one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_maps,
    _check_model_inputs,
    _scoring,
    _target_outputs,
)
from lightning_saliency.targets import TargetLike

__all__ = ["DEFAULT_PERCENTAGES", "noisy_linear_imputation", "road_curves", "road_masks", "road_score"]

DEFAULT_PERCENTAGES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""Percentages of pixels removed, as pytorch-grad-cam's ``ROADCombined`` (its ``percentiles`` 10..90)."""

_DIRECT, _DIAGONAL = 1 / 6, 1 / 12
DEFAULT_TOL = 1e-6


def _neighbours(x: Tensor) -> Tensor:
    """Weighted sum of each pixel's in-image 8 neighbours (1/6 direct, 1/12 diagonal; zero outside), ``[N, H, W]``.

    The kernel is separable up to its centre: ``([1, 2, 1] x [1, 2, 1] - 4 delta) / 12``, i.e. two 3-tap passes
    (shifted adds, as fast in float64 as in float32 on every device).
    """
    rows = F.pad(x, (1, 1))  # [N,H,W+2]
    horizontal = rows[..., :-2] + 2 * x + rows[..., 2:]  # [N,H,W]
    cols = F.pad(horizontal, (0, 0, 1, 1))  # [N,H+2,W]
    return (cols[..., :-2, :] + 2 * horizontal + cols[..., 2:, :] - 4 * x) / 12


def noisy_linear_imputation(
    inputs: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.01,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
) -> Tensor:
    """Refill the ``removed`` pixels of ``inputs`` by ROAD's noisy linear imputation.

    Each removed pixel ``i`` satisfies ``x_i = sum_j w_ij x_j / sum_j w_ij`` over its in-image 8 neighbours ``j``
    (``w = 1/6`` direct, ``1/12`` diagonal; kept neighbours are given, removed ones unknown), per channel, the system
    of the authors' ``NoisyLinearImputer``. Written as ``L x = b`` with ``L = D - W`` restricted to the removed
    pixels it is symmetric positive definite (when an image keeps at least one pixel), and is solved by conjugate
    gradients in float32, all images and channels at once, until every system's residual satisfies
    ``||b - L x|| <= tol * ||b||`` (default ``tol = 1e-6``: the refilled values then agree with the authors' direct
    sparse solve to about 5e-6 on [0, 1] images, 64x64, 10-90 % removed) or ``max_iter`` iterations pass (default
    ``10 * (H + W)``; a 64x64 image with 90 % removed converges in about 150). An image with every pixel removed
    has no data: it is refilled with 0 (plus noise). Then ``noise * N(0, 1)`` is added to the refilled pixels, from
    a private generator seeded with ``seed`` (one ``[C, H, W]`` draw shared by every image, so a result does not
    depend on the batch); ``noise=0`` gives the plain linear imputation.

    Args:
        inputs: ``[B, C, H, W]`` float images.
        removed: ``[B, 1, H, W]`` or ``[B, H, W]`` bool, True where a pixel (all channels) is removed.
        noise: Standard deviation of the noise added to refilled pixels (ROAD: 0.01).
        seed: Seed of the noise.
        tol: Relative residual at which the solver stops.
        max_iter: Most conjugate-gradient iterations.

    Returns:
        ``[B, C, H, W]`` of the inputs' dtype; kept pixels are unchanged.

    Example:
        >>> x = torch.tensor([[[[1.0, 0.0, 3.0]]]])
        >>> filled = noisy_linear_imputation(x, torch.tensor([[[[False, True, False]]]]), noise=0.0)
        >>> [round(v, 4) for v in filled.flatten().tolist()]
        [1.0, 2.0, 3.0]
    """
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        raise ValueError(
            f"inputs must be a floating-point Tensor [B, C, H, W], got {getattr(inputs, 'shape', inputs)}."
        )
    if removed.ndim == 3:
        removed = removed[:, None]
    if removed.shape != (inputs.shape[0], 1, *inputs.shape[-2:]):
        raise ValueError(
            f"removed must be a bool mask [B, 1, H, W] matching inputs {tuple(inputs.shape)}, "
            f"got {tuple(removed.shape)}."
        )
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise must be a float >= 0 (a standard deviation), got {noise!r}.")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}.")
    b, c, h, w = inputs.shape
    max_iter = 10 * (h + w) if max_iter is None else max_iter
    dtype = torch.float32
    u = removed.to(inputs.device, dtype).expand(b, c, h, w).reshape(b * c, h, w)  # [N,H,W] 1 = unknown
    v = inputs.to(dtype).reshape(b * c, h, w)  # [N,H,W]
    degree = _neighbours(torch.ones(1, h, w, device=inputs.device, dtype=dtype))  # [1,H,W] in-image weight

    def operator(x: Tensor) -> Tensor:
        return u * (degree * x - _neighbours(u * x))  # L x on the unknowns, 0 on kept pixels

    rhs = u * _neighbours((1 - u) * v)  # [N,H,W] known neighbours' contribution
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum((1, 2))  # [N]
    target = (tol * rhs.flatten(1).norm(dim=1)) ** 2  # [N]
    tiny = torch.finfo(dtype).tiny
    for it in range(max_iter):
        if it % 8 == 0 and bool((rs <= target).all()):
            break
        lp = operator(p)
        denom = (p * lp).sum((1, 2))
        alpha = torch.where(denom > 0, rs / denom.clamp_min(tiny), torch.zeros_like(rs))[:, None, None]
        x = x + alpha * p
        r = r - alpha * lp
        rs_new = (r * r).sum((1, 2))
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))[:, None, None]
        p = r + beta * p
        rs = rs_new
    filled = torch.where(u > 0, x, v).view(b, c, h, w)
    if noise > 0:
        generator = torch.Generator().manual_seed(seed)
        draw = torch.randn((c, h, w), generator=generator, dtype=torch.float32).to(inputs.device, dtype)
        filled = filled + noise * draw[None] * u.view(b, c, h, w)
    return filled.to(inputs.dtype)


def _check_percentages(percentages: Sequence[float]) -> tuple[float, ...]:
    values = tuple(percentages) if not isinstance(percentages, (str, bytes)) else ()
    if not values or not all(isinstance(p, (int, float)) and 0 < p < 100 for p in values):
        raise ValueError(f"percentages must be a non-empty sequence of numbers in (0, 100), got {percentages!r}.")
    return tuple(float(p) for p in values)


def road_masks(maps: Tensor, percentage: float, *, most_relevant_first: bool) -> Tensor:
    """Removed pixels ``[B, 1, H, W]`` bool: the ``percentage`` % most (MoRF) or least (LeRF) salient.

    As pytorch-grad-cam's ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` with its ``percentile =
    100 - percentage``: MoRF removes ``map >= q`` with ``q`` the ``(100 - percentage)``-th percentile of the map
    (linear interpolation, as ``numpy.percentile``); LeRF does the same on ``1 - map``. Ties at the threshold are all
    removed (a constant map removes everything).

    Example:
        >>> road_masks(torch.tensor([[[[0.1, 0.9, 0.5, 0.3]]]]), 50, most_relevant_first=True)
        tensor([[[[False,  True,  True, False]]]])
    """
    flat = maps.flatten(1).float()  # [B,HW]
    scores = flat if most_relevant_first else 1 - flat
    q = torch.quantile(scores, 1 - percentage / 100, dim=1, keepdim=True)  # [B,1]
    return (scores >= q).view(maps.shape[0], 1, *maps.shape[-2:])


def road_curves(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    batch_size: int = 64,
    run: Run | None = None,
) -> tuple[Tensor, Tensor]:
    """MoRF and LeRF curves of ROAD: the target's softmax probability after removing each percentage of pixels.

    For every image and percentage, the most (MoRF) or least (LeRF) salient pixels (:func:`road_masks`) are refilled
    by :func:`noisy_linear_imputation` and the probability of ``targets`` read. A faithful map makes MoRF fall fast
    and LeRF stay high. Imputations and forwards run ``batch_size`` images at a time, without gradients, eval mode
    (restored after), global RNG untouched. The same noise draw (``seed``) is used at every level and image.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices.
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency at the input resolution.
        percentages: Percent of pixels removed at each point (default 10, 20, ..., 90).
        noise: Standard deviation of the imputation noise (ROAD: 0.01).
        seed: Seed of the noise.
        tol: Relative residual of the imputation solver.
        batch_size: Most imputed images per forward.
        run: Precision and output adapter.

    Returns:
        ``(morf, lerf)``, each ``[B, P]`` float32 probabilities.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> morf, lerf = road_curves(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4),
        ...                          percentages=(25, 50))
        >>> morf.shape, lerf.shape
        (torch.Size([2, 2]), torch.Size([2, 2]))
    """
    targets = _check_model_inputs(inputs, targets, model, run)
    maps = _check_maps(maps, inputs)
    levels = _check_percentages(percentages)
    _check_batch_size(batch_size)
    run = run or Run()
    b, n = inputs.shape[0], len(levels)
    probs = torch.empty(2 * b * n, dtype=torch.float32, device=inputs.device)  # [mode, image, level] flattened
    with _scoring(model, inputs):
        masks = torch.stack(
            [
                torch.stack([road_masks(maps, lv, most_relevant_first=mode == 0) for lv in levels], 1)  # [B,P,1,H,W]
                for mode in (0, 1)
            ]
        ).flatten(0, 2)  # [2*B*P,1,H,W]
        img = torch.arange(b, device=inputs.device).repeat_interleave(n).repeat(2)  # [2*B*P]

        def chunk(lo: int, hi: int) -> None:  # written by index: an out-of-memory retry overwrites
            filled = noisy_linear_imputation(inputs[img[lo:hi]], masks[lo:hi], noise=noise, seed=seed, tol=tol)
            probs[lo:hi] = _target_outputs(model, filled, targets[img[lo:hi]], run)

        run_chunked(chunk, 2 * b * n, batch_size, what="imputed images")  # on out-of-memory: half the chunk
    morf, lerf = probs.view(2, b, n)
    return morf, lerf


def road_score(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    tol: float = DEFAULT_TOL,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """ROAD combined score per image: ``mean over percentages of (LeRF - MoRF) / 2``; higher is better.

    pytorch-grad-cam's ``ROADCombined`` (with ``ClassifierOutputSoftmaxTarget``): its curves are differences to the
    unperturbed score, which cancel in ``LeRF - MoRF``. See :func:`road_curves` for the arguments.

    Returns:
        ``[B]`` float32 in ``[-0.5, 0.5]``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> score = road_score(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4))
        >>> score.shape, bool((score.abs() <= 0.5).all())
        (torch.Size([2]), True)
    """
    morf, lerf = road_curves(
        model,
        inputs,
        targets,
        maps,
        percentages=percentages,
        noise=noise,
        seed=seed,
        tol=tol,
        batch_size=batch_size,
        run=run,
    )
    return ((lerf - morf) / 2).mean(1)
