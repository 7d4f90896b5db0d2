"""Completeness, NonSensitivity and InputInvariance equal Quantus 0.6's on the same model, inputs and attributions.

Quantus runs the same torch model in eval mode (its ``device="cpu"``); none of the three draws random numbers with
these baselines. Where Quantus needs an ``explain_func`` (input invariance) both sides get the same function.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _quantus_names import ours
from torch import Tensor, nn

from lightning_saliency.methods import Gradient, GradientXInput, IntegratedGradients
from lightning_saliency.metrics import (
    Completeness,
    InputInvariance,
    NonSensitivity,
    completeness,
    input_invariance,
    non_sensitivity,
)
from lightning_saliency.metrics.functional import quantus_baseline

quantus = pytest.importorskip("quantus")


def conv_net(seed: int = 0) -> nn.Module:
    """A seeded CNN ``[B, 3, H, W] -> [B, 5]`` whose first module is a convolution with a bias and no padding (where
    Quantus' bias compensation of a shift is exact)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


class TopHalf(nn.Module):
    """Looks only at the top half of the image: the model is exactly insensitive to the bottom half."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 5, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x[:, :, :3])


def integer_linear() -> tuple[nn.Module, Tensor, Tensor]:
    """``f(x) = W x`` with small integer weights and integer inputs: sums of attributions are exact in float32."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.randint(-3, 4, (3, 32), generator=g).float())
    x = torch.randint(0, 5, (4, 2, 4, 4), generator=g).float()
    return net, x, torch.tensor([0, 1, 2, 1])


def exact_attributions(net: nn.Module, x: Tensor, y: Tensor, reference: Tensor) -> Tensor:
    """``w_y * (x - x')``: they sum to ``f(x) - f(x')`` exactly; images 1 and 3 get one unit too much."""
    w = net[1].weight.detach()[y].view_as(x)
    a = w * (x - reference)
    a[1, 0, 0, 0] += 1.0
    a[3, 1, 2, 2] += 1.0
    return a


def quantus_call(metric, model: nn.Module, x: Tensor, y: Tensor, a: Tensor, **call) -> np.ndarray:
    out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu", **call)
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("baseline", ["black", "white", 0.0, 2.0])
def test_completeness_equal_to_quantus(baseline):
    net, x, y = integer_linear()
    a = exact_attributions(net, x, y, quantus_baseline(x, baseline))
    expected = quantus_call(quantus.Completeness(disable_warnings=True, normalise=False, perturb_baseline=baseline),
                            net, x, y, a)  # fmt: skip
    got = completeness(net, x, y, a, perturb_baseline=baseline, normalise=False)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.double().numpy(), expected)
    np.testing.assert_array_equal(expected, [1.0, 0.0, 1.0, 0.0])  # complete where they should be, and only there
    # Quantus' default normalise=True divides by the maximum: the sums no longer match (both sides agree)
    default = quantus_call(quantus.Completeness(disable_warnings=True, perturb_baseline=baseline), net, x, y, a)
    np.testing.assert_array_equal(completeness(net, x, y, a, perturb_baseline=baseline).double().numpy(), default)
    np.testing.assert_array_equal(default, np.zeros(4))


def test_quantus_baselines_are_quantus_perturb_baselines():
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    x = torch.rand(3, 2, 5, 4, generator=torch.Generator().manual_seed(0)) * 4 - 1
    flat = x.flatten(1).numpy()
    everything = np.tile(np.arange(flat.shape[1]), (3, 1))
    for value in ("black", "white", "mean", 0.3):
        theirs = batch_baseline_replacement_by_indices(arr=flat, indices=everything, perturb_baseline=value)
        np.testing.assert_allclose(quantus_baseline(x, value).flatten(1).numpy(), theirs, rtol=1e-6, atol=0)


def test_completeness_with_a_tolerance_holds_for_integrated_gradients():
    net = conv_net()
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0)) * 4
    y = torch.tensor([0, 1, 2, 3])
    ig = IntegratedGradients(steps=64).attributions(net, x, y)  # zero baseline: complete up to the quadrature
    assert completeness(net, x, y, ig, perturb_baseline=0.0, normalise=False).sum() == 0  # not exactly
    assert completeness(net, x, y, ig, perturb_baseline=0.0, normalise=False, rtol=1e-3).sum() == 0  # 0.14-1.5 % off
    np.testing.assert_array_equal(completeness(net, x, y, ig, perturb_baseline=0.0, normalise=False, rtol=0.05), 1)
    shuffled = ig[[1, 2, 3, 0]]  # another image's attributions
    assert completeness(net, x, y, shuffled, perturb_baseline=0.0, normalise=False, rtol=0.05).sum() == 0


