"""Faithfulness Correlation, Faithfulness Estimate, Monotonicity, Monotonicity Correlation and Pixel-Flipping against
Quantus 0.6 on the same inputs (a seeded CNN, 4 images 3x16x16, signed attributions ``[B, 1, H, W]``).

Both sides get the same order of tied features (numpy's ``argsort`` is made stable, as ours) and the same random
draws: Quantus' ``np.random.choice`` (Faithfulness Correlation's subsets) and ``np.random.uniform`` (the
``"uniform"`` baseline) are replaced by functions returning ours, one value per perturbation shared by the images
(the replacement records the bounds Quantus asks for, which the tests check).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import make_tiny_cnn
from torch import nn

from lightning_saliency import metrics
from lightning_saliency.metrics import functional as F
from lightning_saliency.metrics.functional.faithfulness import _fill, _generator
from lightning_saliency.targets import ClassTarget, RegressionTarget, SegmentationTarget

quantus = pytest.importorskip("quantus")

B, SIZE = 4, 16
FEATURES = 3 * SIZE * SIZE
TOL = {"rtol": 0.0, "atol": 1e-5}


@pytest.fixture(scope="module")
def setup():
    model = make_tiny_cnn().eval()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(B, 3, SIZE, SIZE, generator=generator)
    y = torch.tensor([0, 1, 2, 3])
    a = torch.randn(B, 1, SIZE, SIZE, generator=generator)  # signed: `abs` matters
    return model, x, y, a


class Draws:
    """Quantus' numpy draws replaced by queued values; ``bounds`` records what ``np.random.uniform`` was asked."""

    def __init__(self) -> None:
        self.uniform: list[float] | None = None
        self.choice: list[np.ndarray] = []
        self.bounds: set[tuple[float, float]] = set()

    def draw_uniform(self, low=0.0, high=1.0, size=None):
        if self.uniform is None:  # Quantus draws one per perturbation for every baseline: unused but for "uniform"
            return np.zeros(size)
        self.bounds.add((low, high))
        return np.full(size, self.uniform.pop(0))

    def draw_choice(self, n, size, replace=True):
        assert (n, size, replace) == (FEATURES, len(self.choice[0]), False)
        return self.choice.pop(0)


@pytest.fixture
def draws(monkeypatch) -> Draws:
    queued = Draws()
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, axis=-1, kind=None, order=None: argsort(a, axis=axis, kind="stable"))
    monkeypatch.setattr(np.random, "uniform", queued.draw_uniform)
    monkeypatch.setattr(np.random, "choice", queued.draw_choice)
    return queued


def _ours_uniform(x, calls, low=0.0, high=1.0, seed=0, perms=0) -> list[float]:
    """Our ``"uniform"`` draws (after ``perms`` subsets, which Faithfulness Correlation draws first)."""
    generator = _generator(seed)
    for _ in range(perms):
        torch.randperm(FEATURES, generator=generator)
    return _fill(x.flatten(1), "uniform", calls, (low, high), generator)[0].tolist()


def _quantus(metric, setup, **call) -> np.ndarray:
    model, x, y, a = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu", **call)
    return np.asarray(out, dtype=np.float64)


def _close(ours: torch.Tensor, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours.double().numpy(), theirs, **TOL)


SPEARMAN = {"similarity_func": quantus.similarity_func.correlation_spearman}
PEARSON = {"similarity_func": quantus.similarity_func.correlation_pearson}


@pytest.mark.parametrize(
    ("ours", "theirs", "call"),
    [
        ({}, {}, {}),  # the defaults: 100 runs of 224 features, black, logits
        (
            {"perturb_baseline": "white", "absolute": True, "softmax": True},
            {"perturb_baseline": "white", "abs": True},
            {"softmax": True},
        ),
        (
            {"perturb_baseline": 0.25, "similarity": "spearman"},
            {"perturb_baseline": 0.25, "normalise": False, **SPEARMAN},
            {},
        ),
        (
            {"perturb_baseline": "uniform", "subset_size": 100, "nr_runs": 30, "uniform_range": (-1.0, 2.0)},
            {
                "perturb_baseline": "uniform",
                "subset_size": 100,
                "nr_runs": 30,
                "perturb_func_kwargs": {"uniform_low": -1.0, "uniform_high": 2.0},
            },
            {},
        ),
    ],
)
def test_faithfulness_correlation_equals_quantus(setup, draws, ours, theirs, call):
    model, x, y, a = setup
    runs, size = ours.get("nr_runs", 100), ours.get("subset_size", 224)
    got = F.faithfulness_correlation(model, x, y, a, **ours)
    draws.choice = [s.numpy() for s in F.faithfulness_correlation_subsets(FEATURES, size, runs) for _ in range(B)]
    if ours.get("perturb_baseline") == "uniform":
        draws.uniform = _ours_uniform(x, runs, -1.0, 2.0, perms=runs)
    want = _quantus(
        quantus.FaithfulnessCorrelation(disable_warnings=True, return_aggregate=False, **theirs), setup, **call
    )
    _close(got, want)
    assert not draws.choice, "Quantus drew as many subsets as we did"
    assert draws.bounds <= {(-1.0, 2.0)}
    assert np.abs(want).max() > 0.05  # a real correlation, not a degenerate 0


