import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from _tolerance import assert_close_to_peer
from torch import nn

from lightning_saliency.methods import Run
from lightning_saliency.metrics import (
    AverageDrop,
    DeletionAUC,
    IncreaseInConfidence,
    InsertionAUC,
    average_drop,
    curve_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
    perturbation_baseline,
)


class RegionSum(nn.Module):
    """logits = [scale * sum of the pixels in `region`, 0]: P(class 0) = sigmoid(scale * sum_region)."""

    def __init__(self, region: torch.Tensor, scale: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * (x * self.region).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def hand_auc(points: list[float]) -> float:
    n = len(points) - 1
    return sum((points[i] + points[i + 1]) / 2 for i in range(n)) / n


@pytest.fixture
def region_model() -> RegionSum:
    return RegionSum(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # the top row of a 2x2 image


ONES = torch.ones(1, 1, 2, 2)
TARGET = torch.tensor([0])
GOOD = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])  # region pixels first
BAD = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # region pixels last


def test_deletion_analytic(region_model):
    curve = deletion_curve(region_model, ONES, TARGET, GOOD, steps=4)
    expected = [sig(8), sig(4), 0.5, 0.5, 0.5]
    torch.testing.assert_close(curve[0], torch.tensor(expected))
    assert curve_auc(curve).item() == pytest.approx(hand_auc(expected), abs=1e-6)
    bad = deletion_curve(region_model, ONES, TARGET, BAD, steps=4)
    torch.testing.assert_close(bad[0], torch.tensor([sig(8), sig(8), sig(8), sig(4), 0.5]))
    assert curve_auc(curve) < curve_auc(bad)  # the faithful map deletes faster


def test_insertion_analytic(region_model):
    curve = insertion_curve(region_model, ONES, TARGET, GOOD, steps=4, baseline="zero")
    expected = [0.5, sig(4), sig(8), sig(8), sig(8)]
    torch.testing.assert_close(curve[0], torch.tensor(expected))
    assert curve_auc(curve).item() == pytest.approx(hand_auc(expected), abs=1e-6)
    bad = insertion_curve(region_model, ONES, TARGET, BAD, steps=4, baseline="zero")
    assert curve_auc(curve) > curve_auc(bad)


def test_steps_not_dividing_pixels(region_model):
    # 4 pixels, 3 steps: floor(s * 4 / 3) = 0, 1, 2, 4 pixels deleted.
    curve = deletion_curve(region_model, ONES, TARGET, GOOD, steps=3)
    torch.testing.assert_close(curve[0], torch.tensor([sig(8), sig(4), 0.5, 0.5]))


@pytest.mark.parametrize("fill", [0.0, 0.7])
def test_constant_map_ties_in_raster_order(region_model, fill):
    const = torch.full((1, 1, 2, 2), fill)
    curve = deletion_curve(region_model, ONES, TARGET, const, steps=4)
    torch.testing.assert_close(curve, deletion_curve(region_model, ONES, TARGET, GOOD, steps=4))
    assert not torch.isnan(curve).any()
    assert torch.isfinite(average_drop(region_model, ONES, TARGET, torch.zeros(1, 1, 2, 2))).all()


def rise_curve(model, img, explanation, mode, substrate, step):
    """A numpy port of eclique/RISE evaluation.py CausalMetric.single_run (model outputs probabilities)."""
    hw = img.shape[-1] * img.shape[-2]
    c = int(model(img).argmax(1))
    n_steps = (hw + step - 1) // step
    if mode == "del":
        start, finish = img.clone(), substrate.clone()
    else:
        start, finish = substrate.clone(), img.clone()
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1, kind="stable"), axis=-1)
    for i in range(n_steps + 1):
        scores[i] = float(model(start)[0, c])
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            s = start.numpy().reshape(1, img.shape[1], hw)
            s[0, :, coords] = finish.numpy().reshape(1, img.shape[1], hw)[0, :, coords]
            start = torch.from_numpy(s.reshape(img.shape))
    return scores, (scores.sum() - scores[0] / 2 - scores[-1] / 2) / (scores.shape[0] - 1)


