"""HiResCAM, XGrad-CAM, LayerCAM, EigenCAM, multi-layer fusion and Integrated Gradients equal the peers' on ResNet-18.

Same model and batch as ``test_peers.py`` (torchvision ``resnet18(weights=None)``, seeded, 2x3x64x64). Every peer
runs on its own deep copy of the model.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _tolerance import assert_close_to_peer
from torch import Tensor, nn

from lightning_saliency.methods import (
    EigenCAM,
    FusedCAM,
    GradCAM,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    Run,
    XGradCAM,
    compute_saliency,
)
from lightning_saliency.methods.base import run_gradient_pass
from lightning_saliency.methods.cams import eigen_projection
from lightning_saliency.methods.integrated_gradients import ig_baseline, path_rule

captum_attr = pytest.importorskip("captum.attr")
pgc = pytest.importorskip("pytorch_grad_cam")
pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
pgc_svd = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")
torchcam_methods = pytest.importorskip("torchcam.methods")

SIZE = 64  # the side of the `batch` fixture (tests/conftest.py)


def run_pgc(cam_class: type, model: nn.Module, inputs: Tensor, targets: Tensor, layers: tuple[str, ...] = ("layer4",)):
    peer = copy.deepcopy(model)
    with cam_class(model=peer, target_layers=[peer.get_submodule(n) for n in layers]) as cam:
        out = cam(input_tensor=inputs.clone(), targets=[pgc_targets.ClassifierOutputTarget(int(t)) for t in targets])
    return torch.from_numpy(out)[:, None]  # [B,1,H,W]


def assert_nontrivial(maps: Tensor) -> None:
    assert (maps.flatten(1).amax(1) > 0).all()


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
@pytest.mark.parametrize(("ours", "theirs"), [(HiResCAM, "HiResCAM"), (XGradCAM, "XGradCAM"), (LayerCAM, "LayerCAM")])
def test_cams_equal_pytorch_grad_cam(resnet, batch, ours, theirs, layer):
    inputs, targets = batch
    peer = run_pgc(getattr(pgc, theirs), resnet, inputs, targets, (layer,))
    # pgc: min-max, cv2 bilinear resize (half-pixel centres as align_corners=False), min-max again. Min-max is
    # affine and the resize linear, so that equals ours (resize, then min-max) on any layer.
    mine = ours(target_layer=layer)(resnet, inputs, targets)
    assert_nontrivial(mine)
    # Channel sums of 512 (layer4) or 256 (layer3) terms, pgc's float32 numpy weights, min-max (eps 1e-7), cv2
    # resize, min-max: measured 2 ulps of 1 (HiResCAM), 2.5 (XGrad-CAM), 8 (LayerCAM). 128.
    assert_close_to_peer(mine, peer, ulps=128, why=f"{theirs} on {layer} vs pytorch-grad-cam")


def test_cams_differ_from_gradcam(resnet, batch):
    # Guard for the test above. On layer4 (global average pooling + linear head) the gradient is spatially
    # uniform, so HiResCAM equals Grad-CAM there (and XGrad-CAM nearly); on layer3 all three differ.
    inputs, targets = batch
    assert torch.allclose(HiResCAM()(resnet, inputs, targets), GradCAM()(resnet, inputs, targets), atol=1e-5)
    grad = GradCAM(target_layer="layer3")(resnet, inputs, targets)
    for method in (HiResCAM, XGradCAM, LayerCAM):
        assert not torch.allclose(method(target_layer="layer3")(resnet, inputs, targets), grad, atol=1e-2), method


def test_layercam_equals_torchcam_on_a_shallow_layer(resnet, batch):
    inputs, targets = batch
    peer = copy.deepcopy(resnet)
    with torchcam_methods.LayerCAM(peer, target_layer="layer3", input_shape=(3, SIZE, SIZE)) as cam:
        scores = peer(inputs.clone())
        (theirs,) = cam(class_idx=targets.tolist(), scores=scores, normalized=False)
    ours = LayerCAM(target_layer="layer3").compute(resnet, inputs, targets, Run()).detach()
    # A 256-channel sum of positive terms (sum = its magnitude): reordered, ~sqrt(256) = 16 ulps of max|cam|.
    # Measured 0 (the same torch ops). 64.
    assert_close_to_peer(ours, theirs.detach()[:, None], ulps=64, why="layer3 LayerCAM vs torchcam")


def test_eigencam_equals_pytorch_grad_cam_up_to_the_sign(resnet, batch):
    inputs, targets = batch
    p = run_gradient_pass(resnet.eval(), inputs, targets, [resnet.layer4], Run(), input_grads=False, gradients=False)
    assert not p.layer_grads, "EigenCAM alone takes no gradient"
    acts = p.activations[resnet.layer4]  # [2,512,2,2]
    ours_raw = eigen_projection(acts)[:, 0]
    theirs_raw = torch.from_numpy(pgc_svd.get_2d_projection(acts.numpy()))
    signs = torch.sign((ours_raw * theirs_raw).flatten(1).sum(1))[:, None, None]
    # The first singular vector of a float32 [4, 512] matrix (torch's and numpy's LAPACK) and its projection (a
    # 512-term sum): measured 22 ulps of max|projection|. 512.
    assert_close_to_peer(ours_raw, signs * theirs_raw, ulps=512, why="EigenCAM projection vs pgc get_2d_projection")
    # Sign rule: the projection correlates positively with the channel mean of the activations.
    mean_act = acts.mean(1) - acts.mean((1, 2, 3))[:, None, None]
    assert ((ours_raw * mean_act).flatten(1).sum(1) > 0).all()
    # Full maps: pgc applies ReLU to its (arbitrary-sign) projection; ours is ReLU of the sign-fixed one.
    ours = EigenCAM()(resnet, inputs, targets)
    peer = run_pgc(pgc.EigenCAM, resnet, inputs, targets)
    for i in range(2):
        if signs[i] > 0:
            expected = ours[i]
        else:  # pgc took the other sign: its map is ReLU(-projection), normalised then resized
            neg = torch.relu(-ours_raw[i])
            neg = (neg - neg.min()) / (neg.max() - neg.min())
            expected = torch.nn.functional.interpolate(neg[None, None], (SIZE, SIZE), mode="bilinear")[0]
        # The projection above (22 ulps of its magnitude), min-max, cv2 resize: measured 22 ulps of 1. 512.
        assert_close_to_peer(expected, peer[i], ulps=512, why=f"EigenCAM map {i} vs pytorch-grad-cam")


def test_eigencam_is_class_agnostic_and_sign_stable_under_negation(resnet, batch):
    inputs, targets = batch
    maps = EigenCAM()(resnet, inputs, targets)
    torch.testing.assert_close(maps, EigenCAM()(resnet, inputs, (targets + 1) % 10), rtol=0, atol=0)
    acts = torch.rand(2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    acts[:, :, 0, 0] += 3.0
    proj = eigen_projection(acts)
    assert (proj[:, 0, 0, 0] > 0).all(), "the strongly firing location is positive"
    # A permutation of channels changes nothing (the SVD's sign would be free to flip; ours is pinned).
    torch.testing.assert_close(eigen_projection(acts[:, torch.randperm(8)]), proj, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_fused_cam_mean_equals_pytorch_grad_cam_multi_layer(resnet, batch, method):
    inputs, targets = batch
    fused = FusedCAM(method, layers=["layer3", "layer4"], fuse="mean")
    assert fused.layer_names(resnet, inputs) == ["layer3", "layer4"]
    ours = fused(resnet, inputs, targets)
    peer = run_pgc(
        {"gradcam": pgc.GradCAM, "layercam": pgc.LayerCAM}[method], resnet, inputs, targets, ("layer3", "layer4")
    )
    assert_nontrivial(ours)
    # pgc: per layer ReLU, min-max at layer resolution (eps 1e-7), cv2 bilinear resize, mean, min-max; same order.
    # Besides the channel sums, pgc's eps 1e-7 in the layer-resolution min-max is 1e-7 / range ~ 15 ulps on layer3's
    # maps (magnitude ~0.06): measured 27 ulps of 1 (gradcam), 6.5 (layercam). 512.
    assert_close_to_peer(ours, peer, ulps=512, why=f"mean-fused {method} vs pytorch-grad-cam multi-layer")


def test_fused_cam_defaults_share_one_pass_and_max_differs(resnet, batch, monkeypatch):
    inputs, targets = batch
    fused = FusedCAM()
    assert fused.layer_names(resnet, inputs) == ["layer3", "layer4"], "auto fuses the last two stages"
    calls = []
    import lightning_saliency.methods.base as base

    real = base.run_gradient_pass
    monkeypatch.setattr(base, "run_gradient_pass", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    maxed = FusedCAM(fuse="max")
    together = compute_saliency(resnet, inputs, targets, [fused, maxed, GradCAM()])
    assert calls == [2], "one pass for both layers of both fused CAMs and Grad-CAM"
    assert not torch.allclose(together[0], together[1], atol=1e-3)
    torch.testing.assert_close(together[2], GradCAM()(resnet, inputs, targets), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="fuse must be one of"):
        FusedCAM(fuse="median")
    with pytest.raises(ValueError, match="method must name a CAM method"):
        FusedCAM("gradient")


@pytest.mark.parametrize(
    ("rule", "baseline"), [("gausslegendre", "zero"), ("riemann_trapezoid", "blur"), ("riemann_left", 0.3)]
)
def test_integrated_gradients_equals_captum(resnet, batch, rule, baseline):
    inputs, targets = batch
    steps = 8
    # Same batch composition as captum's (all B * steps path points in one forward): CPU conv kernels round the last
    # bits differently for another batch size, and ResNet-18's max-pool argmax and ReLU kinks turn a last-bit
    # change into an O(1) change of the input gradient at isolated pixels (chunks of 5: up to 6e-4 of max|attr|,
    # chunks of 1: 0.4%). Chunking is checked on a smooth model below.
    ig = IntegratedGradients(steps=steps, baseline=baseline, rule=rule, internal_batch_size=inputs.shape[0] * steps)
    ours = ig.attributions(resnet, inputs, targets)
    peer = captum_attr.IntegratedGradients(copy.deepcopy(resnet))
    baselines = ig_baseline(inputs, baseline)
    theirs = peer.attribute(inputs.clone(), baselines=baselines, target=targets, n_steps=steps, method=rule)
    assert ours.abs().amax() > 0
    # Same convs on the same batch as captum (bit-identical gradients); left: the quadrature's weighted sum of 8
    # terms (sum_i |w_i g_i| = max|attr| here, no cancellation) in another order, times (x - x'): <= 9 ulps of
    # max|attr|. Measured 0. 32.
    assert_close_to_peer(ours, theirs.detach().float(), ulps=32, why=f"IG ({rule}, {baseline}) vs captum")
    maps = ig(resnet, inputs, targets)
    expected = ours.sum(1, keepdim=True).abs()
    lo, hi = expected.amin((1, 2, 3), keepdim=True), expected.amax((1, 2, 3), keepdim=True)
    torch.testing.assert_close(maps, (expected - lo) / (hi - lo), rtol=0, atol=1e-5)


def smooth_cnn() -> nn.Module:
    """A small conv net without max-pool or ReLU (tanh, softplus, average pooling): its gradient is smooth."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.Softplus(),
        nn.AvgPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


