"""Round two against pytorch-grad-cam 1.5.7: Ablation-CAM, FullGrad, Eigen-Grad-CAM, Grad-CAM element-wise, KPCA-CAM,
Shapley-CAM, Finer-CAM, and the ``aug_smooth``/``eigen_smooth`` options, on torchvision's ResNet-18.

Same model and batch as ``test_peers.py`` (``resnet18(weights=None)``, seeded, 2x3x64x64). Every peer runs on its own
deep copy of the model (pytorch-grad-cam calls ``.backward()``, ``zero_grad`` and ``eval``). Where pytorch-grad-cam's
result depends on an SVD's or eigensolver's arbitrary sign, ours fixes the sign (the projection correlates with the
channel mean) and the comparison is up to it: the projections are compared after aligning pgc's sign, and each map with
pgc's map of the sign pgc happened to take.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_to_peer
from torch import Tensor, nn

from lightning_saliency.methods import (
    KPCACAM,
    AblationCAM,
    AugSmooth,
    EigenGradCAM,
    EigenSmooth,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    Run,
    ShapleyCAM,
)
from lightning_saliency.methods.base import run_gradient_pass
from lightning_saliency.methods.cams import eigen_projection
from lightning_saliency.methods.eigen import KERNELS, kernel_projection
from lightning_saliency.methods.finer import FinerTarget
from lightning_saliency.methods.fullgrad import bias_layers
from lightning_saliency.methods.smoothing import cam_from_contributions
from lightning_saliency.targets import ClassTarget

pgc = pytest.importorskip("pytorch_grad_cam")
pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
pgc_svd = pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations")

SIZE = 64  # the side of the `batch` fixture (tests/conftest.py)


def run_pgc(cam_class: type, model: nn.Module, inputs: Tensor, targets: Tensor, layers=("layer4",), **call) -> Tensor:
    peer = copy.deepcopy(model)
    with cam_class(model=peer, target_layers=[peer.get_submodule(n) for n in layers]) as cam:
        out = cam(
            input_tensor=inputs.clone(),
            targets=call.pop("peer_targets", None) or [pgc_targets.ClassifierOutputTarget(int(t)) for t in targets],
            **call,
        )
    return torch.from_numpy(out)[:, None]  # [B,1,H,W]


def minmax(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
    return (maps - lo) / (hi - lo)


def assert_nontrivial(maps: Tensor) -> None:
    """Guard: a comparison of all-zero maps would prove nothing."""
    assert (maps.flatten(1).amax(1) > 0).all()


def layer_pass(model: nn.Module, inputs: Tensor, targets: Tensor, layer: str, gradients: bool = True):
    module = model.get_submodule(layer)
    p = run_gradient_pass(model.eval(), inputs, targets, [module], Run(), input_grads=False, gradients=gradients)
    return p.activations[module], p.layer_grads.get(module)


def assert_equal_up_to_sign(ours_raw: Tensor, theirs_raw: Tensor, ours: Tensor, peer: Tensor, *, ulps: float, why: str):
    """Projections ``[B, h, w]`` equal up to a per-image sign; maps ``[B, 1, H, W]`` equal for the sign pgc took.

    Where pgc took the other sign, its map is ``ReLU(-projection)`` normalised at layer resolution, upsampled (cv2
    bilinear with half-pixel centres, as torch's ``align_corners=False``) and normalised again: computed from ours.
    """
    signs = torch.sign((ours_raw * theirs_raw).flatten(1).sum(1))[:, None, None]
    assert (signs != 0).all()
    assert_close_to_peer(ours_raw, signs * theirs_raw, ulps=ulps, why=f"{why}: projections")
    for i in range(ours.shape[0]):
        if signs[i] > 0:
            expected = ours[i]
        else:
            neg = torch.relu(-ours_raw[i])
            neg = (neg - neg.min()) / (neg.max() - neg.min())
            expected = minmax(F.interpolate(neg[None, None], ours.shape[-2:], mode="bilinear", align_corners=False))[0]
        assert_close_to_peer(expected, peer[i], ulps=ulps, why=f"{why}: map {i} (pgc's sign {int(signs[i])})")


# ------------------------------------------------------------------------------------------------------ Ablation-CAM


def test_ablationcam_equals_pytorch_grad_cam(resnet, batch):
    # layer3 (256 channels; 512 whole forwards for pgc, 1024 on layer4, where it agrees as well: 6 ulps of 1), for
    # classes whose map is not all zero on either image (class 7's weights sum to negative evidence there).
    inputs, targets = batch[0], torch.tensor([2, 5])
    ours = AblationCAM(target_layer="layer3")(resnet, inputs, targets)
    peer = run_pgc(pgc.AblationCAM, resnet, inputs, targets, ("layer3",))
    assert_nontrivial(ours)
    # w_k = (S - S_k) / S from logits of other batches than pgc's (ours: the ablated layer3 outputs behind one copy of
    # the image's front; pgc: 32 whole copies): a few ulps of |S| each, so w_k is off by ~eps |S| / |S - S_k|; then
    # the 256-channel sum, pgc's min-max (eps 1e-7), cv2 resize and min-max. Measured 12.5 ulps of 1. 256.
    assert_close_to_peer(ours, peer, ulps=256, why="Ablation-CAM (layer3) vs pytorch-grad-cam")
    gradcam = GradCAM(target_layer="layer3")(resnet, inputs, targets)
    assert not torch.allclose(ours, gradcam, atol=1e-2), "Ablation-CAM is not Grad-CAM"


class Residual(nn.Module):
    """A residual block whose shortcut skips over ``body.1`` (the tested target layer); how its forward reads the batch.

    ``"fixed_batch"`` reshapes with the input's batch size, read at the start (as EfficientNet's ``x.view(bs, -1)``);
    ``"input_concat"`` concatenates the raw input with the stem's output (the shared front then fails: whole forwards).
    """

    def __init__(self, kind: str = "plain") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 5)
        self.kind, self.stem_rows = kind, []

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        stem = self.stem(x)
        self.stem_rows.append(stem.shape[0])
        h = torch.cat([stem, x], 1) if self.kind == "input_concat" else torch.cat([stem, stem[:, :3]], 1)
        h = torch.relu(self.body(h) + h)  # the shortcut from before the target layer
        pooled = h.mean((2, 3))
        return self.head(pooled.reshape(b, -1) if self.kind == "fixed_batch" else pooled)


def naive_ablation_weights(model: nn.Module, inputs: Tensor, targets: Tensor, layer: nn.Module) -> Tensor:
    """The paper's weights with plain loops: one whole forward per (image, channel), the channel zeroed."""
    weights = []
    with torch.no_grad():
        for i in range(inputs.shape[0]):
            x, t = inputs[i : i + 1], int(targets[i])
            score = float(model(x)[0, t])
            row = []
            for k in range(8):

                def zero(_module, _args, out, k=k):
                    out = out.clone()
                    out[:, k] = 0
                    return out

                handle = layer.register_forward_hook(zero)
                try:
                    row.append((score - float(model(x)[0, t])) / score)
                finally:
                    handle.remove()
            weights.append(row)
    return torch.tensor(weights)


