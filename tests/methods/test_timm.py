"""timm models users bring: ``target_layer="auto"`` and ``reshape="auto"`` for every CAM method (issue #18).

The layer ``"auto"`` picks is asserted on the real architectures (full depth and width, a dry forward); the CAM
methods run on the same architectures made shallow and narrow through timm's own kwargs, so module naming is
timm's. Grad-CAM is compared with pytorch-grad-cam on the layer its tutorials recommend.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import pytest
import torch
from _tolerance import assert_close_to_peer
from torch import Tensor, nn

from lightning_saliency import find_target_layer
from lightning_saliency._reshape import grid_size
from lightning_saliency.layers import token_prefix
from lightning_saliency.methods import CAMERAS, FusedCAM, GradCAM, Run, get_method
from lightning_saliency.methods.registry import METHODS

timm = pytest.importorskip("timm")

SIZE = 64
# name -> (timm kwargs for a 64x64 input, the layer "auto" picks)
REAL: dict[str, tuple[dict[str, Any], str]] = {
    "resnet50": ({}, "layer4"),  # == layer4[-1], pgc's README choice
    "convnext_tiny": ({}, "stages"),  # == stages[-1]; not `norm_pre` (an Identity on the same tensor)
    "efficientnet_b0": ({}, "bn2"),  # BatchNormAct2d: conv_head -> BN -> SiLU, before global pooling
    "vit_small_patch16_224": ({"img_size": SIZE}, "blocks.11.norm1"),  # pgc's ViT choice
    "swin_tiny_patch4_window7_224": ({"img_size": SIZE, "window_size": 2}, "norm"),  # channels-last, pre-pool
}
# The same architectures, shallow and narrow (same module names), for the runs of every method.
SMALL: dict[str, tuple[dict[str, Any], str]] = {
    "resnet50": ({"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128)}, "layer4"),
    "convnext_tiny": ({"depths": (1, 1, 1, 1), "dims": (16, 32, 48, 64)}, "stages"),
    "efficientnet_b0": ({}, "bn2"),  # timm's efficientnet_b0 fixes its widths and depths
    "vit_small_patch16_224": (
        {"img_size": SIZE, "depth": 2, "dynamic_img_size": True, "dynamic_img_pad": True},  # CAMERAS rescales
        "blocks.1.norm1",
    ),
    "swin_tiny_patch4_window7_224": (
        {
            "img_size": SIZE,
            "window_size": 2,
            "depths": (1, 1, 1, 1),
            "embed_dim": 24,
            "num_heads": (1, 1, 1, 1),
            "dynamic_img_size": True,
        },
        "norm",
    ),
}
CAM_METHODS = sorted(n for n, cls in METHODS.items() if "target_layer" in inspect.signature(cls).parameters)
# Swin's patch embedding needs sides divisible by 4, so CAMERAS gets scales whose sizes it accepts (96, 128).
KWARGS: dict[str, dict[str, Any]] = {"cameras": {"scales": (1.0, 1.5, 2.0)}}
# A random efficientnet_b0's bn2 activations are ~1e-5: the default sigmoid kernel tanh(<a, b> / K + 1) (and the
# rbf one) is the same to float32 for every pair of locations, so the map is constant; the cosine kernel reads it.
MODEL_KWARGS: dict[tuple[str, str], dict[str, Any]] = {("efficientnet_b0", "kpcacam"): {"kernel": "cosine"}}


def create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    # Noise images look alike to a random net, so a method's map can be all-negative (ReLU -> 0) on every image: an
    # Ablation-CAM weight carries the channel's mean, a KPCA component its arbitrary sign. Seed 6 gives every method
    # a non-empty map on these five architectures (seeds 0-7 tried: each fails one method on some architecture).
    torch.manual_seed(6)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def images(batch: int = 2) -> Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def predicted(model: nn.Module, inputs: Tensor) -> Tensor:
    # A random net's CAM for its predicted class has a positive mean (the logit), so ReLU leaves a map.
    with torch.no_grad():
        return model(inputs).argmax(1)


def test_the_cam_methods_are_all_there():
    assert len(CAM_METHODS) >= 14, CAM_METHODS
    assert {"gradcam", "scorecam", "ablationcam", "cameras", "shapleycam", "finercam", "kpcacam"} <= set(CAM_METHODS)


@pytest.mark.parametrize("name", list(REAL))
def test_auto_layer_on_the_real_architectures(name):
    kwargs, expected = REAL[name]
    model = create(name, kwargs)
    inputs = images(1)
    assert find_target_layer(model, inputs) == expected
    assert GradCAM().layer_name(model, inputs) == expected


def pgc_vit_reshape(tensor: Tensor, height: int = SIZE // 16, width: int = SIZE // 16) -> Tensor:
    """pytorch-grad-cam's ViT reshape_transform (tutorials/vision_transformers.md), for a 4x4 grid."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def pgc_swin_reshape(tensor: Tensor, height: int = SIZE // 32, width: int = SIZE // 32) -> Tensor:
    """pytorch-grad-cam's Swin reshape_transform (tutorials/vision_transformers.md), for the last stage's 2x2."""
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
    return result.transpose(2, 3).transpose(1, 2)