@pytest.mark.parametrize("internal_batch_size", [5, 1])  # 5: chunks straddle images; 1: one path point per forward
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_chunks_equal_one_batch_on_a_smooth_model(batch, rule, internal_batch_size):
    inputs, targets = batch
    model, steps = smooth_cnn(), 8
    whole = IntegratedGradients(steps=steps, baseline="blur", rule=rule, internal_batch_size=inputs.shape[0] * steps)
    chunked = IntegratedGradients(steps=steps, baseline="blur", rule=rule, internal_batch_size=internal_batch_size)
    expected = whole.attributions(model, inputs, targets)
    ours = chunked.attributions(model, inputs, targets)
    assert expected.abs().amax() > 0
    # Other batch sizes round the convs' last bits differently (a few ulps per layer, smoothly propagated: no max-pool
    # or ReLU to amplify them), and index_add_ sums the 8 weighted terms per chunk: measured 0.5 ulps of max|attr|
    # (chunks of 5), 2.5 (chunks of 1). 32.
    assert_close_to_peer(ours, expected, ulps=32, why=f"IG in chunks of {internal_batch_size} vs one batch")


def test_integrated_gradients_completeness_and_rules():
    # On a linear model IG is exact for any rule: attributions sum to S(x) - S(x').
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, t = torch.rand(2, 3, 2, 2), torch.tensor([0, 2])
    attr = IntegratedGradients(steps=3, baseline=0.5).attributions(net, x, t)
    with torch.no_grad():
        gap = net(x).gather(1, t[:, None])[:, 0] - net(torch.full_like(x, 0.5)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(attr.flatten(1).sum(1), gap, rtol=1e-5, atol=1e-6)
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_right"):
        alphas, weights = path_rule(rule, 5)
        # captum's trapezoid keeps 1/n steps on n points with halved ends: the weights sum to (n - 1) / n.
        assert abs(float(weights.sum()) - (0.8 if rule == "riemann_trapezoid" else 1)) < 1e-12
        assert alphas.min() >= 0
        assert alphas.max() <= 1
    captum_approx = pytest.importorskip("captum.attr._utils.approximation_methods")
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"):
        sizes, alphas = captum_approx.approximation_parameters(rule)
        ours_a, ours_w = path_rule(rule, 7)
        np.testing.assert_allclose(ours_a.numpy(), alphas(7), atol=1e-7)
        np.testing.assert_allclose(ours_w.numpy(), sizes(7), atol=1e-12)
    with pytest.raises(ValueError, match="rule must be one of"):
        IntegratedGradients(rule="simpson")
    with pytest.raises(ValueError, match="baseline must be"):
        IntegratedGradients(baseline="mean")
    with pytest.raises(ValueError, match="steps must be"):
        IntegratedGradients(steps=0)


def test_auto_fusion_layers_pick_stage_outputs_not_padding_or_block_internals():
    from torchvision.models import efficientnet_b0, mobilenet_v3_small

    from lightning_saliency.methods.fusion import auto_fusion_layers

    x = torch.zeros(1, 3, 64, 64)
    assert auto_fusion_layers(mobilenet_v3_small(), x) == ["features.8", "features"]  # not features.9.block.0
    assert auto_fusion_layers(efficientnet_b0(), x) == ["features.5", "features"]

    class Padded(nn.Module):  # EfficientNet-Lite style: explicit padding in front of a strided conv
        def __init__(self) -> None:
            super().__init__()
            self.stage1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
            self.pad = nn.ZeroPad2d(1)
            self.down = nn.Conv2d(4, 8, 3, stride=2)
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.down(self.pad(self.stage1(t)))).flatten(1))

    assert auto_fusion_layers(Padded(), torch.zeros(1, 3, 16, 16)) == ["stage1", "down"]