def sensitivity_batch() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=g)
    a = torch.rand(4, 1, 6, 6, generator=g)
    a[a < 0.4] = 0.0  # non-features on both halves: violations where the model looks, and where it does not
    return TopHalf().eval(), x, torch.tensor([0, 1, 2, 4]), a


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"perturb_baseline": 0.0}, {"perturb_baseline": "white", "eps": 1e-3}, {"normalise": False, "abs": False}],
)
@pytest.mark.parametrize("softmax", [True, False])
def test_non_sensitivity_equal_to_quantus(kwargs, softmax):
    net, x, y, a = sensitivity_batch()
    expected = quantus_call(quantus.NonSensitivity(disable_warnings=True, **kwargs), net, x, y, a, softmax=softmax)
    got = non_sensitivity(net, x, y, a, softmax=softmax, batch_size=50, **ours(kwargs))  # other chunks than Quantus'
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.double().numpy(), expected)
    assert expected.min() > 0  # some violations: zero-attributed pixels the model sees,
    assert expected.max() < 108  # but not every value of 3 x 6 x 6


def test_non_sensitivity_in_groups_counts_a_group_as_unattributed_when_all_its_values_are():
    net, x, y, _ = sensitivity_batch()
    top_only = torch.zeros(4, 1, 6, 6)
    top_only[:, :, :3] = 1.0  # attribute exactly what the model sees
    far = {"perturb_baseline": -3.0}  # every value it sees moves the output
    assert non_sensitivity(net, x, y, top_only, features_in_step=1, **far).sum() == 0  # no violation, value by value
    # groups of 18 values: per channel, rows 0-2 (seen, attributed) and rows 3-5 (unseen, unattributed)
    assert non_sensitivity(net, x, y, top_only, features_in_step=18, **far).sum() == 0
    # groups of 12 (two rows): rows 2-3 are a mixed group, attributed and seen: no violation either
    torch.testing.assert_close(non_sensitivity(net, x, y, top_only, features_in_step=12, **far), torch.zeros(4))
    bottom = 1 - top_only  # the wrong half: every group is a violation
    torch.testing.assert_close(non_sensitivity(net, x, y, bottom, features_in_step=18, **far), torch.full((4,), 6.0))
    # groups of 12: 9 per image; the 3 mixed ones (rows 2-3) are attributed and seen, the other 6 violate
    torch.testing.assert_close(non_sensitivity(net, x, y, bottom, features_in_step=12, **far), torch.full((4,), 6.0))


def grad(model: nn.Module, inputs, targets, **_) -> np.ndarray:
    """The input gradient of the target logit ``[B, 3, H, W]``; images 2 and 3 times the input (not invariant)."""
    x = torch.as_tensor(inputs).clone().requires_grad_(True)
    y = torch.as_tensor(targets)
    (g,) = torch.autograd.grad(model(x).gather(1, y[:, None]).sum(), x)
    g[2:] = g[2:] * x[2:].detach()
    return g.detach().numpy()


def test_quantus_leaves_the_first_value_of_each_image_unshifted():
    """Quantus 0.6's ``InputInvariance`` shifts all values but the first (``perturb_batch`` passes ``indices[1:]``)."""
    rng = np.random.default_rng(0)
    x, a = rng.random((2, 3, 6, 6)).astype(np.float32), rng.random((2, 1, 6, 6)).astype(np.float32)
    seen = []

    def explain(model, inputs, targets, **_):
        seen.append(np.array(inputs))
        return a

    metric = quantus.InputInvariance(disable_warnings=True)
    metric(
        model=conv_net(), x_batch=x, y_batch=np.zeros(2, dtype=np.int64), a_batch=a, explain_func=explain, device="cpu"
    )
    shifted = seen[-1].reshape(2, -1)
    np.testing.assert_array_equal(shifted[:, 0], x.reshape(2, -1)[:, 0])  # not shifted
    np.testing.assert_allclose(shifted[:, 1:], x.reshape(2, -1)[:, 1:] - 1, rtol=0, atol=1e-7)


