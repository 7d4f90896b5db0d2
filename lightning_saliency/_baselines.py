"""Reference inputs shared by the perturbation scores and by Integrated Gradients (zero, mean, blur, constant)."""

from __future__ import annotations

import torch
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
        inputs: ``[B, C, H, W]`` float images.
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
        return inputs.mean(dim=(2, 3), keepdim=True).expand_as(inputs).clone()  # [B,C,H,W]
    if baseline == "blur":
        kernel = min(_BLUR_KERNEL, 2 * min(inputs.shape[-2:]) - 1)
        blurred = TF.gaussian_blur(inputs.float(), kernel_size=[kernel, kernel], sigma=[_BLUR_SIGMA, _BLUR_SIGMA])
        return blurred.to(inputs.dtype)
    raise ValueError(f"baseline must be 'zero', 'mean', 'blur', a float or a Tensor, got {baseline!r}.")