@pytest.mark.parametrize("kind", ["plain", "fixed_batch", "input_concat"])
def test_ablationcam_equals_a_naive_loop_through_a_shortcut(batch, kind):
    inputs, targets = batch[0][:, :, :16, :16], torch.tensor([1, 4])
    model = Residual(kind).eval()
    _, weights = AblationCAM(target_layer="body.1", batch_size=3).channel_weights(
        model, inputs, ClassTarget(targets), Run()
    )
    ablations = model.stem_rows[1:]  # after the first forward of the batch
    # 8 channels per image in chunks of 3, 3, 2: the stem runs on one copy; with the input concatenated, one failed
    # try, then whole forwards.
    assert ablations == ([1, 3, 3, 2, 3, 3, 2] if kind == "input_concat" else [1] * 6)
    expected = naive_ablation_weights(model, inputs, targets, model.body[1])
    assert weights.abs().amax() > 1e-3
    # Logits of other batch sizes (chunks of 3 behind one copy of the front, or whole copies; the loop: one image):
    # a few ulps of |S| in S - S_k, over |S| (|S - S_k| ~ 0.1 |S|). Measured 15 ulps of max|w|. 256.
    assert_close_to_peer(weights, expected, ulps=256, why=f"Ablation-CAM weights vs a naive loop ({kind})")


# ---------------------------------------------------------------------------------------------------------- FullGrad


