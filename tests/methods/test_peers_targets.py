"""Our methods equal the peers' for the targets beyond one class, and on volumes ``[B, C, D, H, W]``.

* Segmentation (:class:`SegmentationTarget`) on torchvision's ``fcn_resnet50`` (random weights, random BatchNorm
  statistics): Grad-CAM vs pytorch-grad-cam's ``SemanticSegmentationTarget`` and captum's ``LayerGradCam``, the
  gradient vs captum's ``Saliency`` of the masked sum. (``lraspp_mobilenet_v3_large`` with random weights is no good
  here: its trunk's activations are nearly constant over locations and input, and Grad-CAM is 0 for most categories.)
* Volumes: a small Conv3d classifier and torchvision's ``r3d_18``; Grad-CAM, the gradient, Integrated Gradients and
  Grad-CAM++ vs captum (trilinear upsampling) and pytorch-grad-cam (which resizes volumes another way, see below).
* Multi-label (:class:`MultiLabelTarget`) rows vs captum with ``target=label`` per row, and the rows it chooses.
* Regression (:class:`RegressionTarget`) and :class:`CallableTarget` vs ``torch.autograd.grad`` by hand.

Every peer runs on its own deep copy of the model, in eval mode (pytorch-grad-cam calls ``.backward()``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_to_peer
from conftest import make_tiny_cnn
from torch import Tensor, nn

from lightning_saliency.methods import (
    GradCAM,
    GradCAMPlusPlus,
    Gradient,
    IntegratedGradients,
    Run,
    compute_saliency,
)
from lightning_saliency.targets import CallableTarget, MultiLabelTarget, RegressionTarget, SegmentationTarget

captum_attr = pytest.importorskip("captum.attr")
pgc = pytest.importorskip("pytorch_grad_cam")
pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
pgc_image = pytest.importorskip("pytorch_grad_cam.utils.image")
segmentation_models = pytest.importorskip("torchvision.models.segmentation")
video_models = pytest.importorskip("torchvision.models.video")


def minmax(maps: Tensor) -> Tensor:
    """Per-sample min-max to [0, 1] of ``[B, 1, *spatial]`` (as ``normalize_maps``, for maps that are not flat)."""
    flat = maps.flatten(1)
    view = (-1,) + (1,) * (maps.ndim - 1)
    lo, hi = flat.min(1).values.view(view), flat.max(1).values.view(view)
    return (maps - lo) / (hi - lo)


def abs_max_channels(grads: Tensor) -> Tensor:
    """Our gradient map before normalisation: ``max_c |g|``."""
    return grads.abs().amax(1, keepdim=True)


def assert_nontrivial(maps: Tensor) -> None:
    """Guard: two all-zero (or flat) maps would agree without proving anything."""
    flat = maps.flatten(1)
    assert (flat.amax(1) - flat.amin(1) > 0.5).all()


def random_batchnorm(model: nn.Module, spread: float = 0.2) -> nn.Module:
    """Random BatchNorm statistics, so eval-mode activations are not just the initialisation's; eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-spread, spread)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


# --- Segmentation ------------------------------------------------------------------------------------------------

SEG_SIDE = 64
SEG_CATEGORY = 2  # the random FCN predicts it on ~400 of 4096 pixels per image (and category 1 on most of the rest)