@pytest.mark.parametrize(("mode", "baseline"), [("del", "zero"), ("ins", "blur")])
def test_matches_rise_reference(mode, baseline):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    img = torch.randn(1, 3, 8, 8)
    explanation = torch.rand(1, 1, 8, 8)  # no ties
    prob_model = nn.Sequential(net, nn.Softmax(1))
    with torch.no_grad():
        target = net(img).argmax(1)
        ref_curve, ref_auc = rise_curve(
            prob_model, img, explanation.numpy(), mode, perturbation_baseline(img, baseline), 4
        )
    fn = deletion_curve if mode == "del" else insertion_curve
    curve = fn(net, img, target, explanation, steps=16, baseline=baseline)
    # Softmax probabilities of the same images, ours in batches, the reference one at a time (forward only): measured
    # 1 ulp of max p. 32. The AUC, a trapezoid mean of 17 points: measured 0.3 ulps. 32.
    assert_close_to_peer(curve[0], ref_curve, ulps=32, why=f"{mode} curve vs the RISE reference")
    assert_close_to_peer(curve_auc(curve)[0], ref_auc, ulps=32, why=f"{mode} AUC vs the RISE reference")


def small_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )


def test_random_maps_chunking_and_endpoints():
    net = small_net()
    x, maps, t = torch.randn(3, 3, 8, 8), torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    big = deletion_curve(net, x, t, maps, steps=8, batch_size=1000)
    torch.testing.assert_close(deletion_curve(net, x, t, maps, steps=8, batch_size=5), big)
    assert big.shape == (3, 9)
    assert ((big >= 0) & (big <= 1)).all()
    with torch.no_grad():
        torch.testing.assert_close(big[:, 0], net(x).softmax(1)[torch.arange(3), t])
        torch.testing.assert_close(big[:, -1], net(torch.zeros_like(x)).softmax(1)[torch.arange(3), t])
        ins = insertion_curve(net, x, t, maps, steps=8)
        torch.testing.assert_close(ins[:, -1], net(x).softmax(1)[torch.arange(3), t])


def test_baselines():
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(perturbation_baseline(x, "blur"), TF.gaussian_blur(x, [11, 11], [5.0, 5.0]))
    torch.testing.assert_close(perturbation_baseline(x, "mean")[:, :, 3, 5], x.mean((2, 3)))
    assert perturbation_baseline(x, "zero").abs().sum() == 0
    assert (perturbation_baseline(x, 0.5) == 0.5).all()
    assert (perturbation_baseline(x, torch.tensor([1.0, 2.0, 3.0])[:, None, None])[:, 2] == 3).all()
    assert perturbation_baseline(torch.rand(1, 1, 3, 3), "blur").shape == (1, 1, 3, 3)  # smaller than the kernel
    with pytest.raises(ValueError, match="baseline must be"):
        perturbation_baseline(x, "noise")
    with pytest.raises(ValueError, match="broadcast"):
        perturbation_baseline(x, torch.zeros(5))


def test_argument_errors(region_model):
    with pytest.raises(ValueError, match="steps must be"):
        deletion_curve(region_model, ONES, TARGET, GOOD, steps=0)
    with pytest.raises(ValueError, match="batch_size must be"):
        deletion_curve(region_model, ONES, TARGET, GOOD, batch_size=0)
    with pytest.raises(ValueError, match="match the inputs"):
        deletion_curve(region_model, ONES, TARGET, torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="targets must be class indices"):
        average_drop(region_model, ONES, torch.tensor([5]), GOOD)
    with pytest.raises(ValueError, match="at least 2 points"):
        curve_auc(torch.ones(3, 1))


def test_model_state_rng_and_inference_mode():
    net = small_net()
    net[0].eval()  # a mixture of modes must come back as it was
    modes = [m.training for m in net.modules()]
    x, maps, t = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    torch.manual_seed(3)
    expected_next = torch.rand(1)
    torch.manual_seed(3)
    with torch.inference_mode():
        ref = deletion_curve(net, x, t, maps, steps=4)
    assert torch.equal(torch.rand(1), expected_next)
    assert [m.training for m in net.modules()] == modes
    torch.testing.assert_close(deletion_curve(net, x, t, maps, steps=4), ref)


