"""Reference inputs shared by the perturbation scores and by Integrated Gradients (zero, mean, blur, constant)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

__all__ = ["Baseline", "perturbation_baseline"]

Baseline = str | float | Tensor
"""``"zero"``, ``"mean"``, ``"blur"``, a float constant, or a tensor broadcastable to the inputs."""

_BLUR_KERNEL = 11  # RISE's insertion substrate: Gaussian blur, kernel 11, sigma 5
_BLUR_SIGMA = 5.0


def perturbation_baseline(inputs: Tensor, baseline: Baseline) -> Tensor:
    """The substrate ``[B, C, H, W]`` that deleted pixels are replaced with (or insertion starts from).

    Args:
        inputs: ``[B, C, H, W]`` float images (or volumes ``[B, C, D, H, W]``: the blur is 3-D).
        baseline: ``"zero"`` (zeros, RISE's deletion substrate), ``"mean"`` (each image's per-channel mean),
            ``"blur"`` (``torchvision`` Gaussian blur, kernel 11, sigma 5 as RISE's insertion substrate; reflect
            padding where RISE zero-pads; the kernel shrinks to ``2 * min(H, W) - 1`` for images smaller than
            6 px), a float constant, or a tensor broadcastable to ``inputs``.

    Returns:
        ``[B, C, H, W]`` tensor of the inputs' dtype.

    Raises:
        ValueError: For an unknown name or a tensor that does not broadcast to ``inputs``.

    Example:
        >>> perturbation_baseline(torch.tensor([[[[1.0, 3.0]]]]), "mean")
        tensor([[[[2., 2.]]]])
    """
    if isinstance(baseline, Tensor):
        try:
            return torch.broadcast_to(baseline.to(inputs), inputs.shape).clone()
        except RuntimeError as err:
            raise ValueError(
                f"A tensor baseline must broadcast to the inputs {tuple(inputs.shape)}, got {tuple(baseline.shape)}."
            ) from err
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(inputs)
    if baseline == "mean":
        return inputs.mean(dim=tuple(range(2, inputs.ndim)), keepdim=True).expand_as(inputs).clone()  # [B,C,H,W]
    if baseline == "blur":
        if inputs.ndim == 5:
            return _blur_volumes(inputs)
        kernel = min(_BLUR_KERNEL, 2 * min(inputs.shape[-2:]) - 1)
        blurred = TF.gaussian_blur(inputs.float(), kernel_size=[kernel, kernel], sigma=[_BLUR_SIGMA, _BLUR_SIGMA])
        return blurred.to(inputs.dtype)
    raise ValueError(f"baseline must be 'zero', 'mean', 'blur', a float or a Tensor, got {baseline!r}.")


def _blur_volumes(inputs: Tensor) -> Tensor:
    """The same Gaussian blur for volumes ``[B, C, D, H, W]``: separable along each axis, reflect padding."""
    out = inputs.float()
    c = out.shape[1]
    for axis in (2, 3, 4):
        size = out.shape[axis]
        kernel = min(_BLUR_KERNEL, 2 * size - 1)
        half = kernel // 2
        x = torch.arange(kernel, dtype=torch.float32, device=inputs.device) - half
        weights = torch.exp(-0.5 * (x / _BLUR_SIGMA) ** 2)
        weights = (weights / weights.sum()).repeat(c, 1, 1)  # [C,1,k] (depthwise)
        moved = out.movedim(axis, -1)  # [B,C,...,size]
        flat = moved.reshape(-1, c, size)
        blurred = F.conv1d(F.pad(flat, (half, half), mode="reflect"), weights, groups=c) if half else flat
        out = blurred.reshape(moved.shape).movedim(-1, axis)
    return out.to(inputs.dtype)