class OutTensor(nn.Module):
    """pytorch-grad-cam needs a tensor output: ``model(x)["out"]`` (ours reads torchvision's dict itself)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


@pytest.fixture(scope="module")
def seg() -> tuple[nn.Module, Tensor, Tensor]:
    """``(fcn_resnet50 with 4 categories, inputs [2, 3, 64, 64], masks [2, 64, 64])``; masks differ per image."""
    torch.manual_seed(0)
    model = segmentation_models.fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=False)
    random_batchnorm(model)
    inputs = torch.rand(2, 3, SEG_SIDE, SEG_SIDE, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(2, SEG_SIDE, SEG_SIDE, dtype=torch.bool)
    masks[0, 8:30, 10:40] = True
    masks[1, 36:60, 20:56] = True
    return model, inputs, masks


def masked_score(model: nn.Module, masks: Tensor, category: int = SEG_CATEGORY) -> Callable[[Tensor], Tensor]:
    """A forward function for captum: the category's logits summed over each image's mask, ``[B]``."""
    return lambda x: (model(x)["out"][:, category] * masks).flatten(1).sum(1)


def run_pgc_segmentation(model: nn.Module, inputs: Tensor, masks: Tensor, category: int = SEG_CATEGORY) -> Tensor:
    peer = OutTensor(copy.deepcopy(model))
    targets = [pgc_targets.SemanticSegmentationTarget(category, m.numpy().astype(np.float32)) for m in masks]
    with pgc.GradCAM(model=peer, target_layers=[peer.model.backbone.layer4]) as cam:
        out = cam(input_tensor=inputs.clone(), targets=targets)
    return torch.from_numpy(out)[:, None]  # [B,1,H,W]


def test_segmentation_gradcam_equals_pytorch_grad_cam(seg):
    model, inputs, masks = seg
    method = GradCAM()
    # "auto" on a segmentation model: the backbone's last feature map, as pytorch-grad-cam's tutorial takes it.
    assert method.layer_name(model, inputs) == "backbone.layer4"
    ours = method(model, inputs, SegmentationTarget(SEG_CATEGORY, masks))
    theirs = run_pgc_segmentation(model, inputs, masks)
    assert_nontrivial(ours)
    # pgc: min-max at layer resolution (eps 1e-7), cv2 bilinear resize (half-pixel centres, as align_corners=False),
    # min-max; min-max is affine and the resize linear, so that equals ours (resize, then min-max). Rounding: pgc's
    # float32 numpy weights and 2048-channel sum on the 8x8 map, its eps, the resizes: measured 20.5 ulps of 1. 1024.
    assert_close_to_peer(ours, theirs, ulps=1024, why="segmentation Grad-CAM vs pytorch-grad-cam")
    # Guard: the mask matters (the whole image, or the other image's region, give other maps).
    whole = method(model, inputs, SegmentationTarget(SEG_CATEGORY, torch.ones_like(masks)))
    assert (whole - ours).abs().amax() > 0.1
    swapped = method(model, inputs, SegmentationTarget(SEG_CATEGORY, masks.flip(0)))
    assert (swapped - ours).abs().amax() > 0.1


def test_segmentation_gradcam_layer_map_equals_captum(seg):
    model, inputs, masks = seg
    peer = copy.deepcopy(model)
    theirs = captum_attr.LayerGradCam(masked_score(peer, masks), peer.backbone.layer4).attribute(
        inputs.clone(), relu_attributions=True
    )  # [B,1,8,8]
    ours = GradCAM().compute(model, inputs, SegmentationTarget(SEG_CATEGORY, masks), Run()).detach()
    assert (ours.flatten(1) > 0).any(1).all()
    assert (ours.flatten(1) == 0).any(1).all(), "the ReLU clips part of each map: it is compared too"
    # A 2048-channel sum of w_k A_k (w_k a mean of 8x8 gradients): reordered, it would round by ~sqrt(2048) = 45
    # ulps of sum_k |w_k A_k|. Measured 0 (the same torch ops on the same batch). 1024.
    assert_close_to_peer(ours, theirs.detach(), ulps=1024, why="segmentation Grad-CAM (8x8) vs captum LayerGradCam")


def test_segmentation_target_without_a_mask_explains_the_predicted_pixels(seg):
    model, inputs, _ = seg
    with torch.no_grad():
        predicted = model(inputs)["out"].argmax(1) == SEG_CATEGORY  # [B,H,W]
    assert (predicted.flatten(1).sum(1) > 100).all()
    assert (predicted.flatten(1).sum(1) < SEG_SIDE * SEG_SIDE // 2).all(), "a part of the image, not all of it"
    ours = GradCAM()(model, inputs, SegmentationTarget(SEG_CATEGORY))
    theirs = run_pgc_segmentation(model, inputs, predicted)
    assert_nontrivial(ours)
    # As with a given mask (the same layer and post-processing): measured 10.5 ulps of 1. 1024.
    assert_close_to_peer(ours, theirs, ulps=1024, why="Grad-CAM of the predicted pixels vs pytorch-grad-cam")


@pytest.mark.parametrize("mask_side", [SEG_SIDE, SEG_SIDE // 4])
def test_segmentation_gradient_equals_captum_saliency(seg, mask_side):
    model, inputs, masks = seg
    if mask_side != SEG_SIDE:  # a coarse mask: ours resizes it (nearest) to the output, here 4x replication
        masks = masks[:, ::4, ::4]
    full = masks.repeat_interleave(SEG_SIDE // mask_side, 1).repeat_interleave(SEG_SIDE // mask_side, 2)
    ours = Gradient()(model, inputs, SegmentationTarget(SEG_CATEGORY, masks))
    theirs = captum_attr.Saliency(masked_score(copy.deepcopy(model), full)).attribute(
        inputs.clone().requires_grad_(), abs=True
    )
    assert_nontrivial(ours)
    # The same backward on the same batch; |g|, a max over 3 channels, min-max: a few ulps of 1. Measured 0. 64.
    assert_close_to_peer(ours, minmax(abs_max_channels(theirs)), ulps=64, why=f"{mask_side}px-mask gradient")


# --- Volumes -----------------------------------------------------------------------------------------------------

VOLUME = (8, 16, 16)  # D, H, W


@pytest.fixture(scope="module")
def vol() -> tuple[nn.Module, Tensor, Tensor]:
    """``(Conv3d classifier, inputs [2, 2, 8, 16, 16], targets [2])``: the target layer's map is 4x8x8."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1),
        nn.BatchNorm3d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(2),
        nn.Conv3d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    random_batchnorm(model)
    with torch.no_grad():
        model[8].weight.copy_(model[8].weight.abs() - 0.1)  # mostly positive: Grad-CAM is non-trivial
    inputs = torch.rand(2, 2, *VOLUME, generator=torch.Generator().manual_seed(1))
    return model, inputs, torch.tensor([1, 3])


