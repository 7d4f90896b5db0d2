"""Baseline attributions as captum defines them: GradientShap (Lundberg & Lee 2017), DeepLift (Shrikumar et al. 2017).

Both attribute ``S_t(x) - S_t(x')`` against baselines ``x'``; the map is the magnitude of the attributions' sum over
channels, as for Integrated Gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_saliency._baselines import perturbation_baseline
from lightning_saliency._checks import noise_sampling
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import AttributionMethod, run_gradient_pass
from lightning_saliency.methods.noise_tunnel import smoothgrad_noise
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = [
    "DEEPLIFT_ACTIVATIONS",
    "DeepLift",
    "GradientShap",
    "check_deeplift_model",
    "deeplift_attributions",
    "gradient_shap_attributions",
    "shap_baselines",
]

ShapBaselines = str | float | Tensor | Sequence[str | float | Tensor]
"""One baseline (``"zero"``, ``"mean"``, ``"blur"``, a float), a distribution tensor ``[R, C, H, W]``, or a sequence."""


# ----------------------------------------------------------------------------------------------------- GradientShap


def shap_baselines(inputs: Tensor, baselines: ShapBaselines) -> Tensor:
    """The baseline distribution ``[B or 1, R, C, H, W]`` that GradientShap draws from.

    A tensor ``[R, C, H, W]`` is a distribution shared by every image (captum's ``baselines``); a name or a float
    is one baseline per image (:func:`~lightning_saliency._baselines.perturbation_baseline`: ``"zero"``, ``"mean"``,
    ``"blur"``); a sequence of those (or of tensors broadcastable to the inputs) gives ``R`` baselines per image.

    Example:
        >>> shap_baselines(torch.ones(2, 1, 4, 4), ("zero", 0.5)).shape
        torch.Size([2, 2, 1, 4, 4])
    """
    if isinstance(baselines, Tensor):
        if baselines.ndim != inputs.ndim or tuple(baselines.shape[1:]) != tuple(inputs.shape[1:]):
            raise ValueError(
                f"A tensor of baselines is a distribution [R, C, H, W] matching the inputs {tuple(inputs.shape)}, got "
                f"{tuple(baselines.shape)}; pass one baseline per image in a list."
            )
        return baselines.to(inputs)[None]
    if isinstance(baselines, (str, int, float)) and not isinstance(baselines, bool):
        return perturbation_baseline(inputs, baselines)[:, None]
    if not isinstance(baselines, Sequence) or not baselines:
        raise ValueError(
            f"baselines must be a name, a float, a tensor [R, C, H, W] or a non-empty list, got {baselines!r}."
        )
    return torch.stack([perturbation_baseline(inputs, b) for b in baselines], 1)  # [B,R,C,H,W]


def _rows(table: Tensor, img: Tensor) -> Tensor:
    """``table[img]``, or ``table[0]`` repeated when the table is shared by every image (leading size 1)."""
    return table[torch.zeros_like(img) if table.shape[0] == 1 else img]


def gradient_shap_attributions(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    run: Run,
    *,
    baselines: Tensor,
    noise: Tensor,
    choice: Tensor,
    alphas: Tensor,
    noise_scale: Tensor | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Captum's GradientShap attributions from given draws, float32 ``[B, C, H, W]``.

    Sample ``j`` of image ``i``: the noisy input ``z = x_i + noise[i, j] * noise_scale[i]``, the baseline
    ``b = baselines[i, choice[i, j]]`` and the point ``p = alpha_ij z + (1 - alpha_ij) b``; the attribution is
    ``1/n sum_j (z - b) * dS_t/dx(p)`` (captum's ``InputBaselineXGradient`` inside a ``NoiseTunnel``). Tables with
    a leading size of 1 are shared by every image. Samples run in image-major order, ``batch_size`` per pass.
    Expects eval mode and autograd on.

    Args:
        model: The classifier.
        inputs: ``[B, C, H, W]``.
        targets: What to explain.
        run: Precision and output adapter.
        baselines: ``[B or 1, R, C, H, W]``.
        noise: ``[B or 1, n, C, H, W]`` noise (before ``noise_scale``).
        choice: ``[B or 1, n]`` indices into the ``R`` baselines.
        alphas: ``[B or 1, n]`` points on the path, in [0, 1].
        noise_scale: ``[B]`` per-image factor of the noise, or ``None`` (1).
        batch_size: Samples per pass.
    """
    b, n = inputs.shape[0], noise.shape[1]
    total = torch.zeros((b, *inputs.shape[1:]), device=inputs.device)
    scale = None if noise_scale is None else noise_scale.to(inputs.device, torch.float32)

    def sample_chunk(start: int, stop: int) -> None:
        index = torch.arange(start, stop)
        img, sample = index // n, index % n
        eps = _rows(noise, img)[torch.arange(img.numel()), sample].to(inputs.device, torch.float32)  # [c,C,H,W]
        pick = _rows(choice, img)[torch.arange(img.numel()), sample]  # [c]
        alpha = _rows(alphas, img)[torch.arange(img.numel()), sample].to(inputs.device, torch.float32)  # [c]
        img = img.to(inputs.device)
        if scale is not None:
            eps = eps * scale[img].view(-1, *([1] * (eps.ndim - 1)))
        noisy = inputs[img].float() + eps  # [c,C,H,W]
        base = _rows(baselines, img)[torch.arange(img.numel(), device=inputs.device), pick.to(inputs.device)].float()
        a = alpha.view(-1, *([1] * (noisy.ndim - 1)))
        points = (a * noisy + (1 - a) * base).to(inputs.dtype)  # captum's _scale_input
        p = run_gradient_pass(model, points, targets[img], [], run, input_grads=True)
        assert p.input_grads is not None
        total.index_add_(0, img, (noisy - base) * p.input_grads)  # last step: safe to retry on out-of-memory

    run_chunked(sample_chunk, b * n, batch_size, what="GradientShap samples")
    return total / n


@register_method("gradient_shap")
class GradientShap(AttributionMethod):
    """GradientShap (captum's): expected gradients times ``(x - x')`` over random baselines, path points and noise.

    ``A = 1/n sum_j (z_j - b_j) * dS_t/dx (a_j z_j + (1 - a_j) b_j)`` with ``z_j = x + eps_j`` (SmoothGrad's seeded
    noise, ``sigma = noise_level * (max(x) - min(x))``; none by default, as captum's ``stdevs=0``), ``b_j`` drawn
    uniformly from the baselines and ``a_j ~ U(0, 1)``: a Monte-Carlo estimate of SHAP values under a linear
    model of the features. The map is ``|sum_c A_c|``. The draws come from a private generator seeded with
    ``seed``, the same for every image (so a map does not depend on the batch); the per-channel attributions
    equal captum's ``GradientShap(model).attribute(x, baselines, n_samples=n, stdevs=sigma, target=t)`` with the
    same draws (:func:`gradient_shap_attributions`; captum draws from the global RNGs).

    Cost: ``num_samples`` forwards and backwards per image, ``batch_size`` samples per pass.

    Args:
        num_samples: Samples ``n`` per image (captum's ``n_samples``).
        baselines: The distribution: a tensor ``[R, C, H, W]`` shared by all images (captum's), or one baseline or
            a list of them per image (``"zero"``, ``"mean"``, ``"blur"``, a float, a tensor broadcastable to the
            inputs). Default: the black and the blurred image.
        noise_level: Noise standard deviation as a fraction of each image's value range (0: none).
        batch_size: Samples per pass.
        seed: Seed of the draws.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> GradientShap(num_samples=4)(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 2, 2])
    """

    def __init__(
        self,
        num_samples: int = 16,
        baselines: ShapBaselines = ("zero", "blur"),
        noise_level: float = 0.0,
        batch_size: int = 64,
        seed: int = 0,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        sampling = noise_sampling(num_samples, noise_level, batch_size, seed)
        if not isinstance(baselines, Tensor):
            shap_baselines(torch.zeros(1, 1, 2, 2), baselines)  # fails early on an unknown baseline
        self.num_samples, self.noise_level, self.batch_size, self.seed = sampling
        self.baselines = baselines

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, num_samples={self.num_samples})"

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        patterns, sigma = smoothgrad_noise(inputs, self.num_samples, self.noise_level, self.seed)
        table = shap_baselines(inputs, self.baselines)  # [B|1,R,C,H,W]
        generator = torch.Generator().manual_seed(self.seed + 1)  # the noise took seed's stream
        choice = torch.randint(0, table.shape[1], (1, self.num_samples), generator=generator)
        alphas = torch.rand((1, self.num_samples), generator=generator)
        return gradient_shap_attributions(
            model,
            inputs,
            targets,
            run,
            baselines=table,
            noise=patterns[None],
            choice=choice,
            alphas=alphas,
            noise_scale=sigma,  # 0 for noise_level=0: no noise
            batch_size=self.batch_size,
        )

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``|sum_c A_c|``, ``[B, 1, H, W]``."""
        return self._attributions(model, inputs, targets, run).sum(1, keepdim=True).abs()


# ---------------------------------------------------------------------------------------------------------- DeepLift

DEEPLIFT_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,  # captum's set so far; the rescale rule applies as well to every element-wise activation:
    nn.Hardtanh,  # ReLU6 too
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LogSigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.PReLU,
    nn.RReLU,
)
"""Element-wise activation modules DeepLift's rescale rule is applied to (captum's: ReLU, ELU, LeakyReLU, Sigmoid,
Tanh, Softplus; captum treats the others as linear layers, i.e. takes their plain gradient)."""

_MAX_POOLS: dict[type[nn.Module], Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    nn.MaxPool3d: F.max_pool3d,
}

_NONLINEAR_UNSUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Softmax2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.MultiheadAttention,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.GLU,
    nn.RNNBase,
    nn.Bilinear,
)

_EPS = 1e-10  # captum's DeepLift eps: below this |x - x'| the multiplier is the plain derivative


class _Rescale(torch.autograd.Function):
    """Forward: the activation's output; backward: the incoming gradient times DeepLift's multiplier."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor, out: Tensor, multiplier: Tensor) -> Tensor:
        ctx.save_for_backward(multiplier)
        ctx.dtype = inp.dtype
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (multiplier,) = ctx.saved_tensors
        return (grad.float() * multiplier).to(ctx.dtype), None, None


