"""More class activation maps on the shared gradient pass: HiResCAM, XGrad-CAM, LayerCAM and EigenCAM.

Each is a few lines on :class:`~lightning_saliency.methods.base.CAMMethod` (torchcam's template): XGrad-CAM writes
only its channel weights, the elementwise ones (HiResCAM, LayerCAM) their weights per location; EigenCAM, which is
no weighted sum, is an :class:`~lightning_saliency.methods.base.ActivationMethod` with its own ``from_pass``.
All post-processing is float32; all take ``target_layer`` and ``reshape`` (ViT/Swin) like Grad-CAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._shapes import spatial
from lightning_saliency.methods.base import ActivationMethod, CAMMethod, GradientPass
from lightning_saliency.methods.registry import register_method

__all__ = ["EigenCAM", "HiResCAM", "LayerCAM", "XGradCAM"]

_XGRAD_EPS = 1e-7  # pytorch-grad-cam's


@register_method("hirescam")
class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k dS_t/dA_k * A_k)``, elementwise instead of averaged gradients.

    Same as pytorch-grad-cam's ``HiResCAM``. For a model whose head is global average pooling and one linear
    layer it is exactly the model's evidence at each location (Grad-CAM then equals it too).

    Example:
        >>> from torchvision.models import resnet18
        >>> HiResCAM()(resnet18(num_classes=3), torch.rand(1, 3, 64, 64), torch.tensor([2])).shape
        torch.Size([1, 1, 64, 64])
    """

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Elementwise: the gradient itself, ``[B, K, h, w]``."""
        return grads


@register_method("xgradcam")
class XGradCAM(CAMMethod):
    """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij (A_kij / (sum_ab A_kab + eps)) * dS_t/dA_kij``, ``eps = 1e-7``.

    Same as pytorch-grad-cam's ``XGradCAM`` (same ``eps``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> XGradCAM()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """``sum_ij g * A / (sum A + eps)``, ``[B, K]``."""
        total = activations.sum(spatial(activations), keepdim=True)  # [B,K,1,1]
        return (grads * activations / (total + _XGRAD_EPS)).sum(spatial(grads))


@register_method("layercam")
class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(dS_t/dA_k) * A_k)``.

    Same as pytorch-grad-cam's and torchcam's ``LayerCAM``. Works well on shallow layers too; fuse several layers
    with :class:`~lightning_saliency.methods.fusion.FusedCAM` (``method="layercam"``), as the paper does.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> LayerCAM()(net, torch.rand(1, 3, 8, 8), torch.tensor([1])).shape
        torch.Size([1, 1, 8, 8])
    """

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Elementwise: the positive part of the gradient, ``[B, K, h, w]``."""
        return F.relu(grads)


def eigen_projection(activations: Tensor) -> Tensor:
    """Projection of each location's activation vector on the first principal component, sign-stable.

    Per image: ``X = A^T - mean`` (``[h*w, K]``, centred over locations), ``v`` = first right singular vector of ``X``,
    ``P = X v`` (``[h, w]``). SVD leaves the sign of ``v`` arbitrary (pytorch-grad-cam's EigenCAM flips between
    images, runs and devices); here it is chosen so that ``P`` correlates positively with the channel mean of the
    activations, ``sum_ij P_ij * (mean_k A_kij - mean)``, i.e. the projection points where the layer fires more. A
    zero correlation keeps the SVD's sign.

    Args:
        activations: ``[B, K, h, w]`` float.

    Returns:
        ``[B, 1, h, w]`` float32 projections (before any ReLU).

    Example:
        >>> a = torch.zeros(1, 2, 2, 2)
        >>> a[0, :, 0, 0] = 3.0  # one location fires on every channel
        >>> eigen_projection(a)[0, 0] > 0
        tensor([[ True, False],
                [False, False]])
    """
    b, shape = activations.shape[0], activations.shape[2:]  # (h, w), or (d, h, w)
    x = torch.nan_to_num(activations.float()).flatten(2).transpose(1, 2)  # [B,hw,K]
    x = x - x.mean(1, keepdim=True)  # centred over locations
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh [B,min(hw,K),K]
    proj = (x @ vh[:, 0, :, None]).squeeze(2)  # [B,hw]
    mean_act = x.mean(2)  # [B,hw] centred channel mean
    sign = torch.where((proj * mean_act).sum(1) < 0, -1.0, 1.0)  # [B]
    return (proj * sign[:, None]).view(b, 1, *shape)


@register_method("eigencam")
class EigenCAM(ActivationMethod):
    """EigenCAM (Muhammad & Yeasin 2020): ``ReLU`` of the activations' first principal component, class-agnostic.

    See :func:`eigen_projection` for the sign rule (pytorch-grad-cam's ``EigenCAM`` is the same up to that sign,
    and also applies the ReLU). No gradient is needed: alone, it runs one forward without autograd; with other
    methods it reads the shared pass. The map does not depend on ``targets``.

    Example:
        >>> from torchvision.models import resnet18
        >>> EigenCAM()(resnet18(num_classes=3), torch.rand(2, 3, 64, 64), torch.tensor([0, 1])).shape
        torch.Size([2, 1, 64, 64])
    """

    @property
    def uses_gradients(self) -> bool:
        """No gradients: the projection reads activations only."""
        return False

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(first-component projection)``, ``[B, 1, h, w]``."""
        acts, _ = self.feature_maps(p, layers[0])
        return F.relu(eigen_projection(acts))