def test_volume_gradcam_auto_layer_is_the_last_before_global_pooling(vol):
    model, inputs, _ = vol
    assert GradCAM().layer_name(model, inputs) == "5", "the last ReLU, before AdaptiveAvgPool3d"


# "5" (auto): after it only global pooling and the linear head, so its gradient is the same at every location;
# "4" (the conv before that ReLU): the ReLU masks the gradient, so the mean over the 4x8x8 locations is tested.
@pytest.mark.parametrize("layer", ["5", "4"])
def test_volume_gradcam_equals_captum_layer_gradcam_trilinear(vol, layer):
    model, inputs, targets = vol
    method = GradCAM(target_layer=layer)
    peer = copy.deepcopy(model)
    theirs = captum_attr.LayerGradCam(peer, peer.get_submodule(layer)).attribute(
        inputs.clone(), target=targets, relu_attributions=True
    )
    raw = method.compute(model, inputs, targets, Run()).detach()  # [B,1,4,8,8]
    assert raw.shape == (2, 1, 4, 8, 8)
    assert (raw.flatten(1) == 0).any(1).all(), "the ReLU clips part of each map: it is compared too"
    # A 16-channel sum of w_k A_k: reordered, ~4 ulps of sum_k |w_k A_k|. Measured 0 (the same torch ops). 64.
    assert_close_to_peer(raw, theirs.detach(), ulps=64, why=f"volume Grad-CAM on {layer} vs captum LayerGradCam")
    ours = method(model, inputs, targets)
    assert ours.shape == (2, 1, *VOLUME)
    assert_nontrivial(ours)
    # Ours upsamples with F.interpolate(trilinear, align_corners=False), as captum's interpolate does (its default).
    upsampled = captum_attr.LayerAttribution.interpolate(theirs.detach(), VOLUME, interpolate_mode="trilinear")
    # Trilinear (8-term convex combinations) and min-max (range = max: the ReLU'd minimum is 0): a few ulps of 1.
    # Measured 0. 256.
    assert_close_to_peer(ours, minmax(upsampled), ulps=256, why=f"upsampled volume Grad-CAM on {layer} vs captum")
    # Guard: the comparison tells the voxel-centre conventions apart.
    corners = F.interpolate(theirs.detach(), VOLUME, mode="trilinear", align_corners=True)
    assert (ours - minmax(corners)).abs().amax() > 1e-2