def test_fullgrad_equals_pytorch_grad_cam(resnet, batch):
    inputs, targets = batch
    assert len(FullGrad().layers(resnet, inputs, Run())) == 20, "ResNet-18's 20 BatchNorms (its convs have no bias)"
    ours = FullGrad()(resnet, inputs, targets)
    peer = run_pgc(pgc.FullGrad, resnet, inputs, targets, layers=())
    assert_nontrivial(ours)
    # 21 maps (|x g| over 3 channels, |b G| over up to 512 channels per BatchNorm), each a sum of per-channel min-max
    # (pgc's eps 1e-7) normalised maps, upsampled (pgc: per channel, cv2; ours: once per layer after the channel sum,
    # the same by linearity) and summed (up to ~2000 terms of magnitude <= 1, total ~300), then min-max: rounding of
    # ~sqrt(2000) eps of the total. Measured 22 ulps of 1. 512.
    assert_close_to_peer(ours, peer, ulps=512, why="FullGrad vs pytorch-grad-cam")


def test_fullgrad_layers_skip_unused_and_reject_repeated_bias_layers():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.unused = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.conv(torch.relu(self.conv(x))))

    x, t = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    model = Twice()
    assert len(bias_layers(model)) == 2
    with pytest.raises(ValueError, match=r"'conv' \(2 times\) ran more than once per forward"):
        FullGrad()(model, x, t)
    model.forward = lambda x: model.head(model.conv(x))  # type: ignore[method-assign]
    assert FullGrad().layers(model, x, Run()) == [model.conv], "the unused conv is left out"


# ----------------------------------------------------------------------------------- element-wise and eigen CAMs


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_gradcam_elementwise_equals_pytorch_grad_cam(resnet, batch, layer):
    inputs, targets = batch
    ours = GradCAMElementWise(target_layer=layer)(resnet, inputs, targets)
    peer = run_pgc(pgc.GradCAMElementWise, resnet, inputs, targets, (layer,))
    assert_nontrivial(ours)
    # A sum of 512 (layer4) or 256 (layer3) non-negative terms, pgc's float32 numpy products, min-max (eps 1e-7), cv2
    # resize, min-max: measured 8 ulps of 1 (layer4), 4.5 (layer3). 128.
    assert_close_to_peer(ours, peer, ulps=128, why=f"Grad-CAM element-wise ({layer}) vs pytorch-grad-cam")
    if layer == "layer3":  # guard: on layer3 the clipping at zero matters
        hires = run_pgc(pgc.HiResCAM, resnet, inputs, targets, (layer,))
        assert not torch.allclose(ours, hires, atol=1e-2)


def test_eigengradcam_equals_pytorch_grad_cam_up_to_the_sign(resnet, batch):
    inputs, targets = batch
    acts, grads = layer_pass(resnet, inputs, targets, "layer3")
    ours_raw = eigen_projection(grads * acts)[:, 0]
    theirs_raw = torch.from_numpy(pgc_svd.get_2d_projection((grads * acts).numpy()))
    ours = EigenGradCAM(target_layer="layer3")(resnet, inputs, targets)
    peer = run_pgc(pgc.EigenGradCAM, resnet, inputs, targets, ("layer3",))
    assert_nontrivial(ours)
    # The first singular vector of a float32 [16, 256] matrix (torch's and numpy's LAPACK) and the 256-term projection,
    # then min-max and cv2 resize: measured 5.3 ulps (projections), 6 ulps of 1 (maps). 512.
    assert_equal_up_to_sign(ours_raw, theirs_raw, ours, peer, ulps=512, why="Eigen-Grad-CAM (layer3)")
    mean = (grads * acts).mean(1) - (grads * acts).mean((1, 2, 3))[:, None, None]
    assert ((ours_raw * mean).flatten(1).sum(1) > 0).all(), "sign rule: correlates with the channel mean"


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_projection_equals_pytorch_grad_cam_up_to_the_sign(resnet, batch, kernel):
    inputs, targets = batch
    acts, _ = layer_pass(resnet, inputs, targets, "layer3", gradients=False)  # [2,256,4,4]
    ours = kernel_projection(acts, kernel)[:, 0]
    theirs = torch.from_numpy(pgc_svd.get_2d_projection_kernel(acts.numpy(), kernel, None))
    signs = torch.sign((ours * theirs).flatten(1).sum(1))[:, None, None]
    # scikit-learn's float32 kernel matrix (256-term dot products, centring) and LAPACK eigh of a 16x16 matrix vs
    # torch's: measured 14 ulps (sigmoid), 5.5-9.5 (others) of max|projection|. 512.
    assert_close_to_peer(ours, signs * theirs, ulps=512, why=f"kernel PCA ({kernel}) vs pytorch-grad-cam")


