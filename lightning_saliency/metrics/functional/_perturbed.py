"""Private helpers of the scores that re-explain perturbed inputs (Quantus' robustness family).

Every such score explains ``B * n`` (image, perturbation) pairs: :func:`_each_pair` runs them in chunks of
``batch_size`` pairs and returns a ``[B, n]`` table of per-pair values, which :func:`_reduce` turns into one
score per image.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run, preserved_rng
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.metrics.functional._common import _check_model_inputs, _scoring
from lightning_saliency.metrics.functional._quantus import Explainer, _explained, _normalised, _predicted
from lightning_saliency.targets import Target

__all__: list[str] = []

Phi = Callable[[Tensor, Tensor], Tensor]
"""``phi(x, rows)``: the explanation ``[N, D]`` (float32, flattened) of inputs ``x [N, ...]`` for image ``rows``."""


def _explainer(explain: Explainer, model: nn.Module, target: Target, targets: Any, run: Run) -> Phi:
    """``phi(x, rows)`` explaining ``x`` for the targets of images ``rows [N]`` (a method gets the Target)."""
    if not callable(explain):
        raise TypeError(f"explain must be a SaliencyMethod or a callable, got {type(explain).__name__}.")

    def phi(x: Tensor, rows: Tensor) -> Tensor:
        return _explained(explain, model, x, rows, target, targets, run).flatten(1)  # [N,D]

    return phi


def _each_pair(fn: Callable[[Tensor, Tensor], Tensor], b: int, n: int, batch_size: int, device: torch.device) -> Tensor:
    """``fn(rows, samples) -> [N, ...]`` over all ``B * n`` (image, perturbation) pairs in chunks: ``[B, n, ...]``.

    Pairs run perturbation-major (pair ``i`` is image ``i % B`` under perturbation ``i // B``), so with
    ``batch_size = B`` each chunk is one perturbation of the whole batch, as Quantus and captum run them.
    """
    pairs = torch.arange(b * n, device=device)
    out = run_chunked(
        lambda lo, hi: fn(pairs[lo:hi] % b, pairs[lo:hi] // b), b * n, batch_size, what="perturbed inputs"
    )
    table = torch.cat(out)  # [n*B,...]
    return table.view(n, b, *table.shape[1:]).transpose(0, 1)


def _predictions(model: nn.Module, x: Tensor, run: Run) -> Tensor:
    """The predicted class ``[N, P]`` of ``x``; one forward."""
    return _predicted(run.output(model, x))


def _reduce(values: Tensor, kept: Tensor | None, how: str, score: str) -> Tensor:
    """``values [B, n]`` reduced over the perturbations ``kept [B, n]`` (all if ``None``) by ``"max"``/``"mean"``.

    An image none of whose perturbations kept the prediction falls back to all of them, with a warning.
    """
    if kept is not None:
        none_kept = ~kept.any(1)  # [B]
        if bool(none_kept.any()):
            rows = none_kept.nonzero().flatten().tolist()
            warnings.warn(
                f"{score}: every perturbation changed the prediction of image(s) {rows}; their score uses all "
                "perturbations (pass drop_changed=False to always do so, or use smaller perturbations).",
                SaliencyWarning,
                stacklevel=3,
            )
            kept = kept | none_kept[:, None]
        fill = float("-inf") if how == "max" else 0.0
        values = torch.where(kept, values, torch.full_like(values, fill))
        if how == "mean":
            return values.sum(1) / kept.sum(1)
    return values.amax(1) if how == "max" else values.mean(1)


def _uniform_perturbations(shape: tuple[int, ...], n: int, low: float, high: float, seed: int) -> Tensor:
    """``n`` seeded draws ``U(low, high)`` of shape ``shape``: ``[n, *shape]`` float32 on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return low + torch.rand((n, *shape), generator=generator) * (high - low)


def _check_bounds(lower_bound: Any, upper_bound: Any) -> tuple[float, float]:
    """Quantus' uniform noise bounds as ``(low, high)``: ``U(-lower, lower)`` without an upper bound."""
    if isinstance(lower_bound, bool) or not isinstance(lower_bound, (int, float)):
        raise ValueError(f"lower_bound must be a float, got {lower_bound!r}.")
    if upper_bound is None:
        if lower_bound < 0:
            raise ValueError(
                f"lower_bound must be >= 0 without an upper_bound (U(-lower, lower)), got {lower_bound!r}."
            )
        return -float(lower_bound), float(lower_bound)
    if isinstance(upper_bound, bool) or not isinstance(upper_bound, (int, float)) or upper_bound <= lower_bound:
        raise ValueError(f"upper_bound must be None or a float > lower_bound ({lower_bound}), got {upper_bound!r}.")
    return float(lower_bound), float(upper_bound)


Perturb = Callable[[Tensor, Tensor], Tensor]
"""``perturb(rows, samples)``: the perturbed inputs ``[N, C, H, W]`` of pairs (image ``rows``, ``samples``)."""

Value = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]
"""``value(rows, x_perturbed, e_perturbed, e_clean)``: each pair's value ``[N]`` (explanations ``[N, D]``), or
``(value, output)`` when it ran the model on ``x_perturbed`` anyway (its output then gives the predictions)."""