def test_volume_gradient_equals_captum_saliency(vol):
    model, inputs, targets = vol
    ours = Gradient()(model, inputs, targets)
    theirs = captum_attr.Saliency(copy.deepcopy(model).eval()).attribute(
        inputs.clone().requires_grad_(), target=targets, abs=True
    )
    assert ours.shape == (2, 1, *VOLUME)
    assert_nontrivial(ours)
    assert not torch.equal(theirs[:, 0], theirs[:, 1]), "the max over the two channels is exercised"
    # The same backward; |g|, a max over 2 channels, min-max: a few ulps of 1. Measured 0. 64.
    assert_close_to_peer(ours, minmax(abs_max_channels(theirs)), ulps=64, why="volume gradient vs captum Saliency")


def test_volume_integrated_gradients_equals_captum(vol):
    model, inputs, targets = vol
    steps = 8
    # All B * steps path points in one forward, as captum's (another batch size rounds the convs' last bits
    # differently, which the max-pool and ReLUs can turn into O(1) changes of the gradient at isolated voxels).
    ig = IntegratedGradients(steps=steps, internal_batch_size=inputs.shape[0] * steps)
    ours = ig.attributions(model, inputs, targets)
    theirs = captum_attr.IntegratedGradients(copy.deepcopy(model).eval()).attribute(
        inputs.clone(), baselines=torch.zeros_like(inputs), target=targets, n_steps=steps
    )
    assert ours.shape == inputs.shape
    assert ours.abs().amax() > 0
    # The same gradients; the quadrature's weighted sum of 8 terms (no cancellation) in another order, times
    # (x - x'): <= 9 ulps of max|attr|. Measured 0. 32.
    assert_close_to_peer(ours, theirs.detach(), ulps=32, why="volume IG vs captum")
    maps = ig(model, inputs, targets)
    # |sum_c IG| over 2 channels, min-max: a few ulps of 1. Measured 0. 64.
    assert_close_to_peer(maps, minmax(theirs.detach().sum(1, keepdim=True).abs()), ulps=64, why="volume IG map")