# name -> (pgc's layer, its reshape_transform, our layer spec). The first five are what "auto" picks.
PGC: dict[str, tuple[str, Any, str]] = {
    "resnet50": ("layer4.2", None, "auto"),  # pgc: model.layer4[-1]
    "convnext_tiny": ("stages.3", None, "auto"),  # model.stages[-1]
    "efficientnet_b0": ("bn2", None, "auto"),
    "vit_small_patch16_224": ("blocks.11.norm1", pgc_vit_reshape, "auto"),  # pgc: model.blocks[-1].norm1
    "swin_tiny_patch4_window7_224": ("norm", pgc_swin_reshape, "auto"),
    # pgc's Swin tutorial layer (model.layers[-1].blocks[-1].norm1), named: reshape="auto" reads it too.
    "swin_tiny_patch4_window7_224-norm1": ("layers.3.blocks.1.norm1", pgc_swin_reshape, "layers.3.blocks.1.norm1"),
}


@pytest.mark.parametrize("case", list(PGC))
def test_gradcam_equals_pytorch_grad_cam_on_its_recommended_layer(case):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name = case.split("-")[0]
    layer, reshape_transform, ours_layer = PGC[case]
    model = create(name, REAL[name][0])
    inputs = images()
    targets = predicted(model, inputs)
    peer = copy.deepcopy(model)
    with pgc.GradCAM(model=peer, target_layers=[peer.get_submodule(layer)], reshape_transform=reshape_transform) as c:
        theirs = c(input_tensor=inputs.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    ours = GradCAM(target_layer=ours_layer)(model, inputs, targets)
    assert float(ours.amax()) == 1.0
    # The same backward on the same batch; a weighted channel sum (up to 2048), pgc's float32 numpy min-max and cv2
    # resize of a 2x2 (4x4 ViT) grid: measured at most 3 ulps of 1 on these. 128.
    assert_close_to_peer(ours, torch.from_numpy(theirs)[:, None], ulps=128, why=f"Grad-CAM on timm {case} vs pgc")


@functools.cache
def small(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """One shallow model per architecture, shared by the method runs, with its probe batch and targets."""
    model = create(name, SMALL[name][0])
    inputs = images()
    return model, inputs, predicted(model, inputs)


# Score-CAM on efficientnet_b0's 1280 channels: 2560 forwards of the whole net, about 12 s on one CPU thread.
SLOW = {("efficientnet_b0", "scorecam")}
CASES = [
    pytest.param(name, method, id=f"{name}-{method}", marks=[pytest.mark.slow] if (name, method) in SLOW else [])
    for name in SMALL
    for method in CAM_METHODS
]


@pytest.mark.parametrize(("name", "method"), CASES)
def test_every_cam_method_runs_with_auto_layer_and_reshape(name, method):
    model, inputs, targets = small(name)
    cam = get_method(method, **KWARGS.get(method, {}), **MODEL_KWARGS.get((name, method), {}))
    maps = cam(model, inputs, targets)
    assert cam.layer_name(model, inputs) == SMALL[name][1]
    assert maps.shape == (2, 1, SIZE, SIZE)
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1
    spans = maps.amax((1, 2, 3)) - maps.amin((1, 2, 3))  # [B]
    assert bool((spans > 0).any()), f"{method} on {name}: every map is constant"


def test_cameras_names_the_scale_a_fixed_size_model_refuses():
    model = create("vit_small_patch16_224", {"img_size": SIZE, "depth": 1})  # fixed 64x64 input
    inputs = images()
    targets = predicted(model, inputs)
    match = r"scales=\(1, 1\.45.*resized by 1\.446\d* to \(93, 93\).*dynamic_img_size=True"
    with pytest.raises(ValueError, match=match):
        CAMERAS()(model, inputs, targets)
    assert CAMERAS(scales=(1.0,))(model, inputs, targets).shape == (2, 1, SIZE, SIZE)


def test_register_tokens_are_dropped_by_the_declared_count():
    # 1 class token + 4 registers + 4x4 patches = 21 tokens: one prefix token and a 4x5 grid also reads as square-ish
    model = create("vit_small_patch16_224", {"img_size": SIZE, "depth": 2, "reg_tokens": 4})
    inputs = images()
    cam = GradCAM()
    assert cam.layer_name(model, inputs) == "blocks.1.norm1"
    layer = model.get_submodule("blocks.1.norm1")
    assert token_prefix(layer) == model.num_prefix_tokens == 5
    assert GradCAM().compute(model, inputs, predicted(model, inputs), Run()).shape == (2, 1, 4, 4)
    assert grid_size((2, 21, 384), (SIZE, SIZE), prefix=5) == (4, 4)
    assert grid_size((2, 21, 384), (SIZE, SIZE)) == (4, 4), "square patches: not 1 prefix + 4x5"
    # The reshape really drops the registers: the map equals one on the patch tokens fed through a named callable.
    explicit = GradCAM(reshape=lambda t: t[:, 5:].transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 4))
    targets = predicted(model, inputs)
    torch.testing.assert_close(explicit(model, inputs, targets), cam(model, inputs, targets), rtol=0, atol=1e-6)


class Mixer(nn.Module):
    """A token model with no 4-D output and no attention (an MLP-Mixer with a linear patch embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 16 * 16, 32)
        self.blocks = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.LayerNorm(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        patches = x.unfold(2, 16, 16).unfold(3, 16, 16)  # [B,3,4,4,16,16]
        tokens = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [B,16,768]
        return self.head(self.blocks(self.embed(tokens)).mean(1))


def test_auto_cannot_decide_without_a_spatial_layer_and_lists_the_candidates():
    model = Mixer().eval()
    inputs = images()
    match = (
        r"found no module of Mixer with a 4-D .*reshape='auto'.*Modules whose output reads as a feature map "
        r"\(name, output shape\), first to last: 'embed' \(1, 16, 32\), 'blocks.0' \(1, 16, 32\).*"
        r"'blocks' \(1, 16, 32\)"
    )
    with pytest.raises(ValueError, match=match):
        GradCAM()(model, inputs, torch.tensor([0, 1]))
    named = GradCAM(target_layer="blocks")(model, inputs, torch.tensor([0, 1]))  # a candidate works when named
    assert named.shape == (2, 1, SIZE, SIZE)
    assert all(not hooks for m in model.modules() for hooks in (m._forward_hooks, m._backward_hooks))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 10))
    with pytest.raises(ValueError, match=r"No module's output reads as a feature map; the last to finish: '0' \(1, "):
        GradCAM()(flat, inputs, torch.tensor([0, 1]))


def test_attention_internals_are_never_candidates():
    # timm's Attention has q_norm/k_norm with per-head 4-D outputs [B, heads, T, d]: not feature maps.
    model = create("vit_small_patch16_224", {"img_size": SIZE, "depth": 2, "qk_norm": True})
    inputs = images(1)
    assert find_target_layer(model, inputs) == "blocks.1.norm1"
    with pytest.raises(ValueError, match="is not a module") as err:
        GradCAM(target_layer="blocks.1.norm3")(model, inputs, torch.tensor([0]))
    assert "q_norm" not in str(err.value)
    assert "'blocks.1' (1, 17, 384)" in str(err.value)


def test_an_identity_is_never_the_pick_an_in_place_relu_still_is():
    inputs = images(1)
    convnext = create("convnext_tiny", SMALL["convnext_tiny"][0])
    assert isinstance(convnext.norm_pre, nn.Identity)
    assert find_target_layer(convnext, inputs) == "stages"  # not `norm_pre`, the same tensor under another name
    # An in-place ReLU also returns its input tensor, changed: the post-ReLU map stays the pick.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert find_target_layer(net, inputs) == "1"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet50", ["layer3", "layer4"]),
        ("convnext_tiny", ["stages.2", "stages"]),
        ("efficientnet_b0", ["blocks.4", "bn2"]),  # not the stem's bn1: `blocks` holds the stages
        ("swin_tiny_patch4_window7_224", ["layers.2", "norm"]),  # not patch_embed
        ("vit_small_patch16_224", ["blocks.1.norm1"]),  # one token grid: the "auto" layer alone
    ],
)
def test_fused_cam_auto_layers_on_timm(name, expected):
    model, inputs, targets = small(name)
    assert FusedCAM().layer_names(model, inputs) == expected
    maps = FusedCAM()(model, inputs, targets)
    assert maps.shape == (2, 1, SIZE, SIZE)
    assert torch.isfinite(maps).all()
    assert bool(((maps.amax((1, 2, 3)) - maps.amin((1, 2, 3))) > 0).any())
    if name != "vit_small_patch16_224":
        assert FusedCAM().layer_names(create(name, REAL[name][0]), images(1)) == expected, "the real architecture"
