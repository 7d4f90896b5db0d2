"""Quantus 0.6's randomisation metrics equal ours on the same draws and explanations.

Quantus draws from numpy's global RNG (Random Logit's other class, Smooth MPRT's noise): the tests hand it our
seeded draws by patching ``np.random.randint`` / ``np.random.randn`` for the call. Its ``explain_func`` (and
``quantus.explain``, which Smooth MPRT calls directly) calls our explanation. Both sides re-initialise the layers
the same way (``torch.manual_seed(seed + 1)`` before each ``reset_parameters()``), so the random models are equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from test_hardening import assert_untouched, snapshot
from test_quantus_robustness import EXPLAINERS  # our Gradient, and a raw signed gradient
from torch import nn

from lightning_saliency.methods import Gradient
from lightning_saliency.metrics import (
    EfficientMPRT,
    RandomLogit,
    SmoothMPRT,
    efficient_mprt,
    random_logit,
    smooth_mprt,
)
from lightning_saliency.metrics.functional import (
    discrete_entropy,
    random_off_classes,
    randomised_models,
    smooth_mprt_noise,
    structural_similarity,
)
from lightning_saliency.targets import RegressionTarget, UndefinedForTarget

quantus = pytest.importorskip("quantus")
skimage_metrics = pytest.importorskip("skimage.metrics")

B, K = 4, 5


@pytest.fixture
def setup(make_cnn, make_batch):
    inputs, targets = make_batch(batch=B, height=16, width=16)
    return make_cnn().eval(), inputs, targets


def numpy_explain(explain):
    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        return explain(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets)).detach().numpy()

    return explain_func


def call(metric, model, inputs, targets, explain) -> object:
    return metric(
        model=model, x_batch=inputs.numpy(), y_batch=targets.numpy(), explain_func=numpy_explain(explain),
        device="cpu", batch_size=B,
    )  # fmt: skip


def test_structural_similarity_equals_skimage():
    generator = torch.Generator().manual_seed(0)
    for length in (7, 50, 768):
        a = torch.rand(3, length, generator=generator, dtype=torch.float64)
        b = a + 0.3 * torch.rand(3, length, generator=generator, dtype=torch.float64)
        ours = structural_similarity(a, b)
        for row in range(3):
            aa, bb = a[row].numpy(), b[row].numpy()
            data_range = float(np.concatenate([aa, bb]).max() - np.concatenate([aa, bb]).min())  # Quantus' choice
            theirs = skimage_metrics.structural_similarity(aa, bb, data_range=data_range)
            assert abs(float(ours[row]) - theirs) < 1e-12  # both float64
    with pytest.raises(ValueError, match="rows of equal length >= win_size=7"):
        structural_similarity(torch.rand(1, 6), torch.rand(1, 6))


def test_discrete_entropy_equals_numpy_histogram_and_scipy():
    generator = torch.Generator().manual_seed(0)
    rows = [
        torch.rand(500, generator=generator, dtype=torch.float64),
        torch.randint(0, 7, (300,), generator=generator).double(),  # many values exactly on bin edges
        torch.full((20,), 3.0, dtype=torch.float64),  # constant: one bin
    ]
    for n_bins in (7, 100):
        for row in rows:
            theirs = scipy.stats.entropy(pk=np.histogram(row.numpy(), bins=n_bins)[0])
            assert abs(float(discrete_entropy(row[None], n_bins=n_bins)[0]) - theirs) < 1e-12


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_random_logit_equals_quantus(setup, name, monkeypatch):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    off = random_off_classes(targets, K, seed=3)
    assert (off != targets).all()
    assert ((off >= 0) & (off < K)).all()
    k = torch.where(off > targets, off - 1, off).numpy()  # Quantus' index into the classes without the target
    monkeypatch.setattr(np.random, "randint", lambda *args, **kwargs: k)
    metric = quantus.RandomLogit(
        num_classes=K, normalise_func_kwargs={"normalise_axes": [1, 2, 3]}, disable_warnings=True
    )
    theirs = np.asarray(call(metric, model, inputs, targets, explain), dtype=np.float64)
    monkeypatch.undo()
    ours = random_logit(explain, model, inputs, targets, seed=3)
    # skimage filters the float32 explanations in float32, ours in float64: ~1e-7 of the means. Measured 3e-8.
    np.testing.assert_allclose(ours.double().numpy(), theirs, rtol=0, atol=1e-5)
    assert (ours < 0.9).all()  # a gradient depends on the class
    score = RandomLogit(explain, seed=3)
    score.update(model, inputs, targets)
    torch.testing.assert_close(score.compute(), ours.mean())
    with pytest.raises(UndefinedForTarget, match="needs class targets, not RegressionTarget"):
        random_logit(explain, model, inputs, RegressionTarget(0))


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_efficient_mprt_equals_quantus(setup, name):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    before = snapshot(model)
    rng = torch.get_rng_state()
    ours = efficient_mprt(model, inputs, targets, explain, seed=7)
    assert torch.equal(rng, torch.get_rng_state())
    assert_untouched(before, model)  # the copy was randomised, not the model
    theirs = np.asarray(call(quantus.EfficientMPRT(seed=7, disable_warnings=True), model, inputs, targets, explain))
    # The same random model (same seeds), the same explanations; entropies of the same histograms. Measured 4e-9.
    np.testing.assert_allclose(ours.double().numpy(), theirs, rtol=0, atol=1e-6)
    assert (ours != 0).all()
    score = EfficientMPRT(seed=7)
    score.update(model, inputs, targets, explain)
    torch.testing.assert_close(score.compute(), ours.mean())


@pytest.mark.parametrize(("name", "order"), [("gradient", "bottom_up"), ("signed_gradient", "top_down")])
def test_smooth_mprt_equals_quantus(setup, name, order, monkeypatch):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    n = 4
    noise = smooth_mprt_noise(tuple(inputs.shape[1:]), n, seed=0).numpy()  # [n-1,C,H,W]
    calls = [0]

    def randn(*shape: int) -> np.ndarray:  # Quantus: one draw per noisy sample, for each model in turn
        draw = np.broadcast_to(noise[calls[0] % (n - 1)][None], shape).astype(np.float64)
        calls[0] += 1
        return draw

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(quantus, "explain", numpy_explain(explain))
    metric = quantus.SmoothMPRT(nr_samples=n, layer_order=order, seed=0, disable_warnings=True)
    theirs = call(metric, model, inputs, targets, explain)
    monkeypatch.undo()
    layers = [layer for layer, _ in randomised_models(model, order, seed=0)]
    assert list(theirs) == ["original", *layers]  # the same layers in the same order (BatchNorm included)
    before = snapshot(model)
    ours = smooth_mprt(model, inputs, targets, explain, layer_order=order, n_samples=n, seed=0, batch_size=B)
    assert_untouched(before, model)
    assert ours.shape == (len(layers), B)
    # Noisy inputs differ in the last bit (Quantus adds float64 noise, ours float32), so a rank may swap between
    # near-equal pixels of the smoothed maps; measured 1.3e-8.
    np.testing.assert_allclose(ours.double().numpy(), np.array([theirs[layer] for layer in layers]), atol=1e-4)
    assert (ours[-1].abs() < 0.9).all()  # every layer random: the maps decorrelate
    mean, last = (
        SmoothMPRT(n_samples=n, layer_order=order, batch_size=B),
        SmoothMPRT(reduction="last", n_samples=n, layer_order=order, batch_size=B),
    )
    mean.update(model, inputs, targets, explain)
    last.update(model, inputs, targets, explain)
    torch.testing.assert_close(mean.compute(), ours.mean(0).mean())
    torch.testing.assert_close(last.compute(), ours[-1].mean())


def test_bad_arguments_name_the_argument_and_the_value(setup):
    model, inputs, targets = setup
    with pytest.raises(ValueError, match="order must be 'bottom_up' or 'top_down', got 'sideways'"):
        smooth_mprt(model, inputs, targets, Gradient(), layer_order="sideways", n_samples=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"noise_magnitude must be a float >= 0, got -0\.1"):
        smooth_mprt(model, inputs, targets, Gradient(), noise_magnitude=-0.1)
    with pytest.raises(ValueError, match="n_samples must be an int >= 1, got 0"):
        smooth_mprt(model, inputs, targets, Gradient(), n_samples=0)
    with pytest.raises(ValueError, match="n_bins must be an int >= 1, got 0"):
        efficient_mprt(model, inputs, targets, Gradient(), n_bins=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        random_logit(Gradient(), model, inputs, targets, num_classes=1)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'last', got 'max'"):
        SmoothMPRT(reduction="max")
    with pytest.raises(ValueError, match="no module with reset_parameters"):
        efficient_mprt(nn.Sequential(nn.Flatten(), nn.Softmax(1)), inputs, targets, lambda m, x, t: x)