def pgc_post_processing(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """pytorch-grad-cam's post-processing of one layer's ReLU'd CAM ``[B, 1, d, h, w]`` for a volume of ``size``.

    ``BaseCAM.compute_cam_per_layer`` min-max normalises, then ``scipy.ndimage.zoom`` (order 3) to the input size
    (``get_target_width_height`` gives ``(W, H, D)``, reversed again in ``scale_cam_image``);
    ``aggregate_multi_layers`` clips at 0 and min-max normalises again.
    """
    d, h, w = size
    zoomed = pgc_image.scale_cam_image(raw[:, 0].numpy(), (w, h, d))
    return torch.from_numpy(pgc_image.scale_cam_image(np.maximum(zoomed, 0)))[:, None]


@pytest.mark.parametrize("layer", ["5", "4"])
def test_volume_gradcam_plus_plus_equals_pytorch_grad_cams_cam(vol, layer):
    # pgc adds eps=1e-6 to alpha's denominator (ours is exact). The layers' non-zero gradients are 2e-5 to 6e-4 here
    # (2 g^2 down to 1e-9, far below eps; logits x1000 still left 469 ulps); with the logits scaled by 1e5,
    # 2 g^2 >= 1e1 and eps is negligible.
    model, inputs, targets = vol
    model = copy.deepcopy(model)
    with torch.no_grad():
        model[8].weight.mul_(1e5)
    peer = copy.deepcopy(model)
    with pgc.GradCAMPlusPlus(model=peer, target_layers=[peer.get_submodule(layer)]) as cam:
        out = cam(input_tensor=inputs.clone(), targets=[pgc_targets.ClassifierOutputTarget(int(t)) for t in targets])
    theirs = torch.from_numpy(out)[:, None]
    method = GradCAMPlusPlus(target_layer=layer)
    raw = method.compute(model, inputs, targets, Run()).detach()  # [B,1,4,8,8]
    assert (raw.flatten(1).amax(1) > 0).all()
    # pgc resizes volumes otherwise than ours (see the r3d_18 test): its post-processing applied to our layer map.
    # alpha per element, a 16-channel sum, pgc's min-max (eps 1e-7), zoom, min-max: measured 1.5 ulps of 1 on "5",
    # 3.5 on "4". 128.
    expected = pgc_post_processing(raw, VOLUME)
    assert_close_to_peer(expected, theirs, ulps=128, why=f"volume Grad-CAM++ on {layer} vs pytorch-grad-cam")
    gradcam = GradCAM(target_layer=layer).compute(model, inputs, targets, Run()).detach()
    assert not torch.allclose(minmax(raw), minmax(gradcam), atol=1e-3), "Grad-CAM++ weights are not Grad-CAM's"


@pytest.fixture(scope="module")
def r3d() -> nn.Module:
    torch.manual_seed(0)
    return random_batchnorm(video_models.r3d_18(weights=None, num_classes=10), spread=0.1)


def test_r3d_gradcam_equals_captum_and_pytorch_grad_cams_cam(r3d):
    """On a video ResNet, Grad-CAM on ``layer4`` equals captum's; pytorch-grad-cam's is the same CAM resized otherwise.

    pytorch-grad-cam (1.5) resizes a 3-D CAM with ``scipy.ndimage.zoom`` (cubic spline, ``grid_mode=False``: the
    corner voxels' centres are aligned, like ``align_corners=True``), while its 2-D CAMs go through ``cv2.resize``
    (linear, half-pixel centres). Ours is trilinear with half-pixel centres (``align_corners=False``) for volumes,
    the same convention as our (and pgc's) 2-D maps and as captum's ``LayerAttribution.interpolate``. So the layer
    maps are equal, and pgc's final map equals pgc's resizing of ours; the final maps differ by design.
    """
    inputs = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([4])
    size = tuple(inputs.shape[2:])
    method = GradCAM()
    assert method.layer_name(r3d, inputs) == "layer4"
    raw = method.compute(r3d, inputs, targets, Run()).detach()  # [1,1,1,2,2]
    assert raw.shape == (1, 1, 1, 2, 2)
    peer = copy.deepcopy(r3d)
    layer = captum_attr.LayerGradCam(peer, peer.layer4).attribute(
        inputs.clone(), target=targets, relu_attributions=True
    )
    # A 512-channel sum of w_k A_k: reordered, ~sqrt(512) = 23 ulps of sum_k |w_k A_k|. Measured 0 (the same ops). 512.
    assert_close_to_peer(raw, layer.detach(), ulps=512, why="r3d_18 layer4 Grad-CAM vs captum LayerGradCam")
    ours = method(r3d, inputs, targets)
    assert_nontrivial(ours)
    upsampled = captum_attr.LayerAttribution.interpolate(layer.detach(), size, interpolate_mode="trilinear")
    # Trilinear (8-term convex combinations) and min-max, plus the layer map's rounding times max|cam| / range (~1.4
    # here): a few ulps of 1. Measured 0. 1024.
    assert_close_to_peer(ours, minmax(upsampled), ulps=1024, why="r3d_18 upsampled Grad-CAM vs captum")

    peer = copy.deepcopy(r3d)
    with pgc.GradCAM(model=peer, target_layers=[peer.layer4]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=inputs.clone(), targets=[pgc_targets.ClassifierOutputTarget(4)]))
    theirs = theirs[:, None]
    # pgc's float32 numpy weights and 512-channel sum, min-max, zoom, min-max: measured 7 ulps of 1. 512.
    assert_close_to_peer(pgc_post_processing(raw, size), theirs, ulps=512, why="pgc's resizing of ours vs pgc")
    # The documented difference: the resizing alone moves voxels by a fifth of the range.
    assert (ours - theirs).abs().amax() > 0.05