def test_kpcacam_equals_pytorch_grad_cam_up_to_the_sign(resnet, batch):
    inputs, targets = batch
    acts, _ = layer_pass(resnet, inputs, targets, "layer4", gradients=False)
    ours_raw = kernel_projection(acts)[:, 0]
    theirs_raw = torch.from_numpy(pgc_svd.get_2d_projection_kernel(acts.numpy(), "sigmoid", None))
    ours = KPCACAM()(resnet, inputs, targets)
    peer = run_pgc(pgc.KPCA_CAM, resnet, inputs, targets)
    assert_nontrivial(ours)
    # As above on layer4 ([4, 512]): measured 17 ulps (projections), 19 ulps of 1 (maps). 512.
    assert_equal_up_to_sign(ours_raw, theirs_raw, ours, peer, ulps=512, why="KPCA-CAM (layer4)")
    torch.testing.assert_close(ours, KPCACAM()(resnet, inputs, (targets + 1) % 10), rtol=0, atol=0)  # class-agnostic


# ------------------------------------------------------------------------------------------------------- Shapley-CAM


@pytest.mark.parametrize("objective", ["score", "rest"])
def test_shapleycam_equals_pytorch_grad_cam(resnet, batch, objective):
    inputs, targets = batch
    ours = ShapleyCAM(target_layer="layer3", objective=objective)(resnet, inputs, targets)
    peer_targets = [
        (pgc_targets.ClassifierOutputTarget if objective == "score" else pgc_targets.ClassifierOutputReST)(int(t))
        for t in targets
    ]
    peer = run_pgc(pgc.ShapleyCAM, resnet, inputs, targets, ("layer3",), peer_targets=peer_targets)
    assert_nontrivial(ours)
    # Gradient and Hessian-vector product through layer4 (the same torch ops, another graph: pgc differentiates from
    # the input), weights = spatial means over 16 locations, the 256-channel sum, pgc's min-max, cv2 resize: measured
    # 11.5 ulps of 1 (score), 5 (rest). 256.
    assert_close_to_peer(ours, peer, ulps=256, why=f"Shapley-CAM ({objective}, layer3) vs pytorch-grad-cam")


def test_shapleycam_is_gradcam_without_curvature_and_differs_with_rest(resnet, batch):
    # Guards of the test above: a ReLU network's logit has no curvature, so Shapley-CAM of the score is Grad-CAM; the
    # ReST objective's softmax has some, so the Hessian term changes the map.
    inputs, targets = batch
    gradcam = GradCAM(target_layer="layer3")(resnet, inputs, targets)
    torch.testing.assert_close(ShapleyCAM(target_layer="layer3")(resnet, inputs, targets), gradcam, rtol=0, atol=1e-5)
    rest = ShapleyCAM(target_layer="layer3", objective="rest")(resnet, inputs, targets)
    assert (rest - gradcam).abs().amax() > 1e-2


# --------------------------------------------------------------------------------------------------------- Finer-CAM


def test_finercam_equals_pytorch_grad_cam(resnet, batch):
    inputs, targets = batch
    peer = []
    for i in range(inputs.shape[0]):  # pgc's target_idx is one class for the whole batch
        model = copy.deepcopy(resnet)
        with pgc.FinerCAM(model, [model.layer4]) as cam:
            peer.append(torch.from_numpy(cam(inputs[i : i + 1].clone(), target_idx=int(targets[i]))))
    peer_maps = torch.cat(peer)[:, None]
    ours = torch.cat([FinerCAM()(resnet, inputs[i : i + 1], targets[i : i + 1]) for i in range(2)])  # same batches
    assert_nontrivial(ours)
    # The softmax-weighted difference of 4 logits, its gradient at layer4, 4-location means and the 512-channel sum,
    # pgc's min-max, cv2 resize: measured 11.5 ulps of 1. 256.
    assert_close_to_peer(ours, peer_maps, ulps=256, why="Finer-CAM (layer4) vs pytorch-grad-cam")
    assert not torch.allclose(ours, GradCAM()(resnet, inputs, targets), atol=1e-2), "Finer-CAM is not Grad-CAM"
    batched = FinerCAM()(resnet, inputs, targets)
    # Another batch composition of the forward (2 images instead of 1): measured 10.5 ulps of 1. 256.
    assert_close_to_peer(batched, peer_maps, ulps=256, why="Finer-CAM on the whole batch")


