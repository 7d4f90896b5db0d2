"""Quantus' feature-perturbation faithfulness metrics, batched in torch: equal to Quantus 0.6 on the same inputs.

Faithfulness Correlation (Bhatt et al. 2020), Faithfulness Estimate (Alvarez-Melis & Jaakkola 2018),
Monotonicity (Arya et al. 2019), Monotonicity Correlation (Nguyen & Martinez 2020) and Pixel-Flipping (Bach et
al. 2015), as ``quantus.metrics.faithfulness`` computes them. As Quantus, a *feature* is one element of the input
``[C, H, W]`` (not a pixel): attributions ``[B, 1, H, W]`` are broadcast over the channels, each channel of a
pixel is its own feature, and features are ordered by a stable argsort of the broadcast attributions (ties in
raster order of ``[C, H, W]``: channel 0 of every tied pixel first; Quantus' numpy ``argsort`` is not stable,
so its order of ties is arbitrary). ``features_in_step`` features are perturbed per step, ``ceil(F / step)``
steps for ``F = C * H * W`` features.

The model's output is read through the target (:mod:`lightning_saliency.targets`): ``softmax=True`` reads
:meth:`~lightning_saliency.targets.Target.confidence` (for a class: its softmax probability, Quantus'
``softmax=True``), ``softmax=False`` :meth:`~lightning_saliency.targets.Target.score` (for a class: its logit).
Each metric's defaults are Quantus': the same baseline, ``absolute`` (Quantus' ``abs``), softmax, steps and
samples. Quantus' ``normalise=True`` (attributions divided by the batch's largest ``|a|``) is left out: a positive
scale of the attributions changes none of these scores (argsorts, Pearson and Spearman correlations).

Perturbation baselines (Quantus' ``get_baseline_value``, per image): ``"black"`` the image's minimum, ``"white"``
its maximum, ``"mean"`` its mean, a number, or ``"uniform"``: one value ``U(uniform_range)`` per perturbation
(Quantus draws one per image and perturbation from numpy's global RNG; here one per perturbation, shared by the
images of the batch, from a private generator seeded with ``seed``, so that a score does not depend on the other
images of the batch and training's RNG streams are untouched). Faithfulness Correlation's random subsets are drawn
the same way.

Perturbed inputs are built lazily, step-major (all images at one step, then the next: a forward of ``B`` inputs
is the batch Quantus predicts), ``batch_size`` per forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_saliency._checks import an_int, int_at_least
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_model_inputs,
    _scoring,
    _stable_ranks,
    _target_outputs,
)
from lightning_saliency.metrics.functional._quantus import _baseline_values, _broadcast_attributions, _check_flag
from lightning_saliency.metrics.functional.correlation import _average_ranks, pearson
from lightning_saliency.targets import Target, TargetLike

__all__ = [
    "PerturbBaseline",
    "faithfulness_correlation",
    "faithfulness_correlation_subsets",
    "faithfulness_estimate",
    "monotonicity",
    "monotonicity_correlation",
    "pixel_flipping",
    "pixel_flipping_curve",
]

PerturbBaseline = Literal["black", "white", "mean", "uniform"] | float
"""What perturbed features are set to: a name (see the module docstring) or a number."""

Similarity = Literal["pearson", "spearman"]
_NAMES = ("black", "white", "mean", "uniform")


def _spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho per row: Pearson of the average ranks (ties share their mean rank), values compared in float64."""
    return pearson(_average_ranks(a.double().contiguous()), _average_ranks(b.double().contiguous()))


def _similarity(name: Similarity) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "pearson":
        return pearson
    if name == "spearman":
        return _spearman
    raise ValueError(f"similarity must be 'pearson' or 'spearman', got {name!r}.")