def test_input_invariance_equal_to_quantus():
    net = conv_net()
    with torch.no_grad():
        net[0].weight[:, 0, 0, 0] = 0.0  # the model ignores the value Quantus leaves unshifted (test above)
    x = torch.rand(4, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])

    def explain(model, inputs, targets):
        return torch.from_numpy(grad(model, inputs, targets))

    a = explain(net, x, y)
    per_image = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}}  # ours: each image by its own maximum
    for kwargs in ({}, {"input_shift": 0.5, "normalise": True, "abs": True}):
        extra = per_image if kwargs.get("normalise") else {}
        metric = quantus.InputInvariance(disable_warnings=True, **kwargs, **extra)
        expected = quantus_call(metric, net, x, y, a, explain_func=grad)
        got = input_invariance(explain, net, x, y, a, **ours(kwargs))
        np.testing.assert_array_equal(got.double().numpy(), expected)
        np.testing.assert_array_equal(expected, [1.0, 1.0, 0.0, 0.0])


def test_input_invariance_of_methods_and_the_hook_goes():
    net = conv_net()
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    before = [p.detach().clone() for p in net.parameters()]
    torch.testing.assert_close(input_invariance(Gradient(), net, x, y), torch.ones(3))
    torch.testing.assert_close(input_invariance(GradientXInput(), net, x, y), torch.zeros(3))
    ig = IntegratedGradients(steps=8)  # zero baseline: not invariant (Kindermans et al.)
    torch.testing.assert_close(input_invariance(ig, net, x, y), torch.zeros(3))
    assert not net._forward_pre_hooks
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))  # no bias was moved

    def failing(model, inputs, targets):
        if not torch.equal(inputs, x):
            raise RuntimeError("boom")
        return inputs

    with pytest.raises(RuntimeError, match="boom"):
        input_invariance(failing, net, x, y)
    assert not net._forward_pre_hooks


def test_metric_classes_average_the_functionals():
    net, x, y = integer_linear()
    a = exact_attributions(net, x, y, quantus_baseline(x, "black"))
    metric = Completeness(normalise=False)
    metric.update(net, x, y, a)
    torch.testing.assert_close(metric.compute(), torch.tensor(0.5))
    net, x, y, a = sensitivity_batch()
    metric = NonSensitivity()
    metric.update(net, x[:2], y[:2], a[:2])
    metric.update(net, x[2:], y[2:], a[2:])
    torch.testing.assert_close(metric.compute(), non_sensitivity(net, x, y, a).mean())
    metric = InputInvariance(Gradient())
    metric.update(conv_net(), torch.rand(2, 3, 10, 10), torch.tensor([0, 1]))
    torch.testing.assert_close(metric.compute(), torch.tensor(1.0))


NET, X, Y = conv_net(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
A = torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: completeness(NET, X, Y, A, perturb_baseline="grey"), "perturb_baseline must be 'black', .*'grey'"),
        (
            lambda: completeness(NET, X, Y, A, perturb_baseline=torch.ones(3, 3)),
            "perturb_baseline must be a Tensor broadcas",
        ),
        (lambda: completeness(NET, X, Y, A, rtol=-1), "rtol must be a number >= 0, got -1"),
        (lambda: completeness(NET, X, Y, torch.rand(2, 8, 8)), r"attributions must be a Tensor .*got \(2, 8, 8\)"),
        (lambda: completeness(NET, X, Y, torch.rand(3, 1, 8, 8)), r"got \(3, 1, 8, 8\)"),
        (lambda: non_sensitivity(NET, X, Y, A, features_in_step=0), "features_in_step must be an int >= 1.*got 0"),
        (lambda: non_sensitivity(NET, X, Y, A, eps=-0.1), "eps must be a number >= 0, got -0.1"),
        (lambda: non_sensitivity(NET, X, Y, A, softmax=1), "softmax must be a bool, got 1"),
        (lambda: non_sensitivity(NET, X, Y, A, batch_size=0), "batch_size must be a positive int.*got 0"),
        (lambda: input_invariance(Gradient(), NET, X, Y, input_shift=float("nan")), "input_shift must be .*got nan"),
        (lambda: input_invariance(Gradient(), NET, X, Y, X), r"shape of the explanation \(2, 1, 8, 8\)"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_explain_must_be_callable():
    with pytest.raises(TypeError, match="explain must be a SaliencyMethod or a callable, got int"):
        input_invariance(3, NET, X, Y)