def test_finer_target_equals_pytorch_grad_cam_weighted_target():
    logits = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    classes = torch.tensor([0, 4, 6])
    target = FinerTarget(ClassTarget(classes), comparisons=3, alpha=0.7)
    similar = target.similar(logits)
    distance = (logits - logits.gather(1, classes[:, None])).abs().detach()
    expected = distance.argsort(1)[:, 1:4]  # pgc's rule: the class itself is at distance 0, first
    assert torch.equal(similar, expected)
    peer = torch.stack(
        [
            pgc_targets.FinerWeightedTarget(int(c), similar[i].tolist(), 0.7)(logits[i])
            for i, c in enumerate(classes.tolist())
        ]
    )
    ours = target.score(logits)
    torch.testing.assert_close(ours, peer, rtol=1e-6, atol=1e-7)
    assert torch.equal(target[torch.tensor([2])].similar(logits[2:]), similar[2:])
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_peer,) = torch.autograd.grad(peer.sum(), logits)
    torch.testing.assert_close(g_ours, g_peer, rtol=1e-5, atol=1e-7)  # gradients flow through the softmax weights
    with pytest.raises(TypeError, match="needs class targets"):
        FinerTarget(object())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ aug_smooth and eigen_smooth


def test_aug_smooth_equals_pytorch_grad_cam(resnet, batch):
    inputs, targets = batch
    method = AugSmooth("gradcam")
    assert method.augmentations == [(False, 0.9), (False, 1.0), (False, 1.1), (True, 0.9), (True, 1.0), (True, 1.1)]
    ours = method(resnet, inputs, targets)
    peer = run_pgc(pgc.GradCAM, resnet, inputs, targets, aug_smooth=True)
    assert_nontrivial(ours)
    assert peer.amax() < 1, "pgc averages normalised maps without normalising the mean: compare after min-max"
    # Six Grad-CAMs (each as in test_peers.py: 2 ulps of 1), averaged, min-max: measured 3 ulps of 1. 64.
    assert_close_to_peer(ours, minmax(peer), ulps=64, why="aug_smooth Grad-CAM vs pytorch-grad-cam")
    assert not torch.allclose(ours, GradCAM()(resnet, inputs, targets), atol=1e-2)


@pytest.mark.parametrize("cam", ["gradcam", "gradcam_elementwise"])
def test_eigen_smooth_equals_pytorch_grad_cam_up_to_the_sign(resnet, batch, cam):
    inputs, targets = batch
    acts, grads = layer_pass(resnet, inputs, targets, "layer4")
    contributions = F.relu(grads * acts) if cam == "gradcam_elementwise" else grads.mean((2, 3))[..., None, None] * acts
    ours_raw = eigen_projection(contributions)[:, 0]
    theirs_raw = torch.from_numpy(pgc_svd.get_2d_projection(contributions.numpy()))
    if cam == "gradcam":
        ours = EigenSmooth("gradcam")(resnet, inputs, targets)
        assert EigenSmooth("gradcam").label == "gradcam_eigen_smooth"
    else:
        ours = GradCAMElementWise(eigen_smooth=True)(resnet, inputs, targets)
        torch.testing.assert_close(EigenSmooth(cam)(resnet, inputs, targets), ours, rtol=0, atol=0)
    peer_class = pgc.GradCAM if cam == "gradcam" else pgc.GradCAMElementWise
    peer = run_pgc(peer_class, resnet, inputs, targets, eigen_smooth=True)
    assert_nontrivial(ours)
    # The first singular vector of a float32 [4, 512] matrix (torch's and numpy's LAPACK), the projection, min-max and
    # cv2 resize: measured 17 and 12 ulps (projections), 19 and 15 ulps of 1 (maps). 512.
    assert_equal_up_to_sign(ours_raw, theirs_raw, ours, peer, ulps=512, why=f"eigen_smooth {cam}")


