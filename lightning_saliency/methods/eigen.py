"""Principal-component CAMs on the shared pass: Eigen-Grad-CAM and KPCA-CAM (pytorch-grad-cam's definitions).

Both project each location's vector (of activations times gradients, or of activations) on a first principal
component. The sign of a principal component is arbitrary; here it is chosen as in
:func:`~lightning_saliency.methods.cams.eigen_projection`: the projection correlates positively with the channel
mean of what is projected (it points where the layer fires, or contributes, more). pytorch-grad-cam's results are the
same up to that sign (its SVD's sign, and scikit-learn's ``svd_flip`` rule for kernel PCA, are other choices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._reshape import Reshape
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import ActivationMethod, GradientPass
from lightning_saliency.methods.cams import eigen_projection
from lightning_saliency.methods.registry import register_method

__all__ = ["KERNELS", "EigenGradCAM", "KPCACAM", "kernel_projection"]

KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")
"""The kernels of :func:`kernel_projection` (scikit-learn's ``pairwise_kernels`` definitions)."""


@register_method("eigengradcam")
class EigenGradCAM(ActivationMethod):
    """Eigen-Grad-CAM: ``ReLU`` of the first principal component of ``dS_t/dA * A`` (pytorch-grad-cam's).

    Like EigenCAM, but on the element-wise products of activations and gradients (HiResCAM's terms), so it is class
    discriminative. Per image, the ``[h*w, K]`` matrix of products is centred over locations and projected on its
    first right singular vector; the sign makes the projection correlate with the channel mean of the products (the
    HiResCAM map). Equals pytorch-grad-cam's ``EigenGradCAM`` up to that sign. Cost: the shared pass, plus an SVD of
    ``[h*w, K]`` per image.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        reshape: How the layer's output and gradient become ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs.

    Example:
        >>> from torchvision.models import resnet18
        >>> EigenGradCAM()(resnet18(num_classes=3), torch.rand(2, 3, 64, 64), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 64, 64])
    """

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(PC_1(g * A))``, ``[B, 1, h, w]``."""
        acts, grads = self.feature_maps(p, layers[0])
        assert grads is not None
        return F.relu(eigen_projection(grads * acts))


def _kernel(x: Tensor, kernel: str, gamma: float, degree: float, coef0: float) -> Tensor:
    """scikit-learn's ``pairwise_kernels(x, x, metric=kernel)``, batched: ``[B, n, n]`` for ``x [B, n, K]``."""
    if kernel == "rbf":
        sq = (x * x).sum(2)  # [B,n]
        dist = (sq[:, :, None] + sq[:, None, :] - 2 * (x @ x.transpose(1, 2))).clamp_min(0)
        return torch.exp(-gamma * dist)
    if kernel == "cosine":
        unit = x / x.norm(dim=2, keepdim=True).clamp_min(1e-30)
        return unit @ unit.transpose(1, 2)
    dot = x @ x.transpose(1, 2)  # [B,n,n]
    if kernel == "linear":
        return dot
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    return torch.tanh(gamma * dot + coef0)  # sigmoid


def kernel_projection(
    activations: Tensor,
    kernel: str = "sigmoid",
    gamma: float | None = None,
    degree: float = 3.0,
    coef0: float = 1.0,
) -> Tensor:
    """Per image, the first kernel principal component of the locations' activation vectors, sign-stable.

    Per image: ``X = A^T - mean`` (``[h*w, K]``, centred over locations), the kernel matrix ``k(X, X)``
    (``[h*w, h*w]``) double-centred (scikit-learn's ``KernelCenterer``), its largest eigenvalue ``l`` and eigenvector
    ``v``; the projection is ``v * sqrt(max(l, 0))`` (scikit-learn's ``KernelPCA(n_components=1).fit_transform``,
    pytorch-grad-cam's ``get_2d_projection_kernel``). The sign makes it correlate positively with the centred channel
    mean of the activations (scikit-learn's ``svd_flip`` makes the largest entry of ``v`` positive instead); a zero
    correlation keeps the eigensolver's sign. Images whose kernel matrix is not finite give zeros.

    Args:
        activations: ``[B, K, h, w]`` float.
        kernel: ``"sigmoid"`` (``tanh(gamma <x, y> + coef0)``, pytorch-grad-cam's default), ``"rbf"``, ``"poly"``,
            ``"linear"`` (plain PCA: EigenCAM's projection, up to the sign rule's input) or ``"cosine"``.
        gamma: Kernel coefficient; ``None``: ``1 / K`` (scikit-learn's default).
        degree: Degree of the ``"poly"`` kernel.
        coef0: Constant term of the ``"poly"`` and ``"sigmoid"`` kernels.

    Returns:
        ``[B, 1, h, w]`` float32 projections (before any ReLU).

    Example:
        >>> a = torch.zeros(1, 3, 2, 2)
        >>> a[0, :, 1, 1] = 4.0  # one location fires on every channel
        >>> kernel_projection(a, kernel="rbf")[0, 0] > 0
        tensor([[False, False],
                [False,  True]])
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}.")
    b, k, shape = activations.shape[0], activations.shape[1], activations.shape[2:]  # (h, w) or (d, h, w)
    x = torch.nan_to_num(activations.float()).flatten(2).transpose(1, 2)  # [B,n,K]
    x = x - x.mean(1, keepdim=True)  # centred over locations
    gram = _kernel(x, kernel, 1.0 / k if gamma is None else float(gamma), float(degree), float(coef0))  # [B,n,n]
    centred = gram - gram.mean(1, keepdim=True) - gram.mean(2, keepdim=True) + gram.mean((1, 2), keepdim=True)
    finite = torch.isfinite(centred).flatten(1).all(1)  # [B]
    centred = torch.where(finite[:, None, None], centred, torch.zeros_like(centred))
    centred = (centred + centred.transpose(1, 2)) / 2  # exactly symmetric for eigh
    values, vectors = torch.linalg.eigh(centred)  # ascending: [B,n], [B,n,n]
    proj = vectors[:, :, -1] * values[:, -1:].clamp_min(0).sqrt()  # [B,n]
    mean_act = x.mean(2)  # [B,n] centred channel mean
    sign = torch.where((proj * mean_act).sum(1) < 0, -1.0, 1.0)  # [B]
    return (proj * sign[:, None]).view(b, 1, *shape)


@register_method("kpcacam")
class KPCACAM(ActivationMethod):
    """KPCA-CAM (Karmani et al. 2024): ``ReLU`` of the activations' first *kernel* principal component, class-agnostic.

    EigenCAM with kernel PCA (:func:`kernel_projection`; pytorch-grad-cam's ``KPCA_CAM``, the same up to the sign
    rule). No gradient is needed: alone it runs one forward without autograd; with other methods it reads the shared
    pass. The map does not depend on ``targets``. Cost: the shared pass (or one forward), plus an eigendecomposition
    of an ``[h*w, h*w]`` matrix per image (7x7 feature maps: 49x49; a 28x28 layer: 784x784, about 0.1 s on a CPU).

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        kernel: ``"sigmoid"`` (pytorch-grad-cam's default), ``"rbf"``, ``"poly"``, ``"linear"`` or ``"cosine"``.
        gamma: Kernel coefficient; ``None``: ``1 / K`` (``K`` channels).
        degree: Degree of the ``"poly"`` kernel.
        coef0: Constant of the ``"poly"`` and ``"sigmoid"`` kernels.
        reshape: How the layer's output becomes ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> KPCACAM(kernel="rbf")(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    KERNELS: ClassVar[tuple[str, ...]] = KERNELS

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        kernel: str = "sigmoid",
        gamma: float | None = None,
        degree: float = 3.0,
        coef0: float = 1.0,
        *,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, name=name)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}.")
        for arg, value in (("gamma", gamma), ("degree", degree), ("coef0", coef0)):
            if value is None and arg == "gamma":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{arg} must be a number, got {value!r}.")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"gamma must be None (1 / channels) or a float > 0, got {gamma!r}.")
        self.kernel, self.gamma, self.degree, self.coef0 = kernel, gamma, float(degree), float(coef0)

    @property
    def uses_gradients(self) -> bool:
        """No gradients: the projection reads activations only."""
        return False

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(first kernel-PCA component)``, ``[B, 1, h, w]``."""
        acts, _ = self.feature_maps(p, layers[0])
        return F.relu(kernel_projection(acts, self.kernel, self.gamma, self.degree, self.coef0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, kernel={self.kernel!r}, gamma={self.gamma})"
