"""Saliency-focused adversarial attack score (after CAMERAS' adversarial experiment, Jalwana et al. 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._runtime import Run, eval_mode, gradients_enabled, preserved_rng
from lightning_saliency.distributed import agreed
from lightning_saliency.metrics.functional._common import _TINY, _check_maps, _check_model_inputs, _pixel_ranks
from lightning_saliency.targets import ClassTarget, TargetLike

__all__ = ["masked_attack_norm", "saliency_attack_score"]


def _check_attack_args(step_size: float, max_steps: int) -> None:
    if not isinstance(step_size, (int, float)) or isinstance(step_size, bool) or not step_size > 0:
        raise ValueError(f"step_size must be a positive L2 norm per step, got {step_size!r}.")
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}.")


def _check_fraction(fraction: float) -> None:
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")


def masked_attack_norm(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    pixel_masks: Tensor,
    *,
    step_size: float = 0.1,
    max_steps: int = 50,
    bounds: tuple[float, float] | None = None,
    run: Run | None = None,
) -> Tensor:
    """L2 norm of the smallest iterative-gradient perturbation, restricted to ``pixel_masks``, that flips the class.

    Each step ascends the cross-entropy of ``targets`` by ``step_size`` (L2) along the masked input gradient,
    normalised per image; an image stops at the first step where the argmax is no longer its target, and its
    norm is ``||delta||_2`` then. Images never flipped within ``max_steps`` score the cap
    ``max_steps * step_size``; images already misclassified score 0. Gradients come from
    ``torch.autograd.grad`` on a detached copy of the inputs (never ``.backward()``), with the model in eval mode
    and the RNG preserved; works under ``torch.inference_mode``. One forward and one backward of the whole
    batch per step.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` classes to flip away from (usually the predicted ones).
        pixel_masks: ``[B, 1, H, W]`` (or ``[B, H, W]``) bool/0-1: the pixels (all channels) that may change.
        step_size: L2 norm of each step, in input units (tune it to the input scale).
        max_steps: Step budget.
        bounds: Optional ``(low, high)`` to clamp the perturbed input to.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 norms in ``[0, max_steps * step_size]``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> norms = masked_attack_norm(net, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0]), torch.ones(3, 2, 2))
        >>> bool(((norms >= 0) & (norms <= 5.0)).all())
        True
    """
    target = _check_model_inputs(inputs, targets, model, run)
    if not isinstance(target, ClassTarget):
        raise ValueError(
            f"masked_attack_norm flips a predicted class, so it needs class targets (ClassTarget or class indices), "
            f"got {target!r}."
        )
    masks = _check_maps(pixel_masks, inputs, name="pixel_masks") != 0  # [B,1,H,W]
    _check_attack_args(step_size, max_steps)
    run = run or Run()
    cap = float(max_steps * step_size)
    with preserved_rng([inputs.device]), eval_mode(model), gradients_enabled():
        x0 = inputs.detach().clone()
        classes = target.classes.to(x0.device, copy=True)  # a normal tensor
        keep = masks.to(x0.dtype)
        delta = torch.zeros_like(x0)
        norms = torch.full((x0.shape[0],), cap, device=x0.device)
        active = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
        for step in range(max_steps + 1):
            x = (x0 + delta).requires_grad_(True)
            logits = run.logits(model, x)
            target.check(logits)
            flipped = agreed(active & (logits.detach().argmax(1) != classes))  # sharded model: rank 0's early stop
            norms = torch.where(flipped, delta.flatten(1).norm(dim=1).float(), norms)
            active = active & ~flipped
            if step == max_steps or not bool(active.any()):
                break
            loss = F.cross_entropy(logits.float(), classes, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            grad = grad.detach() * keep  # [B,C,H,W]
            unit = grad / grad.flatten(1).norm(dim=1).clamp_min(_TINY)[:, None, None, None]
            delta = delta + step_size * unit * active[:, None, None, None].to(unit.dtype)
            if bounds is not None:
                delta = (x0 + delta).clamp(*bounds) - x0
    return norms.detach()


def saliency_attack_score(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    *,
    fraction: float = 0.1,
    step_size: float = 0.1,
    max_steps: int = 50,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
    run: Run | None = None,
) -> Tensor:
    """Saliency-focused attack score per image: attack norm on the top pixels / attack norm on random pixels.

    CAMERAS reports that attacks restricted to the most salient pixels need a smaller perturbation. As a score:
    the :func:`masked_attack_norm` of an attack restricted to the ``fraction`` most salient pixels (ranked as in
    deletion, ties in raster order) divided by that of the same attack restricted to as many random pixels
    (drawn from a CPU generator seeded by ``seed``; the global RNG is untouched). Below 1: the map found pixels
    the model relies on (**lower is better**). Both attacks capped: ratio 1; both zero (already misclassified):
    ratio 1.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` classes to flip away from (usually the predicted ones).
        maps: ``[B, 1, H, W]`` (or ``[B, H, W]``) saliency at the input resolution.
        fraction: Share of pixels the attacks may change, in (0, 1] (at least one pixel).
        step_size: L2 norm per attack step, in input units.
        max_steps: Step budget of each attack.
        seed: Seed of the random pixel set.
        bounds: Optional ``(low, high)`` clamp of the perturbed input.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 ratios (positive).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> saliency_attack_score(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), torch.rand(2, 1, 4, 4)).shape
        torch.Size([2])
    """
    _check_model_inputs(inputs, targets, model, run)
    maps = _check_maps(maps, inputs)
    _check_fraction(fraction)
    b, spatial = maps.shape[0], tuple(maps.shape[2:])  # (H, W), or (D, H, W)
    k = max(1, round(fraction * math.prod(spatial)))
    salient = (_pixel_ranks(maps) < k).view(b, 1, *spatial)
    generator = torch.Generator().manual_seed(seed)
    random_ranks = _pixel_ranks(torch.rand(b, 1, *spatial, generator=generator).to(maps.device))
    random = (random_ranks < k).view(b, 1, *spatial)
    focused, control = (
        masked_attack_norm(
            model, inputs, targets, pixels, step_size=step_size, max_steps=max_steps, bounds=bounds, run=run
        )
        for pixels in (salient, random)
    )
    return (focused + _TINY) / (control + _TINY)