def _check_baseline(perturb_baseline: PerturbBaseline, uniform_range: tuple[float, float]) -> None:
    number = isinstance(perturb_baseline, (int, float)) and not isinstance(perturb_baseline, bool)
    if not number and perturb_baseline not in _NAMES:
        raise ValueError(
            f"perturb_baseline must be one of {', '.join(map(repr, _NAMES))} or a number, got {perturb_baseline!r}."
        )
    if number and not math.isfinite(perturb_baseline):  # type: ignore[arg-type]
        raise ValueError(f"perturb_baseline must be a finite number, got {perturb_baseline!r}.")
    ok = isinstance(uniform_range, (tuple, list)) and len(uniform_range) == 2
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in uniform_range):
        raise ValueError(f"uniform_range must be a pair (low, high) of numbers, got {uniform_range!r}.")
    if not uniform_range[0] <= uniform_range[1]:
        raise ValueError(f"uniform_range must have low <= high, got {uniform_range!r}.")


def _flat_attributions(attributions: Tensor, inputs: Tensor, absolute: bool) -> Tensor:
    """Attributions broadcast to the inputs and flattened: ``[B, F]`` float32, ``F = C * H * W``.

    NaN or inf is an error here (Quantus would carry it into every correlation); the region metrics
    (:mod:`.faithfulness_regions`) and the map-only ones (:func:`._quantus._prepared`) read them as 0 instead.
    """
    a = _broadcast_attributions(attributions, inputs).float()
    if not torch.isfinite(a).all():
        raise ValueError("attributions must be finite, got NaN or inf values.")
    a = a.abs() if absolute else a
    return a.reshape(inputs.shape[0], -1)  # [B,F]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(an_int(seed, "seed"))


