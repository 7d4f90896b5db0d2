"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``) on the shared gradient pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._reshape import Reshape
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import ActivationMethod, GradientPass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.methods.smoothing import _check_bool, cam_from_contributions

__all__ = ["GradCAMElementWise"]


@register_method("gradcam_elementwise")
class GradCAMElementWise(ActivationMethod):
    """Grad-CAM element-wise: ``ReLU(sum_k ReLU(dS_t/dA_k * A_k))``, pytorch-grad-cam's ``GradCAMElementWise``.

    HiResCAM's element-wise products, each clipped at zero before the sum over channels: a channel that speaks
    against the class at a location cannot cancel another that speaks for it. ``eigen_smooth=True`` keeps the first
    principal component of the clipped products instead of their sum (pytorch-grad-cam's option, up to the SVD's
    sign, fixed here: see :func:`~lightning_saliency.methods.smoothing.cam_from_contributions`). Cost: the shared
    pass.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        eigen_smooth: First principal component of the clipped products instead of their sum.
        reshape: How the layer's output and gradient become ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> GradCAMElementWise()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        *,
        eigen_smooth: bool = False,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, name=name)
        self.eigen_smooth = _check_bool(eigen_smooth, "eigen_smooth")

    def contributions(self, activations: Tensor, grads: Tensor | None) -> Tensor:
        """``ReLU(g * A)``, ``[B, K, h, w]``."""
        assert grads is not None
        return F.relu(grads * activations)

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(sum_k ReLU(g * A))`` (or its ``eigen_smooth`` version), ``[B, 1, h, w]``."""
        acts, grads = self.feature_maps(p, layers[0])
        return cam_from_contributions(self.contributions(acts, grads), self.eigen_smooth)
