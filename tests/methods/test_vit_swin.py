"""CAM methods on vision transformers: token-to-grid reshape (ViT) and channels-last permute (Swin)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from _tolerance import assert_close_to_peer
from torch import Tensor, nn
from torchvision.models import swin_t
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from lightning_saliency import find_target_layer
from lightning_saliency._reshape import check_reshape, grid_size, to_feature_map
from lightning_saliency.methods import FusedCAM, GradCAM, Run, compute_saliency, get_method
from lightning_saliency.methods.base import run_gradient_pass

CAMS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam"]
LAST_LN1 = "encoder.layers.encoder_layer_1.ln_1"


def small_vit(image_size: int = 64, patch_size: int = 16) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )
    with torch.no_grad():  # torchvision zero-initialises the head: every gradient would be 0
        model.heads.head.weight.normal_(0, 0.5)
    return model.eval()


@functools.cache
def small_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=[4, 4], num_classes=10
    ).eval()


def batch(height: int = 64, width: int = 64) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, height, width, generator=generator), torch.tensor([1, 7])


def check(maps: Tensor, inputs: Tensor) -> None:
    assert maps.shape == (inputs.shape[0], 1, *inputs.shape[-2:])
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


def test_grid_inference_from_the_input_size():
    assert grid_size((1, 197, 768), (224, 224)) == (14, 14)  # ViT-B/16 at 224
    assert grid_size((1, 1 + 4 * 8, 16), (64, 128)) == (4, 8)  # non-square, class token
    assert grid_size((1, 2 + 8 * 4, 16), (128, 64)) == (8, 4)  # class + distillation tokens
    assert grid_size((1, 49, 16), (112, 112)) == (7, 7)  # no prefix token
    assert grid_size((1, 16, 16, 96), (64, 64)) == (16, 16)  # Swin channels-last
    assert grid_size((1, 512, 2, 2), (64, 64)) == (2, 2)  # conv: channels-first
    assert grid_size((1, 3, 97), (64, 64)) is None
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).view(2, 17, 3)
    fmap = to_feature_map(tokens, (64, 64))
    assert fmap.shape == (2, 3, 4, 4)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 4 + 2]), "row-major patches after the class token"
    conv = torch.rand(2, 8, 8, 8)
    assert to_feature_map(conv, (32, 32)) is conv, "ambiguous [B, 8, 8, 8] stays channels-first"
    assert to_feature_map(torch.rand(2, 4, 4, 96), (64, 64)).shape == (2, 96, 4, 4)
    with pytest.raises(ValueError, match="reshape must be"):
        check_reshape("vit")


def test_auto_layer_on_vit_and_swin():
    x, _ = batch()
    assert find_target_layer(small_vit(), x) == LAST_LN1  # feeds the last self-attention
    assert find_target_layer(small_swin(), x) == "permute"  # channels-first view before the global pool


@pytest.mark.parametrize("layer", ["auto", "encoder.layers.encoder_layer_0.ln_1"])
def test_cams_on_vit(layer):
    model = small_vit()
    inputs, targets = batch()
    maps = compute_saliency(model, inputs, targets, [get_method(name, target_layer=layer) for name in CAMS])
    for m in maps:
        check(m, inputs)
    # A random ViT's LayerNorm outputs are zero-mean, so some CAMs are negative (ReLU -> 0) on some images; most
    # are not, which a zero gradient (a wrong layer) or a scrambled reshape would not give.
    assert sum(bool(m.amax() == 1) for m in maps) >= 4


def test_auto_vit_layer_has_patch_gradients_the_block_output_has_none():
    model = small_vit()
    inputs, targets = batch()
    run = Run()
    p = run_gradient_pass(
        model, inputs, targets, [model.get_submodule(LAST_LN1), model.encoder.layers[-1]], run, input_grads=False
    )
    assert p.layer_grads[model.get_submodule(LAST_LN1)][:, 1:].abs().sum() > 0
    assert p.layer_grads[model.encoder.layers[-1]][:, 1:].abs().sum() == 0, "only the class token reaches the head"


def test_vit_gradcam_equals_pytorch_grad_cam_with_its_reshape_transform():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = small_vit()
    inputs, targets = batch()

    def reshape_transform(tensor: Tensor, height: int = 4, width: int = 4) -> Tensor:  # pgc's documented ViT one
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    peer = copy.deepcopy(model)
    layer = peer.get_submodule(LAST_LN1)
    with pgc.GradCAM(model=peer, target_layers=[layer], reshape_transform=reshape_transform) as cam:
        theirs = cam(input_tensor=inputs.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    ours = GradCAM()(model, inputs, targets)
    # The same backward; a 32-channel weighted sum, pgc's float32 numpy min-max (eps 1e-7) and cv2 resize of the 4x4
    # grid, min-max: measured 6.5 ulps of 1. 128.
    assert_close_to_peer(ours, torch.from_numpy(theirs)[:, None], ulps=128, why="ViT Grad-CAM vs pytorch-grad-cam")
    explicit = GradCAM(reshape=reshape_transform)(model, inputs, targets)
    torch.testing.assert_close(explicit, ours, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="4-D feature map"):
        GradCAM(reshape=None)(model, inputs, targets)


@pytest.mark.parametrize("patch_size", [8, 16])
def test_vit_grid_follows_the_patch_size(patch_size):
    # torchvision's ViT takes one fixed image_size (non-square grids are covered on the tokens above and on Swin).
    model = small_vit(patch_size=patch_size)
    inputs, targets = batch()
    raw = GradCAM().compute(model, inputs, targets, Run())
    assert raw.shape == (2, 1, 64 // patch_size, 64 // patch_size)
    check(GradCAM()(model, inputs, targets), inputs)


@pytest.mark.parametrize("layer", ["auto", "features.5", "norm"])
def test_cams_on_swin(layer):
    model = small_swin()
    inputs, targets = batch()
    maps = compute_saliency(model, inputs, targets, [get_method(name, target_layer=layer) for name in CAMS])
    for m in maps:
        check(m, inputs)
    assert sum(bool(m.amax() == 1) for m in maps) >= 4


def test_swin_channels_last_layer_equals_its_permuted_view():
    # `norm` outputs [B, h, w, C]; `permute` is the same tensor channels-first: identical CAMs.
    model = small_swin()
    inputs, targets = batch(48, 80)  # non-square too
    on_norm = GradCAM(target_layer="norm")(model, inputs, targets)
    check(on_norm, inputs)
    torch.testing.assert_close(on_norm, GradCAM(target_layer="permute")(model, inputs, targets), rtol=0, atol=1e-6)


def test_swin_t_and_fusion():
    torch.manual_seed(0)
    model = swin_t(weights=None, num_classes=10).eval()
    inputs, targets = batch()
    fused = FusedCAM("gradcam")
    assert fused.layer_names(model, inputs) == ["features.5", "permute"]
    maps = compute_saliency(model, inputs, targets, [GradCAM(), fused, GradCAM(target_layer="features.3")])
    for m in maps:
        check(m, inputs)


def test_fused_cam_on_vit_needs_named_layers():
    model = small_vit()
    inputs, targets = batch()
    assert FusedCAM().layer_names(model, inputs) == [LAST_LN1], "one token grid: auto falls back to one layer"
    fused = FusedCAM("layercam", layers=["encoder.layers.encoder_layer_0.ln_1", LAST_LN1], fuse="max")
    check(fused(model, inputs, targets), inputs)


def test_reshape_applies_to_a_custom_module_output():
    class Tokens(nn.Module):  # a conv stem that returns channels-last, then a linear head on the mean
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 6, 4, stride=4)
            self.to_last = nn.Identity()
            self.head = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = self.to_last(self.stem(x).permute(0, 2, 3, 1))  # [B,h,w,C]
            return self.head(y.mean((1, 2)))

    torch.manual_seed(0)
    model = Tokens().eval()
    inputs, targets = torch.rand(2, 3, 32, 48), torch.tensor([0, 2])
    via_permute = GradCAM(target_layer="to_last")(model, inputs, targets)
    torch.testing.assert_close(via_permute, GradCAM(target_layer="stem")(model, inputs, targets), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_fn", [small_vit, small_swin], ids=["vit", "swin"])
def test_scorecam_and_cameras_read_token_and_channels_last_layers(model_fn):
    from lightning_saliency import CAMERAS, ScoreCAM

    model = model_fn().eval()
    inputs, targets = batch()
    for method in [ScoreCAM(batch_size=16), ScoreCAM(top_k=4), CAMERAS(scales=(1.0,))]:
        check(method(model, inputs, targets), inputs)
    if model_fn is small_vit:
        with pytest.raises(ValueError, match="CAM methods need a 4-D feature map"):
            ScoreCAM(reshape=None)(model, inputs, targets)  # tokens [B, 1+N, D] left as they are
