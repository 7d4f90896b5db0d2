"""3-D Grad-CAM and Grad-CAM++ against MONAI (``monai.visualize``) on MONAI's 3-D DenseNet121.

MONAI is an optional test dependency: without it these tests are skipped. MONAI's maps are ReLU(sum_k w_k A_k) at
the layer's resolution, upsampled trilinearly (``align_corners=False``) to the volume and min-max scaled per
volume to (1, 0) by its default normaliser (flipped); ours are the same map scaled to (0, 1). We compare with
MONAI's normaliser replaced by the identity and our min-max applied to its output.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _tolerance import assert_close_to_peer

from lightning_saliency.layers import find_target_layer
from lightning_saliency.methods import GradCAM, GradCAMPlusPlus, compute_saliency

monai = pytest.importorskip("monai")
from monai.networks.nets import DenseNet121  # noqa: E402
from monai.visualize import GradCAM as MonaiGradCAM  # noqa: E402
from monai.visualize import GradCAMpp as MonaiGradCAMpp  # noqa: E402


def _min_max(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1, 1)
    return (x - lo) / (hi - lo)


@pytest.fixture(scope="module")
def densenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=3).eval()


def test_auto_layer_is_the_one_monai_documents(densenet):
    assert find_target_layer(densenet, torch.rand(1, 1, 32, 32, 32)) == "class_layers.relu"


def _release(peer) -> None:
    """Drop what MONAI's hooks keep of the last call (its activations, gradients and score hold autograd graphs)."""
    hooks = peer.nn_module
    hooks.activations.clear()
    hooks.gradients.clear()
    hooks.score = None


def _volume() -> tuple[torch.Tensor, torch.Tensor]:
    # 64^3: DenseNet121 downsamples 32x, so its last feature map is 2x2x2 (at 32^3 it is 1x1x1: a flat map)
    return torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1)), torch.tensor([2, 0])


def test_3d_gradcam_equals_monai(densenet):
    x, targets = _volume()
    (mine,) = compute_saliency(densenet, x, targets, [GradCAM()])
    peer = MonaiGradCAM(copy.deepcopy(densenet), target_layers="class_layers.relu", postprocessing=lambda m: m)
    reference = torch.cat([peer(x[i : i + 1], class_idx=int(targets[i])) for i in range(2)]).detach()  # [2,1,64^3]
    _release(peer)
    assert mine.shape == reference.shape == (2, 1, 64, 64, 64)
    # Measured max 1.3e-6 (10 ulps of 1): a float32 sum over 1024 channels of a DenseNet's backward, a trilinear
    # resize, a division by the range. 50x margin.
    assert_close_to_peer(mine, _min_max(reference), ulps=500, why="GradCAM vs monai")


def test_3d_gradcam_plus_plus_uses_the_papers_denominator_where_monai_uses_torchcams(densenet):
    """MONAI's ``GradCAMpp`` divides by ``2 g^2 + sum_ab(A_ab g_ab^3)`` (as torchcam) plus 1e-7; the paper (eq. 19)
    and pytorch-grad-cam by ``2 g^2 + (sum_ab A_ab) g^3``, as ours. From MONAI's own activations and gradients, the
    paper's weights give our map; MONAI's map differs."""
    x, targets = _volume()
    (mine,) = compute_saliency(densenet, x, targets, [GradCAMPlusPlus()])
    peer = MonaiGradCAMpp(copy.deepcopy(densenet), target_layers="class_layers.relu", postprocessing=lambda m: m)
    papers, monais = [], []
    for i in range(2):
        _, acti, grad = peer.nn_module(x[i : i + 1], class_idx=int(targets[i]))
        a, g = acti[-1], grad[-1]  # [1,K,2,2,2]
        denom = 2 * g**2 + a.sum((2, 3, 4), keepdim=True) * g**3
        alpha = torch.where(denom != 0, g**2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
        weights = (alpha * torch.relu(g)).sum((2, 3, 4), keepdim=True)
        cam = torch.relu((weights * a).sum(1, keepdim=True))
        papers.append(torch.nn.functional.interpolate(cam, size=(64, 64, 64), mode="trilinear", align_corners=False))
        monais.append(peer(x[i : i + 1], class_idx=int(targets[i])).detach())
        _release(peer)
    # Measured max 1.9e-6 (16 ulps of 1); 30x margin.
    assert_close_to_peer(mine, _min_max(torch.cat(papers)), ulps=500, why="GradCAM++ vs the paper on monai's hooks")
    assert (mine - _min_max(torch.cat(monais))).abs().max() > 1e-3  # the denominators differ, and it shows