# --- Multi-label -------------------------------------------------------------------------------------------------

NUM_LABELS = 5


def test_multilabel_positives_are_image_major_rows():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, NUM_LABELS, generator=generator) * 2
    multi_hot = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 2, 1, 0, 0]])

    def by_hand(chosen: list[list[bool]]) -> tuple[list[int], list[int]]:
        rows, labels = [], []
        for i, row in enumerate(chosen):
            if not any(row):  # an image without positives: its highest label
                row = [j == int(logits[i].argmax()) for j in range(NUM_LABELS)]
            for j, positive in enumerate(row):
                if positive:
                    rows.append(i)
                    labels.append(j)
        return rows, labels

    rows, target = MultiLabelTarget().positives(logits, multi_hot)
    assert (rows.tolist(), target.labels.tolist()) == by_hand((multi_hot != 0).tolist())
    assert rows.tolist() == [0, 0, 0, 1, 2, 3, 3]
    probs = logits.sigmoid()
    rows, target = MultiLabelTarget(threshold=0.7).positives(logits)
    assert (rows.tolist(), target.labels.tolist()) == by_hand((probs > 0.7).tolist())
    rows, target = MultiLabelTarget(top_k=2).positives(logits)
    top = [
        [j in sorted(range(NUM_LABELS), key=lambda k: -float(logits[i, k]))[:2] for j in range(NUM_LABELS)]
        for i in range(4)
    ]
    assert (rows.tolist(), target.labels.tolist()) == by_hand(top)
    # The rows' scores are the labels' logits, their confidence the sigmoid.
    torch.testing.assert_close(target.score(logits[rows]), logits[rows, target.labels], rtol=0, atol=0)
    torch.testing.assert_close(target.confidence(logits[rows]), probs[rows, target.labels], rtol=0, atol=0)


def test_multilabel_gradient_and_gradcam_equal_captum_per_row():
    model = make_tiny_cnn(num_classes=NUM_LABELS).eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    multi_hot = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 1, 0, 1, 1]])
    with torch.no_grad():
        logits = model(images)
    rows, target = MultiLabelTarget().positives(logits, multi_hot)
    inputs, labels = images[rows], target.labels  # one row per (image, positive label)
    assert GradCAM().layer_name(model, inputs) == "features", "the layer captum reads below"
    gradient, gradcam = compute_saliency(model, inputs, target, [Gradient(), GradCAM()])  # one shared pass
    peer = copy.deepcopy(model).eval()
    saliency = captum_attr.Saliency(peer).attribute(inputs.clone().requires_grad_(), target=labels, abs=True)
    # The same backward on the same rows; |g|, a max over 3 channels, min-max: a few ulps of 1. Measured 0. 64.
    assert_close_to_peer(gradient, minmax(abs_max_channels(saliency)), ulps=64, why="multi-label gradient")
    layer = captum_attr.LayerGradCam(peer, peer.features).attribute(
        inputs.clone(), target=labels, relu_attributions=True
    )  # [R,1,8,8]
    upsampled = captum_attr.LayerAttribution.interpolate(layer.detach(), (32, 32), interpolate_mode="bilinear")
    assert_nontrivial(gradcam)
    # A 16-channel sum, bilinear upsampling (4-term convex combinations), min-max: a few ulps of 1. Measured 0. 256.
    assert_close_to_peer(gradcam, minmax(upsampled), ulps=256, why="multi-label Grad-CAM vs captum LayerGradCam")
    # Guard: rows of one image explain different labels, so their maps differ.
    assert rows[:2].tolist() == [0, 0]
    assert labels[:2].tolist() == [0, 2]
    assert (gradient[0] - gradient[1]).abs().amax() > 0.1
    assert (gradcam[0] - gradcam[1]).abs().amax() > 0.1


# --- Regression and callables ------------------------------------------------------------------------------------