class _MaxPoolRescale(torch.autograd.Function):
    """captum's max-pooling rule, with each input's contributions summed over the (overlapping) windows."""

    @staticmethod
    def forward(
        ctx: Any, inp: Tensor, out: Tensor, idx_x: Tensor, idx_r: Tensor, a: Tensor, b: Tensor, dx: Tensor
    ) -> Tensor:
        ctx.save_for_backward(idx_x, idx_r, a, b, dx)
        ctx.dtype, ctx.shape = inp.dtype, inp.shape
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        idx_x, idx_r, a, b, dx = ctx.saved_tensors
        g = grad.float()
        plane = (*ctx.shape[:2], -1)  # [B,C,prod(spatial)]: max-pool indices are flat per plane

        def scatter(values: Tensor, index: Tensor) -> Tensor:
            out = torch.zeros((*plane[:2], dx[0, 0].numel()), device=g.device)
            return out.scatter_add_(2, index.reshape(plane), values.reshape(plane))

        small = dx.abs() < _EPS
        contributions = (scatter(g * a, idx_x) + scatter(g * b, idx_r)).view(ctx.shape)
        plain = scatter(g, idx_x).view(ctx.shape)  # the ordinary max-pool gradient
        grad_in = torch.where(small, plain, contributions / torch.where(small, torch.ones_like(dx), dx))
        return grad_in.to(ctx.dtype), None, None, None, None, None, None