@pytest.mark.parametrize(
    ("ours", "theirs", "call"),
    [
        ({}, {}, {}),  # the defaults: one feature per step (768 steps), black, logits, Pearson
        # (numpy's float32 mean and torch's differ in the last bit; 64 features per step keep the deltas well above it)
        (
            {"features_in_step": 64, "perturb_baseline": "mean", "absolute": True, "softmax": True},
            {"features_in_step": 64, "perturb_baseline": "mean", "abs": True},
            {"softmax": True},
        ),
        (
            {"features_in_step": 16, "perturb_baseline": "uniform", "similarity": "spearman"},
            {"features_in_step": 16, "perturb_baseline": "uniform", **SPEARMAN},
            {},
        ),
    ],
)
def test_faithfulness_estimate_equals_quantus(setup, draws, ours, theirs, call):
    model, x, y, a = setup
    got = F.faithfulness_estimate(model, x, y, a, **ours)
    if ours.get("perturb_baseline") == "uniform":
        draws.uniform = _ours_uniform(x, FEATURES // 16)
    want = _quantus(quantus.FaithfulnessEstimate(disable_warnings=True, **theirs), setup, **call)
    _close(got, want)
    assert np.abs(want).max() > 0.05


@pytest.mark.parametrize(
    ("ours", "theirs", "call"),
    [
        ({}, {}, {}),  # the defaults: one feature per step, black, probabilities
        ({"features_in_step": 8, "perturb_baseline": "mean"}, {"features_in_step": 8, "perturb_baseline": "mean"}, {}),
        (
            {"features_in_step": 16, "perturb_baseline": "uniform", "absolute": True, "softmax": False},
            {"features_in_step": 16, "perturb_baseline": "uniform", "abs": True},
            {"softmax": False},
        ),
        (
            {"features_in_step": 64, "perturb_baseline": "white"},
            {"features_in_step": 64, "perturb_baseline": "white"},
            {},
        ),
    ],
)
def test_pixel_flipping_curves_and_auc_equal_quantus(setup, draws, ours, theirs, call):
    model, x, y, a = setup
    steps = FEATURES // ours.get("features_in_step", 1)
    curves = F.pixel_flipping_curve(model, x, y, a, **ours)
    assert curves.shape == (B, steps)
    if ours.get("perturb_baseline") == "uniform":
        draws.uniform = _ours_uniform(x, steps)
    want = _quantus(quantus.PixelFlipping(disable_warnings=True, **theirs), setup, **call)
    _close(curves, want)
    # Quantus' return_auc_per_sample=True calls np.trapz(curves, dx=1), which numpy 2 removed: its formula here.
    _close(F.pixel_flipping(model, x, y, a, **ours), np.trapezoid(want, dx=1, axis=1))
    assert curves[:, 0].ne(curves[:, -1]).all()  # the curves move


@pytest.mark.parametrize(
    ("ours", "theirs", "call"),
    [
        ({"features_in_step": 16, "nr_samples": 3}, {"features_in_step": 16, "nr_samples": 3}, {}),  # uniform, Spearman
        (
            {
                "features_in_step": 8,
                "nr_samples": 1,
                "perturb_baseline": "black",
                "similarity": "pearson",
                "absolute": False,
                "softmax": False,
            },
            {"features_in_step": 8, "nr_samples": 1, "perturb_baseline": "black", "abs": False, **PEARSON},
            {"softmax": False},
        ),
        (
            {"features_in_step": 32, "nr_samples": 5, "uniform_range": (0.2, 0.4), "eps": 0.01},
            {
                "features_in_step": 32,
                "nr_samples": 5,
                "eps": 0.01,
                "perturb_func_kwargs": {"uniform_low": 0.2, "uniform_high": 0.4},
            },
            {},
        ),
    ],
)
def test_monotonicity_correlation_equals_quantus(setup, draws, ours, theirs, call):
    model, x, y, a = setup
    got = F.monotonicity_correlation(model, x, y, a, **ours)
    if ours.get("perturb_baseline", "uniform") == "uniform":
        low, high = ours.get("uniform_range", (0.0, 1.0))
        draws.uniform = _ours_uniform(x, FEATURES // ours["features_in_step"] * ours["nr_samples"], low, high)
    want = _quantus(quantus.MonotonicityCorrelation(disable_warnings=True, **theirs), setup, **call)
    _close(got, want)
    assert draws.bounds <= {ours.get("uniform_range", (0.0, 1.0))}
    assert np.abs(want).max() > 0.05


def _inserting(x: torch.Tensor):
    """A Quantus ``perturb_func`` that inserts the input's features (what Quantus' own default fails to do)."""
    flat = x.flatten(1).numpy()

    def insert(arr, indices, **kwargs):
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = flat[rows, indices]
        return out

    return insert


@pytest.mark.parametrize(
    ("ours", "theirs", "call"),
    [
        ({"features_in_step": 64}, {"features_in_step": 64}, {}),  # black, abs, probabilities
        (
            {"features_in_step": 256, "perturb_baseline": "mean", "softmax": False},
            {"features_in_step": 256, "perturb_baseline": "mean"},
            {"softmax": False},
        ),
        (
            {"features_in_step": 128, "perturb_baseline": 0.5, "absolute": False},
            {"features_in_step": 128, "perturb_baseline": 0.5, "abs": False},
            {},
        ),
        (
            {"features_in_step": 64, "perturb_baseline": "uniform"},
            {"features_in_step": 64, "perturb_baseline": "uniform"},
            {},
        ),
    ],
)
def test_monotonicity_equals_quantus_with_features_inserted(setup, draws, ours, theirs, call):
    model, x, y, a = setup
    got = F.monotonicity(model, x, y, a, **ours)
    if ours.get("perturb_baseline") == "uniform":
        draws.uniform = _ours_uniform(x, 1)  # one baseline image
    want = _quantus(quantus.Monotonicity(disable_warnings=True, perturb_func=_inserting(x), **theirs), setup, **call)
    _close(got, want)


def test_monotonicity_sees_both_outcomes_as_quantus_and_where_quantus_never_changes_the_input(draws):
    """A linear model from a zero baseline: each inserted feature moves class 0's logit by ``w * x``, so the
    probability never falls for images whose features all push it up (0, 1), and falls somewhere for the others."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    with torch.no_grad():
        model[1].weight[0].uniform_(0.1, 1.0, generator=torch.Generator().manual_seed(0))
        model[1].weight[1].zero_()
    x = torch.rand(B, 3, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    x[2:, 0, 0, :2] *= -1  # two features of images 2 and 3 push the class down
    y = torch.zeros(B, dtype=torch.long)
    a = torch.rand(B, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    got = F.monotonicity(model, x, y, a, perturb_baseline=0.0)
    assert got.tolist() == [1.0, 1.0, 0.0, 0.0]
    setup = (model, x, y, a)
    kwargs = {"perturb_baseline": 0.0, "disable_warnings": True}
    _close(got, _quantus(quantus.Monotonicity(perturb_func=_inserting(x), **kwargs), setup))
    # Quantus 0.6's default perturb_func sets the "inserted" features to the baseline: the input never changes and
    # every explanation is monotonic.
    assert _quantus(quantus.Monotonicity(**kwargs), setup).tolist() == [1.0] * B


def test_scores_do_not_depend_on_the_batch_or_the_chunks(setup):
    model, x, y, a = setup
    for fn, kwargs in (
        (F.faithfulness_correlation, {"nr_runs": 20, "perturb_baseline": "uniform"}),
        (F.monotonicity_correlation, {"nr_samples": 2, "features_in_step": 64}),
        (F.pixel_flipping, {"features_in_step": 32, "perturb_baseline": "uniform"}),
    ):
        whole = fn(model, x, y, a, **kwargs)
        alone = fn(model, x[1:2], y[1:2], a[1:2], batch_size=3, **kwargs)
        torch.testing.assert_close(alone, whole[1:2], rtol=0, atol=1e-6)
        other_seed = fn(model, x, y, a, seed=1, **kwargs)
        assert not torch.allclose(other_seed, whole), fn.__name__  # the seed draws the perturbations


def test_targets_other_than_classes(setup):
    model, x, _, a = setup
    k = torch.full((B,), 2)
    # A regression target on column 2 reads the same number as class 2's logit (softmax=False).
    torch.testing.assert_close(
        F.faithfulness_estimate(model, x, RegressionTarget(2), a, features_in_step=32),
        F.faithfulness_estimate(model, x, ClassTarget(k), a, features_in_step=32),
    )
    with pytest.raises(ValueError, match="no confidence"):
        F.pixel_flipping(model, x, RegressionTarget(2), a, features_in_step=32)  # softmax=True needs a probability

    class Dense(nn.Module):
        def forward(self, inputs):
            return torch.stack([inputs[:, 0], inputs[:, 1] * 2, inputs[:, 2]], 1) * 4  # [B,3,H,W] "segmentation"

    mask = torch.zeros(B, SIZE, SIZE, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    curves = F.pixel_flipping_curve(Dense(), x, SegmentationTarget(1, mask), a, features_in_step=64)
    assert curves.shape == (B, FEATURES // 64)
    assert torch.isfinite(curves).all()


def test_metric_classes_average_the_functionals(setup):
    model, x, y, a = setup
    cases = [
        (metrics.FaithfulnessCorrelation, F.faithfulness_correlation, {"nr_runs": 10}),
        (metrics.FaithfulnessEstimate, F.faithfulness_estimate, {"features_in_step": 64}),
        (metrics.Monotonicity, F.monotonicity, {"features_in_step": 256}),
        (metrics.MonotonicityCorrelation, F.monotonicity_correlation, {"features_in_step": 64, "nr_samples": 2}),
        (metrics.PixelFlipping, F.pixel_flipping, {"features_in_step": 64}),
    ]
    for cls, fn, options in cases:
        metric = cls(**options)
        metric.update(model, x[:2], y[:2], a[:2])
        metric.update(model, x[2:], y[2:], a[2:])
        torch.testing.assert_close(metric.compute(), fn(model, x, y, a, **options).mean(), rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match=r"unknown options \['nr_run'\]"):
        metrics.FaithfulnessCorrelation(nr_run=3)


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"),
    [
        (F.faithfulness_correlation, {"subset_size": 768}, r"subset_size must be an int in \[1, 767\].*got 768"),
        (F.faithfulness_correlation, {"nr_runs": 0}, "nr_runs must be an int >= 1, got 0"),
        (
            F.faithfulness_correlation,
            {"similarity": "kendall"},
            "similarity must be 'pearson' or 'spearman', got 'kendall'",
        ),
        (F.faithfulness_estimate, {"features_in_step": 0}, "features_in_step must be an int >= 1, got 0"),
        (
            F.faithfulness_estimate,
            {"perturb_baseline": "random"},
            "perturb_baseline must be one of .*'uniform' or a number, got 'random'",
        ),
        (F.pixel_flipping, {"perturb_baseline": float("nan")}, "perturb_baseline must be a finite number, got nan"),
        (F.pixel_flipping, {"uniform_range": (1.0, 0.0)}, r"uniform_range must have low <= high, got \(1.0, 0.0\)"),
        (F.pixel_flipping, {"absolute": 1}, "absolute must be a bool, got 1"),
        (F.monotonicity, {"softmax": "yes"}, "softmax must be a bool, got 'yes'"),
        (F.monotonicity, {"batch_size": 0}, "batch_size must be a positive int"),
        (F.monotonicity_correlation, {"eps": -1.0}, "eps must be a float >= 0, got -1.0"),
        (F.monotonicity_correlation, {"nr_samples": 1.5}, "nr_samples must be an int >= 1, got 1.5"),
        (F.monotonicity_correlation, {"seed": "0"}, "seed must be an int, got '0'"),
    ],
)
def test_bad_arguments_are_named(setup, fn, kwargs, message):
    model, x, y, a = setup
    with pytest.raises(ValueError, match=message):
        fn(model, x, y, a, **kwargs)


def test_bad_attributions_are_named(setup):
    model, x, y, a = setup
    with pytest.raises(
        ValueError, match=r"attributions must be a Tensor \[B, 1 or C, H, W\].*got shape \(4, 2, 16, 16\)"
    ):
        F.pixel_flipping(model, x, y, torch.rand(B, 2, SIZE, SIZE))
    with pytest.raises(ValueError, match="attributions must be finite"):
        F.pixel_flipping(model, x, y, torch.full((B, 1, SIZE, SIZE), float("nan")))
    per_channel = a.expand(B, 3, SIZE, SIZE)  # [B, C, H, W] attributions are taken as they are
    torch.testing.assert_close(
        F.faithfulness_estimate(model, x, y, per_channel, features_in_step=64),
        F.faithfulness_estimate(model, x, y, a[:, 0], features_in_step=64),  # [B, H, W] too
    )


def test_a_constant_map_scores_zero_not_nan(setup):
    model, x, y, _ = setup
    flat = torch.ones(B, 1, SIZE, SIZE)
    for fn in (F.faithfulness_correlation, F.faithfulness_estimate, F.monotonicity_correlation):
        kwargs = {"nr_samples": 1, "features_in_step": 64} if fn is F.monotonicity_correlation else {}
        if fn is F.faithfulness_estimate:
            kwargs = {"features_in_step": 64}
        assert fn(model, x, y, flat, **kwargs).tolist() == [0.0] * B
