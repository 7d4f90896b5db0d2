"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_saliency._shapes import per_sample, spatial
from lightning_saliency.methods.base import CAMMethod
from lightning_saliency.methods.registry import register_method

__all__ = ["GradCAM", "GradCAMPlusPlus"]


@register_method("gradcam")
class GradCAM(CAMMethod):
    """Grad-CAM: channel weights are the spatially averaged gradients, ``w_k = mean_ij d S_t / d A_kij``.

    Same as captum's ``LayerGradCam(relu_attributions=True)`` and pytorch-grad-cam's ``GradCAM``, upsampled
    bilinearly to the input size.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        name: Label in logs (default ``"gradcam"``).

    Example:
        >>> from torchvision.models import resnet18
        >>> GradCAM(target_layer="layer3")(resnet18(num_classes=4), torch.rand(1, 3, 64, 64), torch.tensor([1])).shape
        torch.Size([1, 1, 64, 64])
    """

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """``mean_ij grad``, ``[B, K]``."""
        return grads.mean(spatial(grads))


@register_method("gradcam++")
class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ with the closed-form alpha of the paper (eq. 19, exponential score).

    ``alpha_kij = g^2 / (2 g^2 + sum_ab A_kab * g^3)`` with ``g = d S_t / d A_kij``; ``alpha = 0`` where the
    denominator is 0; ``w_k = sum_ij alpha_kij * ReLU(g)``. This is pytorch-grad-cam's ``GradCAMPlusPlus``
    (the official code additionally renormalises alpha; torchcam uses ``sum(A g^3)`` in the denominator).
    Powers are computed in float32 on gradients rescaled by their per-image max, so half-precision gradients
    neither overflow nor underflow; alpha is invariant to that rescaling.
    """

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """``sum_ij alpha * ReLU(g)``, ``[B, K]``."""
        scale = per_sample(grads.abs().flatten(1).amax(1).clamp_min(1e-30), grads)  # [B,1,1,1]
        g = grads / scale  # [B,K,h,w] in [-1, 1]
        g2, g3 = g.pow(2), g.pow(3)
        sum_a = activations.sum(spatial(activations), keepdim=True)  # [B,K,1,1]
        # With G = s*g: G^2 / (2G^2 + S G^3) = g^2 / (2g^2 + S s g^3), the same alpha without s^3 overflowing.
        denom = 2 * g2 + sum_a * g3 * scale
        safe = torch.where(denom != 0, denom, torch.ones_like(denom))
        alpha = torch.where(denom != 0, g2 / safe, torch.zeros_like(g2))
        return (alpha * torch.relu(grads)).sum(spatial(grads))  # [B,K]