def check_deeplift_model(model: nn.Module) -> None:
    """Raise a ``ValueError`` naming the modules whose nonlinearity DeepLift's rescale rule cannot handle.

    Supported: linear modules (convolutions, linear layers, average pooling, BatchNorm with running statistics in
    eval mode, dropout in eval mode, ...), the element-wise activations of :data:`DEEPLIFT_ACTIVATIONS` and
    ``MaxPool1d/2d/3d``. Not: softmax, adaptive/fractional/power max pooling, attention, layer/group/local response
    normalisation, BatchNorm without running statistics, GLU, recurrent and bilinear layers.
    """
    bad = []
    for name, module in model.named_modules():
        if isinstance(module, _NONLINEAR_UNSUPPORTED) or (
            isinstance(module, _BatchNorm) and module.running_mean is None
        ):
            bad.append(f"{name or 'model'!r} ({type(module).__name__})")
        elif type(module) in _MAX_POOLS and getattr(module, "return_indices", False):
            bad.append(f"{name!r} ({type(module).__name__} with return_indices=True)")
    if bad:
        raise ValueError(
            f"DeepLift's rescale rule is defined for networks of linear layers, element-wise activation modules and "
            f"max pooling; {type(model).__name__} has nonlinear modules it cannot handle: {', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}. Use a gradient method (e.g. 'integrated_gradients') instead."
        )