def gradient_by_hand(model: nn.Module, inputs: Tensor, score: Callable[[Tensor], Tensor]) -> Tensor:
    """``max_c |d score / d x|`` by ``torch.autograd.grad`` on a copy in eval mode, min-max normalised."""
    peer = copy.deepcopy(model).eval()
    x = inputs.clone().requires_grad_()
    (grads,) = torch.autograd.grad(score(peer(x)).sum(), x)
    return minmax(abs_max_channels(grads))


def regression_fn(out: Tensor) -> Tensor:
    """A non-linear function of a ``[B, 3]`` output to ``[B]``."""
    return out[:, 0] * out[:, 1] - out[:, 2].pow(2)


@pytest.mark.parametrize(
    ("target", "score"),
    [
        (RegressionTarget(2), lambda out: out[:, 2]),
        (RegressionTarget(0), lambda out: out[:, 0]),
        (CallableTarget(regression_fn), regression_fn),
    ],
    ids=["regression-2", "regression-0", "callable"],
)
def test_regression_and_callable_gradient_equal_autograd(make_batch, target, score):
    model = make_tiny_cnn(num_classes=3, seed=1)  # a [B, 3] regression head, in train mode (ours uses eval mode)
    inputs, _ = make_batch(batch=3)
    ours = Gradient()(model, inputs, target)
    theirs = gradient_by_hand(model, inputs, score)
    assert_nontrivial(ours)
    # The same backward; |g|, a max over 3 channels, min-max: a few ulps of 1. Measured 0. 64.
    assert_close_to_peer(ours, theirs, ulps=64, why=f"{target!r} gradient vs autograd")


def test_outputs_of_regression_columns_give_different_maps(make_batch):
    # Guard for the test above: the column (and the function) matter.
    model = make_tiny_cnn(num_classes=3, seed=1)
    inputs, _ = make_batch(batch=3)
    maps = [
        Gradient()(model, inputs, t) for t in (RegressionTarget(0), RegressionTarget(2), CallableTarget(regression_fn))
    ]
    assert (maps[0] - maps[1]).abs().amax() > 0.1
    assert (maps[0] - maps[2]).abs().amax() > 0.1


def test_callable_target_gradcam_equals_captum(make_batch):
    model = make_tiny_cnn(num_classes=3, seed=1).eval()
    inputs, _ = make_batch(batch=3)
    ours = GradCAM().compute(model, inputs, CallableTarget(regression_fn), Run()).detach()
    peer = copy.deepcopy(model)
    theirs = captum_attr.LayerGradCam(lambda x: regression_fn(peer(x)), peer.features).attribute(
        inputs.clone(), relu_attributions=True
    )
    assert (ours.flatten(1) > 0).any(1).all()
    # A 16-channel sum of w_k A_k: reordered, ~4 ulps of sum_k |w_k A_k|. Measured 0 (the same torch ops). 64.
    assert_close_to_peer(ours, theirs.detach(), ulps=64, why="callable-target Grad-CAM vs captum")


class ScalarHead(nn.Module):
    """A model with one output per image, ``[B]`` (a regression of one value)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_tiny_cnn(num_classes=1, seed=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, 0]


@pytest.mark.parametrize(
    ("target", "score"),
    [(RegressionTarget(), lambda out: out), (CallableTarget(torch.tanh), torch.tanh)],
    ids=["regression", "callable"],
)
def test_scalar_output_gradient_equals_autograd(make_batch, target, score):
    model = ScalarHead()
    inputs, _ = make_batch(batch=3)
    with torch.no_grad():
        assert model.eval()(inputs).shape == (3,)
    ours = Gradient()(model, inputs, target)
    theirs = gradient_by_hand(model, inputs, score)
    assert_nontrivial(ours)
    # The same backward; |g|, a max over 3 channels, min-max: a few ulps of 1. Measured 0 (with the 2-D assumption
    # of base._warn_non_finite, `.all(1)`, patched out: as written, our gradient pass raises an IndexError). 64.
    assert_close_to_peer(ours, theirs, ulps=64, why=f"{target!r} on a [B] output vs autograd")
