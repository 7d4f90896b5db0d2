"""Integrated Gradients (Sundararajan, Taly & Yan 2017), batched over the path with a memory bound."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lightning_saliency._baselines import perturbation_baseline
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency._shapes import per_sample
from lightning_saliency.methods.base import AttributionMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["IntegratedGradients", "ig_attributions", "path_rule"]

IGBaseline = str | float | Tensor
"""``"zero"``, ``"blur"``, a constant, or a tensor broadcastable to the inputs ``[B, C, H, W]``."""

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def path_rule(rule: str, steps: int) -> tuple[Tensor, Tensor]:
    """``(alphas, weights)`` float64 ``[steps]`` of a quadrature of ``integral_0^1 f(alpha) d alpha``.

    The same nodes and weights as captum's ``approximation_parameters``: ``"gausslegendre"`` (captum's default),
    and the Riemann rules (``"riemann_trapezoid"``: ``steps`` points ``linspace(0, 1)``, end weights halved).

    Example:
        >>> alphas, weights = path_rule("riemann_trapezoid", 3)
        >>> alphas.tolist(), weights.tolist()
        ([0.0, 0.5, 1.0], [0.16666666666666666, 0.3333333333333333, 0.16666666666666666])
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    if rule == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * w)
    if steps < 2:
        raise ValueError(f"Riemann rules need steps >= 2, got {steps}.")
    weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    kind = rule.split("_")[1]
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
    elif kind == "left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps, dtype=torch.float64)
    elif kind == "right":
        alphas = torch.linspace(1 / steps, 1, steps, dtype=torch.float64)
    else:
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps, dtype=torch.float64)
    return alphas, weights


def ig_baseline(inputs: Tensor, baseline: IGBaseline) -> Tensor:
    """The baseline ``x'`` ``[B, C, H, W]`` (inputs' dtype and device): :func:`perturbation_baseline`.

    ``"blur"`` is a Gaussian blur (kernel 11, sigma 5, shrunk for tiny images), as RISE's insertion substrate.

    Example:
        >>> ig_baseline(torch.ones(1, 1, 2, 2), 0.5).flatten().tolist()
        [0.5, 0.5, 0.5, 0.5]
    """
    return perturbation_baseline(inputs, baseline)


def _check_baseline(baseline: IGBaseline) -> None:
    if isinstance(baseline, Tensor) or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool)):
        return
    if baseline not in ("zero", "blur"):
        raise ValueError(f"baseline must be 'zero', 'blur', a float or a Tensor, got {baseline!r}.")


def ig_attributions(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    run: Run,
    *,
    steps: int,
    baseline: IGBaseline,
    rule: str,
    internal_batch_size: int,
) -> Tensor:
    """``(x - x') * sum_i w_i dS_t/dx (x' + alpha_i (x - x'))``, float32 ``[B, C, H, W]`` (captum's attributions).

    Expects eval mode and autograd on (as :meth:`IntegratedGradients.compute` provides). The ``B * steps`` path
    points are built lazily, ``internal_batch_size`` per forward and gradient, in image-major order.
    """
    alphas, weights = path_rule(rule, steps)
    x = inputs.detach()
    base = ig_baseline(x, baseline)
    delta = (x - base).float()  # [B,C,H,W]
    b = x.shape[0]
    total = torch.zeros_like(delta)  # [B,C,H,W]
    a_dev = alphas.to(x.device, torch.float32)
    w_dev = weights.to(x.device, torch.float32)

    def accumulate(lo: int, hi: int) -> None:  # adds only after its pass succeeded: safe to retry on OOM
        idx = torch.arange(lo, hi, device=x.device)  # [P]
        img, step = idx // steps, idx % steps
        points = (base[img].float() + per_sample(a_dev[step], delta) * delta[img]).to(x.dtype)  # [P,C,H,W]
        p = run_gradient_pass(model, points, targets[img], [], run, input_grads=True)
        assert p.input_grads is not None
        total.index_add_(0, img, p.input_grads * per_sample(w_dev[step], p.input_grads))

    run_chunked(accumulate, b * steps, internal_batch_size, what="path points")
    return delta * total


@register_method("integrated_gradients")
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017): ``M = |sum_c IG_c|``.

    ``IG = (x - x') * integral_0^1 dS_t/dx (x' + a (x - x')) da`` per input channel.

    The integral is captum's default quadrature, Gauss-Legendre on ``steps`` nodes (``rule=`` picks a Riemann rule
    instead); the per-channel attributions equal captum's ``IntegratedGradients(model).attribute(x, baselines,
    target, n_steps=steps, method=rule)``. As for gradient x input the map is the magnitude of their sum over
    channels (a pixel's contribution to ``S_t(x) - S_t(x')``, by completeness).

    Args:
        steps: Quadrature nodes (path points per image); each costs a forward and a backward.
        baseline: ``x'``: ``"zero"`` (default), ``"blur"`` (Gaussian blur, kernel 11, sigma 5), a float or a tensor.
        rule: ``"gausslegendre"`` (default, captum's) or ``"riemann_trapezoid"``/``_left``/``_right``/``_middle``.
        internal_batch_size: Path points per forward, bounding memory to that many images' activations.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> IntegratedGradients(steps=4)(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 2, 2])
    """

    def __init__(
        self,
        steps: int = 32,
        baseline: IGBaseline = "zero",
        rule: str = "gausslegendre",
        internal_batch_size: int = 64,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}.")
        if not isinstance(internal_batch_size, int) or isinstance(internal_batch_size, bool) or internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be an int >= 1, got {internal_batch_size!r}.")
        _check_baseline(baseline)
        path_rule(rule, steps)  # fails early on a bad rule or too few steps
        self.steps, self.baseline, self.rule, self.internal_batch_size = steps, baseline, rule, internal_batch_size

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        return ig_attributions(
            model,
            inputs,
            targets,
            run,
            steps=self.steps,
            baseline=self.baseline,
            rule=self.rule,
            internal_batch_size=self.internal_batch_size,
        )

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``|sum_c IG|``, ``[B, 1, H, W]``."""
        return self._attributions(model, inputs, targets, run).sum(1, keepdim=True).abs()
