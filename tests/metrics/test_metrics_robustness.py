"""Infidelity and max-sensitivity equal captum's on identical perturbations (handed to captum as perturb_func)."""

from __future__ import annotations

import copy

import pytest
import torch
from _tolerance import assert_close_to_peer
from torch import Tensor, nn

from lightning_saliency.methods import GradCAM, Gradient, GradientXInput, IntegratedGradients
from lightning_saliency.metrics import Infidelity, SensitivityMax, infidelity, sensitivity_max
from lightning_saliency.metrics.functional.robustness import infidelity_perturbations, sensitivity_perturbations

captum_metrics = pytest.importorskip("captum.metrics")
captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture
def setup(make_cnn, make_batch) -> tuple[nn.Module, Tensor, Tensor]:
    inputs, targets = make_batch(batch=3, height=16, width=16)
    return make_cnn().eval(), inputs, targets


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum(setup, normalize):
    model, inputs, targets = setup
    attributions = captum_attr.InputXGradient(copy.deepcopy(model)).attribute(
        inputs.clone().requires_grad_(), target=targets
    )
    attributions = attributions.detach()
    n = 6
    noise = infidelity_perturbations(tuple(inputs.shape[1:]), n, 0.003, seed=5)  # [n,C,H,W]

    def perturb_func(x: Tensor) -> tuple[Tensor, Tensor]:  # captum's documented example, with our draws
        perturbation = noise.repeat(x.shape[0] // n, 1, 1, 1)  # rows are image-major (repeat_interleave)
        return perturbation, x - perturbation

    theirs = captum_metrics.infidelity(
        copy.deepcopy(model), perturb_func, inputs, attributions, target=targets, n_perturb_samples=n,
        normalize=normalize,
    )  # fmt: skip
    ours = infidelity(model, inputs, targets, attributions, n_perturb_samples=n, seed=5, normalize=normalize)
    assert ours.min() > 0
    # The same forwards on the same batches as captum (3 rows, then 18), so f(x) - f(x - Phi) is bit-identical; it
    # must be: f ~ 0.2 but f(x) - f(x - Phi) ~ 1e-5, so half an ulp of a logit (another batch size) moves the score
    # by ~2200 ulps. Left: I . Phi (768 terms; computing it in float64 moves the score by 2.5 ulps, 4 normalised)
    # and sums of 6. Measured 0. 64 ulps of the largest score.
    assert_close_to_peer(ours, theirs.float(), ulps=64, why=f"infidelity (normalize={normalize}) vs captum")
    # Seeded, batch-independent, RNG untouched; a map [B, 1, H, W] broadcasts over channels.
    rng = torch.get_rng_state()
    again = infidelity(
        model, inputs[1:], targets[1:], attributions[1:], n_perturb_samples=n, seed=5, normalize=normalize
    )
    assert torch.equal(rng, torch.get_rng_state())
    torch.testing.assert_close(again, ours[1:])
    summed = attributions.sum(1, keepdim=True)
    assert infidelity(model, inputs, targets, summed).shape == (3,)


def test_infidelity_ranks_faithful_attributions_first(setup):
    model, inputs, targets = setup
    ig = IntegratedGradients(steps=16).attributions(model, inputs, targets)
    worse = infidelity(model, inputs, targets, ig.flip(-1))
    assert (infidelity(model, inputs, targets, ig) < worse).all()
    metric = Infidelity(n_perturb_samples=4)
    metric.update(model, inputs, targets, ig)
    torch.testing.assert_close(metric.compute(), infidelity(model, inputs, targets, ig, n_perturb_samples=4).mean())
    with pytest.raises(ValueError, match="attributions must be"):
        infidelity(model, inputs, targets, ig[:2])


@pytest.mark.parametrize("method", [Gradient(), GradCAM()])
def test_sensitivity_max_equals_captum(setup, method):
    model, inputs, targets = setup
    n = 4
    deltas = sensitivity_perturbations(tuple(inputs.shape[1:]), n, 0.02, seed=2)

    drawn = iter(deltas)

    def perturb_func(x: Tensor, perturb_radius: float = 0.02) -> Tensor:  # one delta per call: see below
        return x + next(drawn)[None]

    def explanation_func(x: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
        return (method(model, x[0] if isinstance(x, tuple) else x, target),)  # captum works on tuples

    # max_examples_per_batch=B: captum explains one perturbation of the batch per call, as ours does, so the
    # explanations come from the same batches (another batch size would change the maps' last bits, and that, not
    # float32 accumulation, by up to 1 / sensitivity times more ulps of the score).
    theirs = captum_metrics.sensitivity_max(
        explanation_func, inputs, perturb_func=perturb_func, n_perturb_samples=n, target=targets,
        max_examples_per_batch=inputs.shape[0],
    )  # fmt: skip
    ours = sensitivity_max(method, model, inputs, targets, n_perturb_samples=n, seed=2)
    assert ours.max() > 0
    # The same maps; left: two 256-term norms and a division, ~sqrt(256) / 2 = 8 ulps. Measured 0. 64.
    assert_close_to_peer(ours, theirs.float(), ulps=64, why=f"max-sensitivity of {type(method).__name__} vs captum")
    metric = SensitivityMax(method, n_perturb_samples=n, seed=2)
    metric.update(model, inputs, targets)
    torch.testing.assert_close(metric.compute(), ours.mean())


def test_sensitivity_max_grows_with_the_radius_and_takes_callables(setup):
    model, inputs, targets = setup

    def explain(m: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        return GradientXInput()(m, x, t)

    small = sensitivity_max(explain, model, inputs, targets, perturb_radius=0.001, n_perturb_samples=3)
    large = sensitivity_max(explain, model, inputs, targets, perturb_radius=0.2, n_perturb_samples=3)
    assert (small < large).all()
    assert (sensitivity_max(explain, model, inputs, targets, perturb_radius=0.0, n_perturb_samples=2) == 0).all()
    with pytest.raises(ValueError, match="n_perturb_samples must be"):
        sensitivity_max(explain, model, inputs, targets, n_perturb_samples=0)