def test_own_pass_cams_take_eigen_smooth_and_wrappers_check_what_they_wrap(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    model = tiny_cnn.eval()
    method = AblationCAM(eigen_smooth=True, batch_size=64)
    acts, weights = method.channel_weights(model, inputs, ClassTarget(targets), Run())
    expected = cam_from_contributions(weights[:, :, None, None] * acts, eigen_smooth=True)
    torch.testing.assert_close(method.compute(model, inputs, ClassTarget(targets), Run()), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="create it with eigen_smooth=True"):
        EigenSmooth(method)
    with pytest.raises(TypeError, match="EigenSmooth needs a CAM of the shared gradient pass"):
        EigenSmooth("gradient")
    with pytest.raises(TypeError, match="eigen_smooth must be True or False"):
        ShapleyCAM(eigen_smooth=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factors must be"):
        AugSmooth("gradcam", factors=())


# ------------------------------------------------------------------------------ the wrappers and transformer layers

WRAPPERS = {
    "aug_gradcam": lambda: AugSmooth("gradcam"),
    "aug_ablationcam": lambda: AugSmooth("ablationcam", batch_size=4),  # an own-pass method, 2 chunks of copies
    "eigen_gradcam++": lambda: EigenSmooth("gradcam++"),
    "eigen_layercam": lambda: EigenSmooth("layercam"),
}


@pytest.mark.parametrize("make", WRAPPERS.values(), ids=WRAPPERS)
def test_smoothing_wrappers_keep_the_method_contract(make, make_cnn, probe_batch):
    inputs, targets = probe_batch
    model = make_cnn()  # train mode, BatchNorm and Dropout: the engine's eval mode must be restored
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    maps = make()(model, inputs, targets)
    assert maps.shape == (4, 1, 32, 32)
    assert (maps.flatten(1).amax(1) == 1).all()
    assert maps.min() >= 0
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(maps, make()(model, inputs, targets)), "deterministic"
    with torch.inference_mode():
        torch.testing.assert_close(make()(model, inputs.clone(), targets.clone()), maps, rtol=0, atol=1e-6)
    alone = torch.cat([make()(model, inputs[i : i + 1], targets[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(alone, maps, rtol=0, atol=1e-4)  # a map does not depend on the batch


def test_round_two_cams_run_on_a_vision_transformer():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.3)  # a random ViT with non-zero CAMs
    inputs, targets = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([2, 4])
    methods = [AblationCAM(), ShapleyCAM(objective="rest"), FinerCAM(), EigenGradCAM(), GradCAMElementWise(), KPCACAM()]
    for method in methods:  # tokens [B, 1 + 16, 16] of the last block's ln_1 ("auto") as a 4x4 feature map
        assert method.layer_name(vit.eval(), inputs) == "encoder.layers.encoder_layer_1.ln_1"
        maps = method(vit, inputs, targets)
        assert maps.shape == (2, 1, 32, 32)
        assert (maps.flatten(1).amax(1) == 1).all(), method.label


ROUND_TWO = {
    "ablationcam": {},
    "fullgrad": {},
    "eigengradcam": {},
    "gradcam_elementwise": {},
    "kpcacam": {},
    "shapleycam": {"objective": "rest"},
    "finercam": {"base": "layercam"},
    "occlusion": {"window": 4, "stride": 4},
    "gradient_shap": {"num_samples": 3},
    "deeplift": {},
    "smoothgrad_sq": {"num_samples": 3},
    "vargrad": {"num_samples": 3},
    "rise": {"num_masks": 8},
}


@pytest.mark.parametrize("name", ROUND_TWO)
def test_round_two_methods_take_volumes(name):
    from lightning_saliency.methods import get_method

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(4, 6, 3, padding=1),
        nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()  # fmt: skip
    inputs, targets = torch.rand(2, 1, 8, 12, 12, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])
    maps = get_method(name, **ROUND_TWO[name])(model, inputs, targets)
    assert maps.shape == (2, 1, 8, 12, 12)
    assert (maps.flatten(1).amax(1) == 1).all()
    alone = get_method(name, **ROUND_TWO[name])(model, inputs[1:], targets[1:])
    torch.testing.assert_close(alone, maps[1:], rtol=0, atol=1e-4)