def _fill(
    flat: Tensor, baseline: PerturbBaseline, calls: int, uniform_range: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """The baseline value of each image at each of ``calls`` perturbations, ``[B, calls]`` float32 (see module)."""
    b = flat.shape[0]
    if baseline == "uniform":
        low, high = uniform_range
        draws = torch.rand(calls, generator=generator) * (high - low) + low  # [calls] shared by the images
        return draws.to(flat.device)[None].expand(b, calls)
    return _baseline_values(flat.float(), baseline)[:, None].expand(b, calls)  # [B,calls]


def _step_of(a_flat: Tensor, features_in_step: int, descending: bool) -> tuple[Tensor, int]:
    """``(step [B, F], n)``: the step at which each feature is perturbed (stable order of ``a``), and the steps."""
    f = a_flat.shape[1]
    ranks = _stable_ranks(a_flat, descending)[1]  # [B,F] as np.argsort(-a), ties in index order
    return ranks // features_in_step, math.ceil(f / features_in_step)


def _outputs(
    model: nn.Module,
    targets: Target,
    run: Run,
    total: int,
    batch_size: int,
    softmax: bool,
    build: Callable[[Tensor], tuple[Tensor, Tensor]],
    device: torch.device,
) -> Tensor:
    """The target's output ``[total]`` float32 on ``build(items) -> (inputs [P, C, ...], image of each [P])``.

    ``softmax``: the confidence (for a class: its softmax probability), else the score (its logit). Built and run
    ``batch_size`` items per forward; on out-of-memory a chunk is retried at half the size (written by index).
    """
    out = torch.empty(total, dtype=torch.float32, device=device)

    def chunk(lo: int, hi: int) -> None:
        x, image = build(torch.arange(lo, hi, device=device))
        out[lo:hi] = _target_outputs(model, x, targets[image], run, softmax)

    run_chunked(chunk, total, batch_size, what="perturbed inputs")
    return out


def _prepare(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    absolute: bool,
    softmax: bool,
    batch_size: int,
    perturb_baseline: PerturbBaseline,
    uniform_range: tuple[float, float],
    run: Run | None,
) -> tuple[Target, Tensor, Tensor, Run]:
    """Checked ``(targets, inputs [B, F], attributions [B, F], run)``."""
    target = _check_model_inputs(inputs, targets, model, run)
    _check_flag(absolute, "absolute")
    _check_flag(softmax, "softmax")
    _check_batch_size(batch_size)
    _check_baseline(perturb_baseline, uniform_range)
    a_flat = _flat_attributions(attributions, inputs, absolute)
    return target, inputs.reshape(inputs.shape[0], -1), a_flat, run or Run()


def _step_sums(a_flat: Tensor, step: Tensor, n: int) -> Tensor:
    """The attributions summed per step ``[B, n]`` float64."""
    return torch.zeros(a_flat.shape[0], n, dtype=torch.float64, device=a_flat.device).scatter_add_(
        1, step, a_flat.double()
    )


def _clean(model: nn.Module, inputs: Tensor, targets: Target, run: Run, batch_size: int, softmax: bool) -> Tensor:
    """The target's output on the inputs themselves, ``[B]``."""
    b = inputs.shape[0]
    return _outputs(model, targets, run, b, batch_size, softmax, lambda i: (inputs[i], i), inputs.device)


def faithfulness_correlation_subsets(num_features: int, subset_size: int, nr_runs: int, seed: int = 0) -> Tensor:
    """Faithfulness Correlation's random subsets: ``[nr_runs, subset_size]`` feature indices, each without replacement.

    One subset per run, shared by the images (a score does not depend on the batch), from a CPU generator seeded
    with ``seed``.

    Example:
        >>> s = faithfulness_correlation_subsets(10, 4, 3, seed=0)
        >>> s.shape, bool((s.sort(1).values.diff(1) > 0).all())
        (torch.Size([3, 4]), True)
    """
    return _subsets(num_features, subset_size, nr_runs, _generator(seed))


def _subsets(num_features: int, subset_size: int, nr_runs: int, generator: torch.Generator) -> Tensor:
    return torch.stack([torch.randperm(num_features, generator=generator)[:subset_size] for _ in range(nr_runs)])


def faithfulness_correlation(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline: PerturbBaseline = "black",
    similarity: Similarity = "pearson",
    absolute: bool = False,
    softmax: bool = False,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Faithfulness Correlation per image (Bhatt et al. 2020; ``quantus.FaithfulnessCorrelation``, its defaults).

    In each of ``nr_runs`` runs a random subset of ``subset_size`` features is set to the baseline; the score is
    the correlation, over the runs, between the attributions summed over the subset and the fall of the target's
    output ``f(x) - f(x_perturbed)`` (``softmax=False``: for a class, its logit). Higher is better, in [-1, 1]
    (0 where undefined: a constant map).

    Args:
        model: The model.
        inputs: ``[B, C, H, W]`` (or ``[B, C, D, H, W]``) float inputs.
        targets: What the attributions explain (:mod:`lightning_saliency.targets`; ``[B]`` class indices).
        attributions: ``[B, 1, H, W]`` (or ``[B, H, W]``, or ``[B, C, H, W]``) attributions.
        nr_runs: Random subsets (each one forward per image).
        subset_size: Features per subset, fewer than ``F = C * H * W``.
        perturb_baseline: What the subset is set to (module docstring).
        similarity: ``"pearson"`` (Quantus' default) or ``"spearman"``.
        absolute: Score ``|attributions|`` (Quantus' ``abs``).
        softmax: Read the target's confidence instead of its score.
        uniform_range: ``(low, high)`` of the ``"uniform"`` baseline.
        seed: Seed of the subsets and of ``"uniform"`` draws (:func:`faithfulness_correlation_subsets`).
        batch_size: Most inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> exact = (net[1].weight[[0, 1]].view(2, 1, 4, 4) * (x - x.amin((1, 2, 3), keepdim=True))).detach()
        >>> faithfulness_correlation(net, x, torch.tensor([0, 1]), exact, nr_runs=10, subset_size=4).round(decimals=4)
        tensor([1., 1.])
    """
    checked = (absolute, softmax, batch_size, perturb_baseline, uniform_range)
    target, x, a, run = _prepare(model, inputs, targets, attributions, *checked, run)
    b, f = a.shape
    int_at_least(nr_runs, 1, "nr_runs")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or not 1 <= subset_size < f:
        raise ValueError(
            f"subset_size must be an int in [1, {f - 1}] (fewer than the inputs' {f} features C * H * W), "
            f"got {subset_size!r}."
        )
    correlate = _similarity(similarity)
    generator = _generator(seed)
    subsets = _subsets(f, subset_size, nr_runs, generator).to(inputs.device)  # [R,S] drawn first, then the fill
    fill = _fill(x, perturb_baseline, nr_runs, uniform_range, generator)  # [B,R]

    def build(items: Tensor) -> tuple[Tensor, Tensor]:
        r, img = items // b, items % b
        mask = torch.zeros(items.shape[0], f, dtype=torch.bool, device=x.device).scatter_(1, subsets[r], True)
        return torch.where(mask, fill[img, r][:, None].to(x.dtype), x[img]).view(-1, *inputs.shape[1:]), img

    with _scoring(model, inputs):
        y = _clean(model, inputs, target, run, batch_size, softmax)  # [B]
        perturbed = _outputs(model, target, run, nr_runs * b, batch_size, softmax, build, x.device).view(nr_runs, b)
    deltas = (y[None] - perturbed).T  # [B,R]
    sums = a.double()[:, subsets].sum(2)  # [B,R]
    return correlate(sums, deltas)


def faithfulness_estimate(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: PerturbBaseline = "black",
    similarity: Similarity = "pearson",
    absolute: bool = False,
    softmax: bool = False,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Faithfulness Estimate per image (Alvarez-Melis & Jaakkola 2018; ``quantus.FaithfulnessEstimate``, its defaults).

    The features are taken in decreasing attribution, ``features_in_step`` at a time; each group alone is set to the
    baseline (the others keep their values). The score is the correlation between each group's summed attribution
    and the fall of the target's output ``f(x) - f(x_perturbed)``. Higher is better, in [-1, 1] (0 where
    undefined). Costs ``ceil(C * H * W / features_in_step) + 1`` forwards per image: Quantus' default of one
    feature per step is meant for small inputs; pass a larger step for images.

    Args:
        model: The model.
        inputs: ``[B, C, H, W]`` float inputs.
        targets: What the attributions explain.
        attributions: ``[B, 1, H, W]`` (or ``[B, H, W]``, ``[B, C, H, W]``).
        features_in_step: Features perturbed per step.
        perturb_baseline: What the features are set to.
        similarity: ``"pearson"`` (Quantus' default) or ``"spearman"``.
        absolute: Score ``|attributions|``.
        softmax: Read the target's confidence instead of its score.
        uniform_range: ``(low, high)`` of the ``"uniform"`` baseline.
        seed: Seed of ``"uniform"`` draws.
        batch_size: Most inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> exact = (net[1].weight[[0, 1]].view(2, 1, 2, 2) * (x - x.amin((1, 2, 3), keepdim=True))).detach()
        >>> faithfulness_estimate(net, x, torch.tensor([0, 1]), exact).round(decimals=4)
        tensor([1., 1.])
    """
    checked = (absolute, softmax, batch_size, perturb_baseline, uniform_range)
    target, x, a, run = _prepare(model, inputs, targets, attributions, *checked, run)
    int_at_least(features_in_step, 1, "features_in_step")
    correlate = _similarity(similarity)
    b = x.shape[0]
    step, n = _step_of(a, features_in_step, descending=True)  # [B,F]
    fill = _fill(x, perturb_baseline, n, uniform_range, _generator(seed))  # [B,n]

    def build(items: Tensor) -> tuple[Tensor, Tensor]:
        s, img = items // b, items % b
        mask = step[img] == s[:, None]  # [P,F]
        return torch.where(mask, fill[img, s][:, None].to(x.dtype), x[img]).view(-1, *inputs.shape[1:]), img

    with _scoring(model, inputs):
        y = _clean(model, inputs, target, run, batch_size, softmax)  # [B]
        perturbed = _outputs(model, target, run, n * b, batch_size, softmax, build, x.device).view(n, b)
    return correlate(_step_sums(a, step, n), (y[None] - perturbed).T)


def monotonicity(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: PerturbBaseline = "black",
    absolute: bool = True,
    softmax: bool = True,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Monotonicity per image (Arya et al. 2019; ``quantus.Monotonicity``'s defaults): 1 if inserting features helps.

    Starting from the baseline image, the input's features are inserted in *increasing* attribution,
    ``features_in_step`` at a time; the score is 1 if the target's output (``softmax=True``: for a class, its
    probability) never decreases from one step to the next, else 0. The mean over images is the fraction of
    monotonic explanations; higher is better.

    Quantus 0.6 differs by a bug: its default ``perturb_func`` sets the inserted features to the baseline of the
    (already baseline) image instead of the input's values, so the image never changes and, with ``"black"``,
    every explanation scores True. This is Quantus with a ``perturb_func`` that inserts the input's values (the
    paper's definition and Quantus' docstring), and equals it then (tested).

    Args:
        model: The model.
        inputs: ``[B, C, H, W]`` float inputs.
        targets: What the attributions explain.
        attributions: ``[B, 1, H, W]`` (or ``[B, H, W]``, ``[B, C, H, W]``).
        features_in_step: Features inserted per step (``ceil(C * H * W / features_in_step)`` forwards per image).
        perturb_baseline: The image the features are inserted into.
        absolute: Order by ``|attributions|`` (Quantus' default ``abs=True``).
        softmax: Read the target's confidence (Quantus' default) instead of its score.
        uniform_range: ``(low, high)`` of the ``"uniform"`` baseline (one draw).
        seed: Seed of the ``"uniform"`` draw.
        batch_size: Most inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32, 0 or 1.

    Example:
        >>> from lightning_saliency.targets import RegressionTarget
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))  # a regression with positive weights
        >>> _ = nn.init.constant_(net[1].weight, 1.0)
        >>> x, a = torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2)
        >>> monotonicity(net, x, RegressionTarget(), a, softmax=False, perturb_baseline=0.0)  # each insertion adds
        tensor([1.])
    """
    checked = (absolute, softmax, batch_size, perturb_baseline, uniform_range)
    target, x, a, run = _prepare(model, inputs, targets, attributions, *checked, run)
    int_at_least(features_in_step, 1, "features_in_step")
    b = x.shape[0]
    step, n = _step_of(a, features_in_step, descending=False)  # [B,F]
    base = _fill(x, perturb_baseline, 1, uniform_range, _generator(seed))[:, 0]  # [B]

    def build(items: Tensor) -> tuple[Tensor, Tensor]:
        s, img = items // b, items % b
        inserted = step[img] <= s[:, None]  # [P,F]
        return torch.where(inserted, x[img], base[img][:, None].to(x.dtype)).view(-1, *inputs.shape[1:]), img

    with _scoring(model, inputs):
        preds = _outputs(model, target, run, n * b, batch_size, softmax, build, x.device).view(n, b).T  # [B,n]
    return (preds.diff(dim=1) >= 0).all(1).float()


def monotonicity_correlation(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    nr_samples: int = 100,
    features_in_step: int = 1,
    eps: float = 1e-5,
    perturb_baseline: PerturbBaseline = "uniform",
    similarity: Similarity = "spearman",
    absolute: bool = True,
    softmax: bool = True,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Monotonicity Correlation per image (Nguyen & Martinez 2020; ``quantus.MonotonicityCorrelation``, its defaults).

    The features are taken in increasing attribution, ``features_in_step`` at a time; each group alone is set to
    the baseline ``nr_samples`` times (``"uniform"``: a new draw each time), and its variance is the mean of
    ``(f(x_perturbed) - f(x))^2 / f(x)^2`` (``/ 1`` where ``|f(x)| < eps``). The score is the rank correlation
    between each group's summed attribution and its variance. Higher is better, in [-1, 1] (0 where undefined).
    Costs ``nr_samples * ceil(C * H * W / features_in_step) + 1`` forwards per image.

    Args:
        model: The model.
        inputs: ``[B, C, H, W]`` float inputs.
        targets: What the attributions explain.
        attributions: ``[B, 1, H, W]`` (or ``[B, H, W]``, ``[B, C, H, W]``).
        nr_samples: Perturbations per step.
        features_in_step: Features perturbed per step.
        eps: Below this ``|f(x)|`` the variance is not divided by ``f(x)^2``.
        perturb_baseline: What the features are set to (default ``"uniform"``, as Quantus).
        similarity: ``"spearman"`` (Quantus' default) or ``"pearson"``.
        absolute: Score ``|attributions|`` (Quantus' default ``abs=True``).
        softmax: Read the target's confidence (Quantus' default) instead of its score.
        uniform_range: ``(low, high)`` of the ``"uniform"`` baseline.
        seed: Seed of ``"uniform"`` draws.
        batch_size: Most inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, a = torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2)
        >>> monotonicity_correlation(net, x, torch.tensor([0, 2]), a, nr_samples=4).shape
        torch.Size([2])
    """
    checked = (absolute, softmax, batch_size, perturb_baseline, uniform_range)
    target, x, a, run = _prepare(model, inputs, targets, attributions, *checked, run)
    int_at_least(nr_samples, 1, "nr_samples")
    int_at_least(features_in_step, 1, "features_in_step")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a float >= 0, got {eps!r}.")
    correlate = _similarity(similarity)
    b, j = x.shape[0], nr_samples
    step, n = _step_of(a, features_in_step, descending=False)  # [B,F]
    fill = _fill(x, perturb_baseline, n * j, uniform_range, _generator(seed)).reshape(b, n, j)  # [B,n,J] step-major

    def build(items: Tensor) -> tuple[Tensor, Tensor]:
        s, sample, img = items // (j * b), (items // b) % j, items % b
        mask = step[img] == s[:, None]  # [P,F]
        value = fill[img, s, sample][:, None].to(x.dtype)
        return torch.where(mask, value, x[img]).view(-1, *inputs.shape[1:]), img

    with _scoring(model, inputs):
        y = _clean(model, inputs, target, run, batch_size, softmax)  # [B]
        perturbed = _outputs(model, target, run, n * j * b, batch_size, softmax, build, x.device).view(n, j, b)
    inv = torch.where(y.abs() >= eps, 1.0 / y.double().abs(), torch.ones_like(y, dtype=torch.float64)) ** 2  # [B]
    variance = (perturbed - y).square().mean(1).T.double() * inv[:, None]  # [B,n]
    return correlate(_step_sums(a, step, n), variance)


def pixel_flipping_curve(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: PerturbBaseline = "black",
    absolute: bool = False,
    softmax: bool = True,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Pixel-Flipping curves (Bach et al. 2015; ``quantus.PixelFlipping``'s default result, its defaults).

    The features are set to the baseline in decreasing attribution, ``features_in_step`` more at each step
    (cumulatively); the curve is the target's output (``softmax=True``: for a class, its probability) after each
    step, ``ceil(C * H * W / features_in_step)`` points (the unperturbed input is not one). As Quantus, each step's
    baseline is taken from the image as perturbed so far: for ``"mean"`` the mean moves as features are replaced
    (``"black"`` and ``"white"`` do not); ``"uniform"`` draws a new value per step.

    Args:
        model: The model.
        inputs: ``[B, C, H, W]`` float inputs.
        targets: What the attributions explain.
        attributions: ``[B, 1, H, W]`` (or ``[B, H, W]``, ``[B, C, H, W]``).
        features_in_step: Features flipped per step (one forward per image per step).
        perturb_baseline: What the features are set to.
        absolute: Order by ``|attributions|``.
        softmax: Read the target's confidence (Quantus' default) instead of its score.
        uniform_range: ``(low, high)`` of the ``"uniform"`` baseline.
        seed: Seed of ``"uniform"`` draws.
        batch_size: Most inputs per forward.
        run: Precision and output adapter.

    Returns:
        ``[B, n]`` float32, ``n = ceil(C * H * W / features_in_step)``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> pixel_flipping_curve(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), torch.rand(2, 1, 4, 4),
        ...                      features_in_step=4).shape
        torch.Size([2, 4])
    """
    checked = (absolute, softmax, batch_size, perturb_baseline, uniform_range)
    target, x, a, run = _prepare(model, inputs, targets, attributions, *checked, run)
    int_at_least(features_in_step, 1, "features_in_step")
    b = x.shape[0]
    step, n = _step_of(a, features_in_step, descending=True)  # [B,F]
    if perturb_baseline == "mean":
        fill = _moving_means(x, step, n)  # [B,n]
    else:
        fill = _fill(x, perturb_baseline, n, uniform_range, _generator(seed))  # [B,n]

    def build(items: Tensor) -> tuple[Tensor, Tensor]:
        s, img = items // b, items % b
        feature_step = step[img]  # [P,F]
        value = fill[img].gather(1, feature_step).to(x.dtype)  # [P,F] the value each feature was flipped to
        return torch.where(feature_step <= s[:, None], value, x[img]).view(-1, *inputs.shape[1:]), img

    with _scoring(model, inputs):
        return _outputs(model, target, run, n * b, batch_size, softmax, build, x.device).view(n, b).T  # [B,n]


def _moving_means(x: Tensor, step: Tensor, n: int) -> Tensor:
    """The mean of each image before each step of pixel flipping with the ``"mean"`` baseline, ``[B, n]`` float32.

    Step ``t`` sets its ``k_t`` features (original sum ``O_t``) to ``m_t``: ``m_{t+1} = m_t (1 + k_t / F) - O_t / F``;
    with ``P_t = prod_{u<t} (1 + k_u / F)``: ``m_t = P_t (m_0 - sum_{u<t} O_u / (F P_{u+1}))`` (float64).
    """
    b, f = x.shape
    xd = x.double()
    orig = torch.zeros(b, n, dtype=torch.float64, device=x.device).scatter_add_(1, step, xd)  # [B,n] O_t
    counts = torch.zeros(n, dtype=torch.float64, device=x.device).scatter_add_(
        0, step[0], torch.ones(f, dtype=torch.float64, device=x.device)
    )  # [n] k_t (the same for every image)
    growth = torch.cumprod(1 + counts / f, 0)  # [n] P_{t+1}
    before = torch.cat([growth.new_ones(1), growth[:-1]])  # [n] P_t
    removed = torch.cumsum(orig / (f * growth), 1)  # [B,n] sum_{u<=t}
    removed = torch.cat([removed.new_zeros(b, 1), removed[:, :-1]], 1)  # [B,n] sum_{u<t}
    return (before * (xd.mean(1, keepdim=True) - removed)).float()


def pixel_flipping(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: PerturbBaseline = "black",
    absolute: bool = False,
    softmax: bool = True,
    uniform_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Area under the Pixel-Flipping curve per image: Quantus' ``return_auc_per_sample=True`` (trapezoids, ``dx=1``).

    The sum of the trapezoids between the ``n`` points of :func:`pixel_flipping_curve` (``np.trapz(curve, dx=1)``,
    so it grows with ``n``; divide by ``n - 1`` for the mean height, which is what the monitor logs). Lower is
    better: the output falls fast when the most relevant features go first.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, a = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
        >>> curve = pixel_flipping_curve(net, x, torch.tensor([0, 2]), a, features_in_step=4)
        >>> auc = pixel_flipping(net, x, torch.tensor([0, 2]), a, features_in_step=4)
        >>> torch.allclose(auc, torch.trapezoid(curve, dim=1))
        True
    """
    curves = pixel_flipping_curve(
        model,
        inputs,
        targets,
        attributions,
        features_in_step=features_in_step,
        perturb_baseline=perturb_baseline,
        absolute=absolute,
        softmax=softmax,
        uniform_range=uniform_range,
        seed=seed,
        batch_size=batch_size,
        run=run,
    )
    return torch.trapezoid(curves.double(), dim=1).float()