@contextlib.contextmanager
def _rescale_hooks(model: nn.Module, half: int) -> Iterator[None]:
    """Inside, every supported nonlinearity of ``model`` back-propagates DeepLift multipliers; hooks never stay.

    The forward runs on ``[inputs; baselines]`` (``2 * half`` rows). Each call of an activation or max-pool module
    (a module may be called several times: each call is handled on its own) runs on a copy of its input (so
    in-place activations leave the recorded input alone); its output's first ``half`` rows are replaced by the same
    values whose gradient is the rescale rule's, and the baseline rows are detached.
    """
    pending: dict[int, list[Tensor]] = {}
    handles = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0] if args else None
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] != 2 * half:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise RuntimeError(
                f"DeepLift runs the model on the inputs and their baselines together ({2 * half} rows), but "
                f"{type(module).__name__} got {got}: it needs activations applied to batch-first tensors."
            )
        pending.setdefault(id(module), []).append(x)
        return (x.clone(), *args[1:])

    def activation_hook(module: nn.Module, _args: Any, out: Tensor) -> Tensor:
        x = pending[id(module)].pop()
        with torch.no_grad():
            xf, of = x.detach().float(), out.detach().float()
            dx, dy = xf[:half] - xf[half:], of[:half] - of[half:]
            small = dx.abs() < _EPS
            multiplier = dy / torch.where(small, torch.ones_like(dx), dx)
        if bool(small.any()):  # there, the plain derivative (captum's grad_input)
            with torch.enable_grad():
                t = x[:half].detach().requires_grad_(True)
                (derivative,) = torch.autograd.grad(module.forward(t.clone()).sum(), t)
            multiplier = torch.where(small, derivative.float(), multiplier)
        multiplier = torch.nan_to_num(multiplier, nan=0.0, posinf=0.0, neginf=0.0)
        rescaled = cast(Tensor, _Rescale.apply(x[:half], out[:half], multiplier))
        return torch.cat([rescaled, out[half:].detach()])

    def max_pool_hook(module: nn.Module, _args: Any, out: Tensor) -> Tensor:
        x = pending[id(module)].pop()
        pool = _MAX_POOLS[type(module)]
        with torch.no_grad():
            m = cast(Any, module)
            _, idx = pool(x.detach(), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
            o = out.detach().float()
            o_x, o_r = o[:half], o[half:]
            cross = torch.maximum(o_x, o_r)
            dx = (x.detach().float()[:half] - x.detach().float()[half:]).contiguous()
        rescaled = cast(
            Tensor, _MaxPoolRescale.apply(x[:half], out[:half], idx[:half], idx[half:], cross - o_r, o_x - cross, dx)
        )
        return torch.cat([rescaled, out[half:].detach()])

    try:
        for module in model.modules():
            if isinstance(module, DEEPLIFT_ACTIVATIONS):
                hook = activation_hook
            elif type(module) in _MAX_POOLS:
                hook = max_pool_hook
            else:
                continue
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def deeplift_attributions(
    model: nn.Module, inputs: Tensor, targets: Target, run: Run, baselines: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """DeepLift (rescale rule) attributions ``(x - x') * m``, float32 ``[B, C, H, W]``, and ``S_t(x)``, ``S_t(x')``.

    One forward of ``[inputs; baselines]`` with the multipliers of :func:`_rescale_hooks`, one ``autograd.grad``
    of the inputs' target scores. Expects eval mode and autograd on; checks the model first
    (:func:`check_deeplift_model`).
    """
    check_deeplift_model(model)
    b = inputs.shape[0]
    x = inputs.detach().clone().requires_grad_(True)
    ref = baselines.detach().to(inputs)
    with _rescale_hooks(model, b):
        logits = run.output(model, torch.cat([x, ref]))  # [2B,...]
    targets.check(logits[:b])
    scores = targets.score(logits[:b])
    if not scores.requires_grad:
        raise RuntimeError(f"The logits of {type(model).__name__} do not depend on its input through autograd.")
    (grads,) = torch.autograd.grad(scores.sum(), x)
    with torch.no_grad():
        reference = targets.score(logits[b:])
    return (x.detach().float() - ref.float()) * grads.float(), scores.detach().float(), reference.float()


@register_method("deeplift")
class DeepLift(AttributionMethod):
    """DeepLift with the rescale rule, captum's ``DeepLift``: ``A = (x - x') * m``, map ``|sum_c A_c|``.

    Multipliers are back-propagated like gradients, except that each activation's local derivative is replaced by
    ``(f(x) - f(x')) / (x - x')`` (its plain derivative where ``|x - x'| < 1e-10``), and max pooling follows captum's
    rule (each window's ``max(o, o') - o'`` to the input's argmax and ``o - max(o, o')`` to the baseline's,
    divided by ``x - x'``). So the attributions sum to ``S_t(x) - S_t(x')`` (completeness, checked: a
    :class:`~lightning_saliency.SaliencyWarning` says when a model breaks it).

    Equals captum 0.9's ``DeepLift(model).attribute(x, baselines, target)`` on networks without max pooling (and
    where a max pool is not next to an activation module), and it implements captum's documented max-pooling rule
    where captum 0.9 does not: (1) when a ``MaxPool`` is next to a hooked activation module (``ReLU -> MaxPool`` in
    ResNet's stem and VGG, or ``MaxPool -> ReLU``) captum's backward hooks chain so that the pool's rule is lost and
    the plain max-pool gradient is used (completeness then holds only where the baseline is constant over a window);
    (2) its zero-delta fallback broadcasts the first image's gradient to the whole batch (captum#1276); (3) where
    windows overlap (ResNet's 3x3 stride-2 pool) an input that is the argmax of several windows gets their
    contributions summed, as the chain rule does (captum's ``max_unpool`` keeps one window's). Also: a module used
    several times in a forward (torchvision ResNet's ``relu``) is handled per call (captum raises), and activations
    beyond captum's six (ReLU6, GELU, SiLU, ...: :data:`DEEPLIFT_ACTIVATIONS`) get the rescale rule too (captum takes
    their plain gradient).

    Requirements on the model: its nonlinearities must be modules (``nn.ReLU()``, not ``F.relu``/``torch.relu`` in
    ``forward``: those are invisible to the hooks, their plain gradient is used and the completeness warning fires),
    of a supported kind (a clear ``ValueError`` names the others: softmax, attention, layer normalisation, adaptive
    max pooling, ...), applied to batch-first tensors; in-place and reused activation modules are fine. Products of
    activations (squeeze-excitation, attention) break the rescale rule's assumptions (the warning says so).

    Cost: one forward of the batch and its baselines (``2B`` images) and one backward.

    Args:
        baseline: ``x'``: ``"zero"`` (captum's default), ``"mean"``, ``"blur"``, a float or a tensor broadcastable
            to the inputs.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
        ...                     nn.Linear(16, 3))
        >>> DeepLift()(net, torch.rand(2, 3, 4, 4), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 4, 4])
    """

    def __init__(self, baseline: str | float | Tensor = "zero", *, name: str | None = None) -> None:
        super().__init__(name=name)
        if not isinstance(baseline, Tensor):
            perturbation_baseline(torch.zeros(1, 1, 1, 1), baseline)  # fails early on an unknown baseline
        self.baseline = baseline

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        attributions, scores, reference = deeplift_attributions(
            model, inputs, targets, run, perturbation_baseline(inputs, self.baseline)
        )
        self._check_completeness(attributions, scores, reference, model, run, inputs)
        return attributions

    def _check_completeness(
        self, attributions: Tensor, scores: Tensor, reference: Tensor, model: nn.Module, run: Run, inputs: Tensor
    ) -> None:
        """Warn once when the attributions do not sum to ``S(x) - S(x')`` (only in float32, where that is exact)."""
        if inputs.dtype != torch.float32 or run.precision.convert_input(inputs[:1]).dtype != torch.float32:
            return
        total = attributions.flatten(1).sum(1)  # [B]
        gap = scores - reference
        ok = torch.isfinite(total) & torch.isfinite(gap)
        tolerance = 1e-3 * (scores.abs() + reference.abs()) + 1e-5
        off = ok & ((total - gap).abs() > tolerance)
        if bool(off.any()) and not _autocast_in(run):
            i = int(off.nonzero()[0, 0])
            self._warn_once(
                "completeness",
                f"{self.label}: the attributions of images {off.nonzero()[:, 0].tolist()} do not sum to S(x) - S(x') "
                f"(image {i}: {float(total[i]):.4g} vs {float(gap[i]):.4g}), which DeepLift's rescale rule guarantees: "
                f"{type(model).__name__} computes nonlinearities the rule does not see (functional calls such as "
                "F.relu or torch.sigmoid in forward, products of activations as in squeeze-excitation or attention), "
                "where plain gradients are used. The map is not DeepLift's there; make them modules or use "
                "'integrated_gradients'.",
            )

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``|sum_c A_c|``, ``[B, 1, H, W]``."""
        return self._attributions(model, inputs, targets, run).sum(1, keepdim=True).abs()


def _autocast_in(run: Run) -> bool:
    """Whether the run's forward context turns on autocast (then float32 completeness does not hold exactly)."""
    with run.precision.forward_context():
        return any(
            torch.is_autocast_enabled(device)
            for device in ("cpu", "cuda")
            if device == "cpu" or torch.cuda.is_available()
        )