def test_average_drop_and_increase_analytic(region_model):
    x = torch.ones(2, 1, 2, 2)
    maps = torch.tensor([[[1.0, 0.5], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])[:, None]
    y, o = sig(8), sig(4 * 1.5)
    torch.testing.assert_close(average_drop(region_model, x, TARGET.repeat(2), maps), torch.tensor([(y - o) / y, 0.0]))
    # class 1 has P = 1 - sigmoid(s): masking raises it.
    torch.testing.assert_close(
        increase_in_confidence(region_model, x, torch.tensor([1, 1]), maps), torch.tensor([1.0, 0])
    )
    torch.testing.assert_close(average_drop(region_model, x, torch.tensor([1, 1]), maps), torch.tensor([0.0, 0]))


def test_agrees_with_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    net = small_net().eval()
    x, t = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    maps = torch.rand(6, 1, 8, 8)
    maps[0] = 1.0
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    cams = maps[:, 0].numpy()
    ref_drop = pgc.DropInConfidence()(x, cams, targets, net)  # max(0, Y - O), no division by Y
    ref_inc = pgc.IncreaseInConfidence()(x, cams, targets, net)  # 1[O > Y]
    with torch.no_grad():
        y = net(x).softmax(1)[torch.arange(6), t]
    # max(0, Y - O) from the same forwards, through our / Y and back (* Y): 2 roundings; measured under 1 ulp of
    # the largest drop. 32.
    drop = average_drop(net, x, t, maps) * y
    assert_close_to_peer(drop, ref_drop, ulps=32, why="drop in confidence vs pytorch-grad-cam")
    # Indicators (0 or 1): exact, and equal to pgc's without any factor.
    assert_close_to_peer(increase_in_confidence(net, x, t, maps), ref_inc, ulps=0, why="increase indicators")


def test_functional_equals_modular_over_several_updates():
    net = small_net()
    batches = [(torch.randn(n, 3, 8, 8), torch.randint(0, 3, (n,)), torch.rand(n, 1, 8, 8)) for n in (2, 3, 1)]
    pairs = [
        (DeletionAUC(steps=4), lambda *a: curve_auc(deletion_curve(*a, steps=4))),
        (InsertionAUC(steps=4), lambda *a: curve_auc(insertion_curve(*a, steps=4))),
        (AverageDrop(), average_drop),
        (IncreaseInConfidence(), increase_in_confidence),
    ]
    for metric, fn in pairs:
        for x, t, m in batches:
            metric.update(net, x, t, m)
        expected = torch.cat([fn(net, x, t, m) for x, t, m in batches]).mean()
        torch.testing.assert_close(metric.compute(), expected)
    deletion = pairs[0][0]
    curves = torch.cat([deletion_curve(net, x, t, m, steps=4) for x, t, m in batches])
    torch.testing.assert_close(deletion.mean_curve(), curves.mean(0))
    assert DeletionAUC.higher_is_better is False
    assert InsertionAUC.higher_is_better is True


@pytest.mark.parametrize("cls", [DeletionAUC, AverageDrop])
def test_ddp_reduction_semantics(cls):
    net = small_net()
    x, t, m = torch.randn(5, 3, 8, 8), torch.randint(0, 3, (5,)), torch.rand(5, 1, 8, 8)
    whole = cls()
    whole.update(net, x, t, m)
    rank0, rank1 = cls(), cls()
    rank0.update(net, x[:2], t[:2], m[:2])
    rank1.update(net, x[2:], t[2:], m[2:])
    # every state is reduced by sum, as DDP's sync would
    for name, reduce in rank0._reductions.items():
        assert getattr(reduce, "__name__", None) == "dim_zero_sum", name
    summed = cls()
    for name in summed._defaults:
        setattr(summed, name, getattr(rank0, name) + getattr(rank1, name))
    summed._update_count = 1
    torch.testing.assert_close(summed.compute(), whole.compute())
    rank0.merge_state(rank1)
    torch.testing.assert_close(rank0.compute(), whole.compute())


def test_run_precision_is_used(region_model):
    calls = []

    class Adapter:
        def __call__(self, output):
            calls.append(output.shape)
            return output

    deletion_curve(region_model, ONES, TARGET, GOOD, steps=4, run=Run(output_adapter=Adapter()))
    assert calls  # forwards went through run.logits
