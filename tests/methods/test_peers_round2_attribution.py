"""Round two against captum 0.9 (Occlusion, GradientShap, DeepLift, NoiseTunnel's SmoothGrad-squared and VarGrad) and
against a plain-loop reference of RISE (Petsiuk et al. 2018), on torchvision's ResNet-18.

Same model and batch as ``test_peers.py`` (``resnet18(weights=None)``, seeded, 2x3x64x64); every peer runs on its own
deep copy of the model. Random draws are made the same on both sides: captum draws from the global RNGs, so the test
seeds them, replays captum's draws in captum's order and hands them to our attribution functions.
"""

from __future__ import annotations

import copy
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_to_peer
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from lightning_saliency import SaliencyWarning
from lightning_saliency._baselines import perturbation_baseline
from lightning_saliency._runtime import eval_mode, gradients_enabled
from lightning_saliency.methods import (
    RISE,
    DeepLift,
    Gradient,
    GradientShap,
    Occlusion,
    Run,
    SmoothGrad,
    SmoothGradSquared,
    VarGrad,
)
from lightning_saliency.methods.attribution import gradient_shap_attributions
from lightning_saliency.methods.noise_tunnel import gradient_moments, smoothgrad_noise
from lightning_saliency.methods.perturbation import rise_draws, rise_masks, upsampling_matrix
from lightning_saliency.targets import ClassTarget

captum_attr = pytest.importorskip("captum.attr")
skimage_transform = pytest.importorskip("skimage.transform")

SIZE = 64  # the side of the `batch` fixture (tests/conftest.py)


def minmax(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
    return (maps - lo) / (hi - lo)


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*hooks", category=UserWarning)  # DeepLift's notice
        warnings.filterwarnings("ignore", message=".*required_grads.*", category=UserWarning)
        yield


# --------------------------------------------------------------------------------------------------------- Occlusion


@pytest.mark.parametrize(
    ("window", "stride", "baseline", "read"),
    [(20, 12, 0.3, "score"), (16, 16, "blur", "confidence")],  # 5 x 5 windows, the last cut off; 4 x 4
)
def test_occlusion_equals_captum(resnet, batch, window, stride, baseline, read):
    inputs, targets = batch
    per_side = -(-(SIZE - window) // stride) + 1
    occlusion = Occlusion(window, stride, baseline, read, batch_size=per_side**2 * inputs.shape[0])  # one forward
    ours = occlusion.attributions(resnet, inputs, targets)
    peer = copy.deepcopy(resnet)
    forward = peer if read == "score" else (lambda x: peer(x).softmax(1))
    theirs = captum_attr.Occlusion(forward).attribute(
        inputs.clone(),
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        baselines=perturbation_baseline(inputs, baseline),
        target=targets,
        perturbations_per_eval=per_side**2,  # captum's one forward: the same batch as ours
    )
    assert torch.equal(theirs[:, :1], theirs[:, 2:]), "captum's windows cover all channels"
    assert ours.abs().amax() > 0
    # The same forwards on the same batch (window-major rows, as captum's); each pixel sums <= 4 drops S(x) - S(x_j)
    # in another order and divides by the count: a few ulps of max|attr|. Measured 0. 16.
    assert_close_to_peer(ours, theirs[:, :1], ulps=16, why=f"Occlusion {window}/{stride}/{baseline}/{read} vs captum")
    torch.testing.assert_close(occlusion(resnet, inputs, targets), minmax(ours), rtol=0, atol=1e-6)


def test_occlusion_geometry_cuts_windows_to_small_inputs_and_checks_strides():
    assert Occlusion().geometry((64, 32)) == ((8, 4), (4, 2)), "an eighth of each side, half of it as stride"
    assert Occlusion(window=16, stride=8).geometry((5, 40)) == ((5, 16), (8, 8)), "cut to the image"
    with pytest.raises(ValueError, match="must not exceed the window"):
        Occlusion(window=4, stride=5)
    with pytest.raises(ValueError, match="exceeds the window"):
        Occlusion(stride=9).geometry((64, 64))
    with pytest.raises(ValueError, match="read must be one of"):
        Occlusion(read="logit")


# ------------------------------------------------------------------------------------------------------ GradientShap


def test_gradient_shap_equals_captum_with_the_same_draws(resnet, batch):
    inputs, targets = batch
    n, stdev = 5, 0.05
    distribution = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))  # R = 4 baselines
    np.random.seed(0)
    torch.manual_seed(0)
    theirs = captum_attr.GradientShap(copy.deepcopy(resnet)).attribute(
        inputs.clone(), baselines=distribution, n_samples=n, stdevs=stdev, target=targets
    )
    # captum's draws, in its order: baseline indices (numpy), noise (torch), path points (numpy); rows image-major.
    np.random.seed(0)
    torch.manual_seed(0)
    choice = torch.tensor(np.random.choice(4, n * 2)).view(2, n)
    noise = torch.normal(0, torch.tensor(stdev).repeat((2 * n, 3, SIZE, SIZE))).view(2, n, 3, SIZE, SIZE)
    alphas = torch.tensor(np.random.uniform(0.0, 1.0, 2 * n), dtype=torch.float32).view(2, n)
    with eval_mode(resnet), gradients_enabled():
        ours = gradient_shap_attributions(
            resnet,
            inputs,
            ClassTarget(targets),
            Run(),
            baselines=distribution[None],
            noise=noise,
            choice=choice,
            alphas=alphas,
            batch_size=2 * n,  # captum's one pass
        )
    assert ours.abs().amax() > 0
    # The same points in the same pass (bit-identical gradients); (z - b) * g summed over 5 samples in another order,
    # times 1/5: a few ulps of max|attr|. Measured 0. 32.
    assert_close_to_peer(ours, theirs, ulps=32, why="GradientShap vs captum with captum's draws")