def _shifted(inputs: Tensor, deltas: Tensor) -> Perturb:
    """``perturb(rows, samples) = inputs[rows] + deltas[samples]`` (computed in float32)."""
    deltas = deltas.to(inputs.device)

    def perturb(rows: Tensor, samples: Tensor) -> Tensor:
        return (inputs[rows].float() + deltas[samples]).to(inputs.dtype)

    return perturb


@dataclass(frozen=True)
class _Options:
    """The functionals' shared keyword arguments.

    Post-processing (:func:`_normalised`), whether perturbations that change the prediction are left out, pairs
    per pass, and precision.
    """

    normalise: str | None = None
    absolute: bool = False
    drop_changed: bool = False
    batch_size: int = 64
    run: Run | None = None


def _perturbed_table(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: Any,
    n: int,
    perturb: Perturb,
    value: Value,
    options: _Options,
) -> tuple[Tensor, Tensor | None]:
    """Each (image, perturbation) pair's ``value`` ``[B, n]``, and whether it kept the prediction.

    The second is ``[B, n]`` bool, ``None`` unless ``options.drop_changed``. The clean explanations are computed
    once for the batch, the perturbed ones for ``options.batch_size`` pairs at a time; both are post-processed by
    :func:`_normalised`. The global RNG is preserved.
    """
    normalise, absolute, drop_changed, batch_size = (
        options.normalise,
        options.absolute,
        options.drop_changed,
        options.batch_size,
    )
    run = options.run or Run()
    target = _check_model_inputs(inputs, targets, model, run)
    explained = _explainer(explain, model, target, targets, run)

    def phi(x: Tensor, rows: Tensor) -> Tensor:
        return _normalised(explained(x, rows), normalise, absolute)

    b = inputs.shape[0]
    with preserved_rng([inputs.device]):
        base = phi(inputs, torch.arange(b, device=inputs.device))  # [B,D]
        if drop_changed:
            with _scoring(model, inputs):
                predicted = _predictions(model, inputs, run)  # [B,P]

        def pair(rows: Tensor, samples: Tensor) -> Tensor:
            x = perturb(rows, samples)  # [N,C,H,W]
            got = value(rows, x, phi(x, rows), base[rows])
            v, out = got if isinstance(got, tuple) else (got, None)  # [N], the output on x if value ran it
            if not drop_changed:
                return v.float()[:, None]
            if out is None:
                with _scoring(model, inputs):
                    out = run.output(model, x)
            kept = (_predicted(out) == predicted[rows]).all(1)  # [N]
            return torch.stack([v.float(), kept.float()], 1)  # [N,2]

        table = _each_pair(pair, b, n, batch_size, inputs.device)  # [B,n,1 or 2]
    return table[..., 0], (table[..., 1] > 0) if drop_changed else None
