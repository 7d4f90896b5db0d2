"""FullGrad (Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization", NeurIPS 2019).

The input-gradient term and one bias-gradient term per layer with a bias, all from the shared gradient pass, as
pytorch-grad-cam's ``FullGrad`` defines them.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import GradientMethod, GradientPass
from lightning_saliency.methods.registry import register_method

__all__ = ["FullGrad", "bias_layers", "effective_bias"]

_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image: (m - min) / (max + 1e-7)


_BIAS_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Conv3d, nn.BatchNorm3d)


def bias_layers(model: nn.Module) -> list[nn.Module]:
    """The ``Conv2d`` and ``BatchNorm2d`` modules with a bias, in ``model.modules()`` order (each once).

    The layers whose bias-gradients FullGrad sums, as pytorch-grad-cam picks them (it matches the exact types;
    subclasses count here too); for volumes, ``Conv3d`` and ``BatchNorm3d``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False), nn.ReLU())
        >>> [type(m).__name__ for m in bias_layers(net)]
        ['Conv2d', 'BatchNorm2d']
    """
    return [m for m in model.modules() if isinstance(m, _BIAS_TYPES) and m.bias is not None]


def effective_bias(layer: nn.Module) -> Tensor:
    """The per-channel bias ``[K]`` (float32) a layer adds in eval mode.

    A convolution's ``bias``; a BatchNorm's ``bias - running_mean * weight / sqrt(running_var + eps)`` (the official
    FullGrad code's and pytorch-grad-cam's), or its ``bias`` without running statistics.

    Example:
        >>> bn = nn.BatchNorm2d(2).eval()
        >>> with torch.no_grad():
        ...     _ = bn.running_mean.fill_(1.0)
        >>> effective_bias(bn)
        tensor([-1.0000, -1.0000])
    """
    bias = layer.bias
    assert isinstance(bias, Tensor)
    if (
        isinstance(layer, nn.modules.batchnorm._BatchNorm)
        and layer.running_mean is not None
        and layer.running_var is not None
    ):
        weight = layer.weight if layer.weight is not None else torch.ones_like(bias)
        bias = bias - layer.running_mean * weight / torch.sqrt(layer.running_var + layer.eps)
    return bias.detach().float()


def _normalise(maps: Tensor) -> Tensor:
    """pytorch-grad-cam's per-map min-max: ``(m - min) / (max(m - min) + 1e-7)`` over the spatial dims (2 on)."""
    dims = tuple(range(2, maps.ndim))
    shifted = maps - maps.amin(dims, keepdim=True)
    return shifted / (shifted.amax(dims, keepdim=True) + _EPS)


@register_method("fullgrad")
class FullGrad(GradientMethod):
    """FullGrad: the input-gradient map plus, per layer with a bias, the map of ``|bias * d S_t / d output|``.

    ``M = sum_c psi(|x_c * g_c|) + sum_l sum_k up(psi(|b_lk * G_lk|))`` with ``g = dS_t/dx``, ``G_l = dS_t / d(output
    of layer l)``, ``b_l`` its per-channel :func:`effective_bias`, ``psi`` pytorch-grad-cam's per-map min-max
    (``(m - min) / (max + 1e-7)``) and ``up`` bilinear upsampling to the input size. The layers are
    :func:`bias_layers`: every ``Conv2d`` and ``BatchNorm2d`` with a bias that runs in the forward (ResNet-18: its
    20 BatchNorms). Equals pytorch-grad-cam's ``FullGrad`` (which ignores ``target_layers`` too). As the sum over
    channels commutes with the (linear) upsampling, each layer's channels are summed at its resolution and upsampled
    once.

    Every bias layer that runs must run once per forward (its gradient would be ambiguous otherwise: a clear error
    names it); layers that do not run (an unused auxiliary head) are left out (one forward of an image finds them,
    remembered per model and input size). Cost: the shared pass (input gradient and the gradient at every bias
    layer's output), holding every bias layer's activation and gradient in float32 at once.

    Example:
        >>> from torchvision.models import resnet18
        >>> FullGrad()(resnet18(num_classes=3), torch.rand(1, 3, 64, 64), torch.tensor([2])).shape
        torch.Size([1, 1, 64, 64])
    """

    uses_input_grad = True

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[nn.Module]]] = (
            weakref.WeakKeyDictionary()
        )

    def layers(self, model: nn.Module, inputs: Tensor, run: Run) -> list[nn.Module]:
        """The :func:`bias_layers` that run in the forward (each exactly once, else a ``ValueError``)."""
        shape = tuple(inputs.shape[1:])
        hit = self._cache.get(model)
        if hit is not None and hit[0] == shape:
            return hit[1]
        candidates = bias_layers(model)
        calls = [0] * len(candidates)

        def counter(index: int) -> Any:
            def hook(_module: nn.Module, _args: Any, _output: Any) -> None:
                calls[index] += 1

            return hook

        handles = [m.register_forward_hook(counter(i)) for i, m in enumerate(candidates)]
        try:
            with torch.no_grad():
                run.output(model, inputs[:1])
        finally:
            for handle in handles:
                handle.remove()
        repeated = [(m, n) for m, n in zip(candidates, calls, strict=True) if n > 1]
        if repeated:
            names = {id(module): name for name, module in model.named_modules()}
            listed = ", ".join(f"{names.get(id(m), '?')!r} ({n} times)" for m, n in repeated)
            raise ValueError(
                f"FullGrad reads the gradient at the output of every Conv2d/BatchNorm2d with a bias, but {listed} "
                "ran more than once per forward, so its gradient is ambiguous. Give each use its own module."
            )
        used = [m for m, n in zip(candidates, calls, strict=True) if n == 1]
        self._cache[model] = (shape, used)
        return used

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``sum_c psi(|x g|) + sum_l up(sum_k psi(|b G|))``, ``[B, 1, H, W]``."""
        assert p.input_grads is not None
        size = tuple(p.inputs.shape[2:])  # (H, W), or (D, H, W) for volumes
        mode = "bilinear" if len(size) == 2 else "trilinear"
        total = _normalise((p.inputs.float() * p.input_grads).abs()).sum(1, keepdim=True)  # [B,1,H,W]
        for layer in layers:
            grads = p.layer_grads[layer]  # [B,K,h,w]
            bias = effective_bias(layer).to(grads.device).view(1, -1, *([1] * (grads.ndim - 2)))  # [1,K,1,1]
            term = _normalise((bias * grads).abs()).sum(1, keepdim=True)  # [B,1,h,w]
            if tuple(term.shape[2:]) != size:
                term = F.interpolate(term, size=size, mode=mode, align_corners=False)
            total = total + term
        return total