def test_gradient_shap_is_seeded_and_exact_on_a_linear_model(make_batch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    inputs, targets = make_batch(batch=2, height=8, width=8)
    # On a linear model the gradient is constant: A = (x - b) * w for every draw (here b = 0 or 0.5, half and half).
    method = GradientShap(num_samples=64, baselines=("zero", 0.5), seed=3)
    attributions = method.attributions(net, inputs, targets)
    w = net[1].weight[targets].view(2, 3, 8, 8).detach()
    picked = torch.randint(0, 2, (1, 64), generator=torch.Generator().manual_seed(4))  # seed + 1's stream
    mean_baseline = 0.5 * picked.float().mean()
    torch.testing.assert_close(attributions, (inputs - mean_baseline) * w, rtol=1e-5, atol=1e-7)
    assert torch.equal(method(net, inputs, targets), GradientShap(64, ("zero", 0.5), seed=3)(net, inputs, targets))
    assert not torch.equal(attributions, GradientShap(64, ("zero", 0.5), seed=4).attributions(net, inputs, targets))
    with pytest.raises(ValueError, match="distribution"):
        GradientShap(baselines=torch.zeros(4, 3, 8, 8)).attributions(net, inputs[:, :, :4], targets)


# -------------------------------------------------------------------------------------- SmoothGrad-squared, VarGrad


@pytest.mark.parametrize(("nt_type", "absolute"), [("smoothgrad_sq", True), ("vargrad", True), ("vargrad", False)])
def test_noise_tunnel_variants_equal_captum_with_the_same_noise(resnet, batch, nt_type, absolute):
    inputs, targets = batch
    n, stdev = 5, 0.1
    torch.manual_seed(0)
    theirs = captum_attr.NoiseTunnel(captum_attr.Saliency(copy.deepcopy(resnet))).attribute(
        inputs.clone().requires_grad_(), nt_type=nt_type, nt_samples=n, stdevs=stdev, target=targets, abs=absolute
    )
    torch.manual_seed(0)  # captum's noise: one draw for all rows, image-major
    noise = torch.normal(0, torch.tensor(stdev).repeat((2 * n, 3, SIZE, SIZE))).view(2, n, 3, SIZE, SIZE)
    with eval_mode(resnet), gradients_enabled():
        mean, mean_sq = gradient_moments(
            resnet, inputs, ClassTarget(targets), Run(), noise=noise, absolute=absolute, batch_size=2 * n
        )
    ours = mean_sq if nt_type == "smoothgrad_sq" else mean_sq - mean * mean
    assert ours.abs().amax() > 0
    # The same 10 noisy images in one pass as captum's (bit-identical gradients); the moments sum 5 terms and VarGrad
    # subtracts E[a]^2 (E[a^2] is up to 4x the variance here, so an ulp of E[a^2] is 4 of the result). Measured 0. 64.
    assert_close_to_peer(ours, theirs, ulps=64, why=f"NoiseTunnel {nt_type} (abs={absolute}) vs captum")


def test_noise_tunnel_variants_use_smoothgrads_noise_and_reduce_to_the_gradient(resnet, batch):
    inputs, targets = batch
    patterns, sigma = smoothgrad_noise(inputs, 4, 0.15, seed=2)
    generator = torch.Generator().manual_seed(2)  # SmoothGrad's draw: randn((n, 1, C, H, W)) * sigma
    expected = (
        torch.randn((4, 1, *inputs.shape[1:]), generator=generator)
        * (0.15 * (inputs.amax((1, 2, 3)) - inputs.amin((1, 2, 3))))[:, None, None, None]
    )
    torch.testing.assert_close(patterns[:, None] * sigma[:, None, None, None], expected, rtol=0, atol=0)
    # Without noise: SmoothGrad-squared is the squared gradient (the map's square), VarGrad is 0 (a zero map).
    with eval_mode(resnet), gradients_enabled():
        gradient = Gradient().compute(resnet, inputs, ClassTarget(targets), Run())  # max_c |g|, [B,1,H,W]
    squared = SmoothGradSquared(num_samples=1, noise_level=0.0)(resnet, inputs, targets)
    torch.testing.assert_close(squared, minmax(gradient**2), rtol=0, atol=1e-6)
    assert (VarGrad(num_samples=3, noise_level=0.0)(resnet, inputs, targets) == 0).all()
    smooth_sq = SmoothGradSquared(num_samples=8, seed=3)(resnet, inputs, targets)
    assert torch.equal(smooth_sq, SmoothGradSquared(num_samples=8, seed=3)(resnet, inputs, targets))
    assert not torch.allclose(smooth_sq, SmoothGrad(num_samples=8, seed=3)(resnet, inputs, targets), atol=1e-2)


# ---------------------------------------------------------------------------------------------------------- DeepLift


def _block_forward(self: BasicBlock, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu_out(out + identity)


def distinct_relus(model: nn.Module, maxpool: nn.Module | None = None) -> nn.Module:
    """A copy of a torchvision ResNet whose blocks use a second ReLU module after the addition (captum needs that)."""
    model = copy.deepcopy(model)
    for block in model.modules():
        if isinstance(block, BasicBlock):
            block.relu_out = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_block_forward, block)
    if maxpool is not None:
        model.maxpool = maxpool
    return model


def target_gap(model: nn.Module, inputs: Tensor, baseline: Tensor, targets: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(inputs) - model(baseline)).gather(1, targets[:, None])[:, 0]


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_deeplift_equals_captum_on_resnet18_without_max_pooling(resnet, batch, baseline):
    inputs, targets = batch
    model = distinct_relus(resnet, nn.Identity())  # captum refuses the shared ReLU; its max-pool rule: below
    ours = DeepLift(baseline).attributions(model, inputs, targets)
    theirs = captum_attr.DeepLift(copy.deepcopy(model)).attribute(
        inputs.clone(), baselines=perturbation_baseline(inputs, baseline), target=targets
    )
    assert ours.abs().amax() > 0
    # The same forward on the same [inputs; baselines] batch; the multipliers (f(x) - f(x')) / (x - x') computed alike;
    # the backward through the same layers in another graph (captum's hooks vs our autograd Functions) sums the same
    # terms in other orders: measured 6.6 ulps (zero), 5.3 (blur) of max|attr|. 256.
    assert_close_to_peer(ours, theirs, ulps=256, why=f"DeepLift ({baseline}) vs captum, ResNet-18 without max-pool")


def test_deeplift_max_pool_rule_equals_captum_where_captum_applies_it(batch):
    inputs, targets = batch
    torch.manual_seed(0)  # captum 0.9 applies its max-pool rule only when the pool's neighbours are not hooked modules
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    baseline = perturbation_baseline(inputs, "blur")  # a varying baseline: the windows' argmaxes differ
    ours = DeepLift("blur").attributions(model, inputs, targets)
    theirs = captum_attr.DeepLift(copy.deepcopy(model)).attribute(inputs.clone(), baselines=baseline, target=targets)
    # As above on a small network: measured 0.8 ulps of max|attr|. 256.
    assert_close_to_peer(ours, theirs, ulps=256, why="DeepLift's max-pool rule vs captum")
    with torch.no_grad():  # guard: windows where the baseline's max is larger, which the cross-max rule handles
        pooled, pooled_ref = model[:2](inputs), model[:2](baseline)
    assert (pooled < pooled_ref).float().mean() > 0.05


def reference_stem_deeplift(stem: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """captum's documented rules by hand on ``conv -> bn -> ReLU -> MaxPool(3, 2, 1) -> mean -> fc``, zero baseline.

    The ReLU's multiplier is ``(y - y') / (z - z')`` (its derivative where ``z = z'``); the max pool's gives each
    window's ``max(o, o') - o'`` to the input's argmax and ``o - max(o, o')`` to the baseline's, summed over windows,
    over ``y - y'`` (the plain max-pool gradient where ``y = y'``); the linear layers' are their transposes.
    """
    baseline = torch.zeros_like(inputs)
    linear = lambda v: stem.bn1(stem.conv1(v))  # noqa: E731
    with torch.no_grad():
        z, z_ref = linear(inputs), linear(baseline)
        y, y_ref = z.relu(), z_ref.relu()
        o, idx = F.max_pool2d(y, 3, 2, 1, return_indices=True)
        o_ref, idx_ref = F.max_pool2d(y_ref, 3, 2, 1, return_indices=True)
        cross = torch.maximum(o, o_ref)
        g = stem.fc.weight[targets][:, :, None, None].expand_as(o) / o[0, 0].numel()  # d score / d o
        b, c = y.shape[:2]

        def scatter(values: Tensor, index: Tensor) -> Tensor:
            return torch.zeros(b, c, y[0, 0].numel()).scatter_add_(2, index.flatten(2), values.flatten(2)).view_as(y)

        dy, dz = y - y_ref, z - z_ref
        pooled = (scatter(g * (cross - o_ref), idx) + scatter(g * (o - cross), idx_ref)) / dy.where(dy != 0, 1)
        m_y = torch.where(dy == 0, scatter(g, idx), pooled)
        m_z = m_y * torch.where(dz == 0, (z > 0).float(), dy / dz.where(dz != 0, 1))
    x = inputs.clone().requires_grad_(True)
    (m_x,) = torch.autograd.grad(linear(x), x, m_z)
    return inputs * m_x


class Stem(nn.Module):
    """ResNet-18's stem (its conv1, bn1, ReLU and 3x3 stride-2 max pool) and a linear head on the mean."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (
            copy.deepcopy(resnet.get_submodule(n)) for n in ("conv1", "bn1", "relu", "maxpool")
        )
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.maxpool(self.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def test_deeplift_implements_captums_max_pool_rule_where_captum_loses_it(resnet, batch):
    inputs, targets = batch
    stem = Stem(resnet).eval()
    ours = DeepLift().attributions(stem, inputs, targets)
    expected = reference_stem_deeplift(stem, inputs, targets)
    # The reference's own order of the same float32 operations: measured 0 ulps of max|attr|. 64.
    assert_close_to_peer(ours, expected, ulps=64, why="DeepLift vs captum's rules by hand, ResNet-18 stem")
    gap = target_gap(stem, inputs, torch.zeros_like(inputs), targets)
    torch.testing.assert_close(ours.flatten(1).sum(1), gap, rtol=1e-5, atol=1e-6)  # completeness
    # captum 0.9: after an activation module, its max-pool hook's gradient is replaced by the plain max-pool gradient
    # (and its zero-delta fallback broadcasts image 0's gradient, captum#1276). Tighten this once captum agrees.
    theirs = captum_attr.DeepLift(copy.deepcopy(stem)).attribute(inputs.clone(), target=targets)
    assert (theirs - expected).abs().amax() > 1e-2 * expected.abs().amax(), "captum now applies its rule: test it"


def test_deeplift_handles_reused_and_in_place_relus_and_is_complete(resnet, batch):
    inputs, targets = batch
    ours = DeepLift().attributions(resnet, inputs, targets)  # torchvision's shared in-place ReLU per block
    same = DeepLift().attributions(distinct_relus(resnet), inputs, targets)
    # The same forward and the same multipliers (a reused module is handled per call): measured 0. 16.
    assert_close_to_peer(ours, same, ulps=16, why="DeepLift on ResNet-18 vs its copy with distinct ReLUs")
    gap = target_gap(resnet, inputs, torch.zeros_like(inputs), targets)
    torch.testing.assert_close(ours.flatten(1).sum(1), gap, rtol=1e-4, atol=1e-5)  # sum_i A_i = S(x) - S(x')
    with pytest.raises(RuntimeError, match="used more than once"):  # captum's limitation, which ours lifts
        captum_attr.DeepLift(copy.deepcopy(resnet)).attribute(inputs.clone(), target=targets)


def test_deeplift_refuses_unsupported_nonlinearities_and_warns_on_functional_ones(probe_batch):
    inputs, targets = probe_batch
    attention = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.LayerNorm(900), nn.Flatten(), nn.Linear(3600, 5))
    with pytest.raises(ValueError, match=r"cannot handle: '2' \(LayerNorm\)"):
        DeepLift()(attention, inputs, targets)

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(torch.sigmoid(self.conv(x)).mean((2, 3)))  # invisible to module hooks

    with pytest.warns(SaliencyWarning, match=r"do not sum to S\(x\) - S\(x'\).*F\.relu"):
        DeepLift()(Functional(), inputs, targets)


# -------------------------------------------------------------------------------------------------------------- RISE


def reference_rise(model: nn.Module, inputs: Tensor, targets: Tensor, grids: Tensor, shifts: Tensor) -> Tensor:
    """The authors' algorithm (eclique/RISE ``generate_masks`` and ``forward``) with plain loops and given draws.

    Cell size ``ceil(H / s)``, each grid upsampled with scikit-image's ``resize(order=1, mode="reflect",
    anti_aliasing=False)`` to ``(s + 1)`` cells and cropped at the shift; saliency ``sum_i p_i M_i / (N p)``.
    """
    n, s = grids.shape[:2]
    h, w = inputs.shape[-2:]
    cell = (int(np.ceil(h / s)), int(np.ceil(w / s)))
    masks = []
    for i in range(n):
        up = skimage_transform.resize(
            grids[i].numpy(), ((s + 1) * cell[0], (s + 1) * cell[1]), order=1, mode="reflect", anti_aliasing=False
        )
        dy, dx = int(shifts[i, 0] * cell[0]), int(shifts[i, 1] * cell[1])
        masks.append(torch.from_numpy(np.ascontiguousarray(up[dy : dy + h, dx : dx + w])).float())
    saliency = torch.zeros(inputs.shape[0], 1, h, w)
    with torch.no_grad():
        for b in range(inputs.shape[0]):
            for mask in masks:
                p = model(inputs[b : b + 1] * mask).softmax(1)[0, int(targets[b])]
                saliency[b, 0] += p * mask
    return saliency / (n * 0.5), torch.stack(masks)


def test_rise_equals_the_papers_algorithm_with_the_same_draws(resnet, batch):
    inputs, targets = batch
    rise = RISE(num_masks=24, grid_size=7, p=0.5, seed=1)
    grids, shifts = rise_draws(24, 7, 0.5, seed=1)
    expected, masks = reference_rise(resnet, inputs, targets, grids, shifts)
    # Linear interpolation weights in float64 vs scikit-image's float32 zoom: measured 3e-8 of 1. 1e-6.
    torch.testing.assert_close(rise_masks(grids, shifts, (SIZE, SIZE)), masks, rtol=0, atol=1e-6)
    with eval_mode(resnet), gradients_enabled():
        ours = rise.compute(resnet, inputs, ClassTarget(targets), Run())
    assert ours.amax() > 0
    # The reference's forwards are single images, ours 48 in a batch: the logits round differently by a few ulps
    # (forward values only: no argmax flip changes them by more), then 24 terms p_i M_i summed in another order.
    # Measured 2.5 ulps of max|saliency|. 256.
    assert_close_to_peer(ours, expected, ulps=256, why="RISE vs the paper's algorithm, same draws")


def test_rise_masks_upsample_like_scikit_image_for_any_size():
    for size_in, size_out in [(7, 40), (7, 72), (2, 9), (3, 3)]:
        grid = (torch.rand(size_in, size_in, generator=torch.Generator().manual_seed(size_out)) < 0.5).float()
        expected = skimage_transform.resize(
            grid.numpy(), (size_out, size_out), order=1, mode="reflect", anti_aliasing=False
        )
        matrix = upsampling_matrix(size_in, size_out)
        torch.testing.assert_close(matrix @ grid @ matrix.T, torch.from_numpy(expected), rtol=0, atol=1e-6)
    grids, shifts = rise_draws(3, 7, 0.5, seed=0)
    masks = rise_masks(grids, shifts, (40, 24))  # non-square: cells of 6 x 4 pixels
    assert masks.shape == (3, 40, 24)
    assert masks.min() >= 0
    assert masks.max() <= 1
