"""Quantus 0.6's robustness metrics equal ours on identical perturbations and explanations.

Both sides draw random perturbations, so Quantus gets a ``perturb_func`` that replays our seeded draws (one draw
per call, each shared by the batch, as ours), and an ``explain_func`` that calls our explanation. Quantus'
default ``normalise_by_max`` divides by the batch's largest value; ours divides each explanation by its own, which
is Quantus with ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}``. Ours run with ``batch_size = B`` so that
each explanation comes from a batch of the same size as Quantus' (see ``_tolerance.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_saliency import SaliencyWarning
from lightning_saliency.methods import Gradient
from lightning_saliency.metrics import (
    AvgSensitivity,
    Continuity,
    LocalLipschitzEstimate,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    avg_sensitivity,
    continuity,
    local_lipschitz_estimate,
    relative_stability,
    sensitivity_max,
)
from lightning_saliency.metrics.functional._perturbed import _uniform_perturbations
from lightning_saliency.metrics.functional.robustness import infidelity_perturbations, sensitivity_perturbations
from lightning_saliency.metrics.functional.stability import hidden_layers, translations

quantus = pytest.importorskip("quantus")

B, N = 4, 5
PER_IMAGE = {"normalise_axes": [1, 2, 3]}


def signed_gradient(model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """The raw, signed input gradient of the target logit ``[B, C, H, W]`` (exercises normalisation and abs)."""
    x = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(model(x).gather(1, t.view(-1, 1)).sum(), x)
    return grad


EXPLAINERS = {"gradient": Gradient(), "signed_gradient": signed_gradient}


@pytest.fixture
def setup(make_cnn, make_batch):
    inputs, targets = make_batch(batch=B, height=16, width=16)
    return make_cnn().eval(), inputs, targets


class Replay:
    """A Quantus ``perturb_func`` returning ``arr + deltas[k]`` at its ``k``-th call (float32, as our inputs)."""

    def __init__(self, deltas: Tensor) -> None:
        self.deltas, self.calls = deltas.numpy(), 0

    def __call__(self, arr: np.ndarray, indices: np.ndarray, **kwargs: object) -> np.ndarray:
        delta = self.deltas[self.calls].reshape(1, -1)
        self.calls += 1
        return (arr + delta).astype(np.float32)


def quantus_scores(metric: object, model: nn.Module, inputs: Tensor, targets: Tensor, explain: object) -> np.ndarray:
    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs: object) -> np.ndarray:
        x, t = torch.as_tensor(inputs).float(), torch.as_tensor(targets)
        return explain(model, x, t).detach().numpy()  # type: ignore[operator]

    scores = metric(  # type: ignore[operator]
        model=model, x_batch=inputs.numpy(), y_batch=targets.numpy(), explain_func=explain_func, device="cpu",
        batch_size=B,
    )  # fmt: skip
    return np.asarray(scores, dtype=np.float64)


def assert_equal_scores(ours: Tensor, theirs: np.ndarray, rtol: float = 1e-5) -> None:
    # The same explanations of the same float32 inputs, in batches of the same size; left: float32 norms of
    # ~768 terms and a division (a few ulps) -- measured at most 2e-7 relative. rtol 1e-5.
    assert ours.dtype == torch.float32
    assert ours.shape == (B,)
    assert np.isfinite(theirs).all()
    assert (ours > 0).all()
    np.testing.assert_allclose(ours.double().numpy(), theirs, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_local_lipschitz_estimate_equals_quantus(setup, name):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    noise = infidelity_perturbations(tuple(inputs.shape[1:]), N, 0.1, seed=3)  # N(0, 0.1^2), our draws
    metric = quantus.LocalLipschitzEstimate(
        nr_samples=N, perturb_func=Replay(noise), normalise_func_kwargs=PER_IMAGE, disable_warnings=True
    )
    theirs = quantus_scores(metric, model, inputs, targets, explain)
    ours = local_lipschitz_estimate(explain, model, inputs, targets, n_samples=N, seed=3, batch_size=B)
    assert_equal_scores(ours, theirs)
    other = local_lipschitz_estimate(explain, model, inputs, targets, n_samples=N, seed=4, batch_size=B)
    assert not torch.equal(other, ours)  # the seed matters
    score = LocalLipschitzEstimate(explain, n_samples=N, seed=3, batch_size=B)
    score.update(model, inputs, targets)
    torch.testing.assert_close(score.compute(), ours.mean())


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
@pytest.mark.parametrize("upper_bound", [None, 0.3])
def test_avg_sensitivity_equals_quantus(setup, name, upper_bound):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    shape = tuple(inputs.shape[1:])
    if upper_bound is None:  # U(-0.2, 0.2): the draws of sensitivity_max
        deltas = sensitivity_perturbations(shape, N, 0.2, seed=1)
    else:
        deltas = _uniform_perturbations(shape, N, 0.2, upper_bound, seed=1)
    metric = quantus.AvgSensitivity(
        nr_samples=N, perturb_func=Replay(deltas), upper_bound=upper_bound, disable_warnings=True
    )
    theirs = quantus_scores(metric, model, inputs, targets, explain)
    ours = avg_sensitivity(explain, model, inputs, targets, n_samples=N, upper_bound=upper_bound, seed=1, batch_size=B)
    assert_equal_scores(ours, theirs)
    if upper_bound is None:  # sensitivity_max on the same draws (radius 0.2) is the maximum where this is the mean
        most = sensitivity_max(explain, model, inputs, targets, perturb_radius=0.2, n_perturb_samples=N, seed=1)
        assert (most >= ours).all()
        assert (most > ours).any()
    score = AvgSensitivity(explain, n_samples=N, upper_bound=upper_bound, seed=1, batch_size=B)
    score.update(model, inputs, targets)
    torch.testing.assert_close(score.compute(), ours.mean())


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
def test_continuity_equals_quantus(setup, name):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    metric = quantus.Continuity(normalise_func_kwargs=PER_IMAGE, disable_warnings=True)  # 28 shifts, no randomness
    theirs = quantus_scores(metric, model, inputs, targets, explain)
    ours = continuity(explain, model, inputs, targets, batch_size=B)
    assert_equal_scores(ours, theirs)
    assert translations(16, 28) == list(range(-15, 13))  # dx = 33 // 28 = 1, starting at -16 + 1
    score = Continuity(explain, batch_size=B)
    score.update(model, inputs, targets)
    torch.testing.assert_close(score.compute(), ours.mean())


STABILITIES = {
    "input": (quantus.RelativeInputStability, RelativeInputStability),
    "output": (quantus.RelativeOutputStability, RelativeOutputStability),
    "representation": (quantus.RelativeRepresentationStability, RelativeRepresentationStability),
}


@pytest.mark.parametrize("name", sorted(EXPLAINERS))
@pytest.mark.parametrize("of", sorted(STABILITIES))
def test_relative_stabilities_equal_quantus(setup, name, of):
    model, inputs, targets = setup
    explain = EXPLAINERS[name]
    deltas = _uniform_perturbations(tuple(inputs.shape[1:]), N, 0.02, 0.2, seed=2)  # U(0.02, 0.2): Quantus' default
    theirs_class, ours_class = STABILITIES[of]
    metric = theirs_class(nr_samples=N, perturb_func=Replay(deltas), disable_warnings=True)
    theirs = quantus_scores(metric, model, inputs, targets, explain)
    ours = relative_stability(explain, model, inputs, targets, of=of, n_samples=N, seed=2, batch_size=B)
    # Divisions by eps_min = 1e-6 where a map or an activation is exactly 0 make the values large (up to 1e8) but
    # the same on both sides; float32 relative rounding as above.
    assert_equal_scores(ours, theirs)
    score = ours_class(explain, n_samples=N, seed=2, batch_size=B)
    score.update(model, inputs, targets)
    torch.testing.assert_close(score.compute(), ours.mean())
    with pytest.raises(ValueError, match="is of="):
        ours_class(explain, of="input")


def test_representation_layers_and_hooks(setup):
    model, inputs, targets = setup
    deltas = _uniform_perturbations(tuple(inputs.shape[1:]), N, 0.02, 0.2, seed=2)
    metric = quantus.RelativeRepresentationStability(
        nr_samples=N, perturb_func=Replay(deltas), layer_names=["features.4", "head.2"], disable_warnings=True
    )
    theirs = quantus_scores(metric, model, inputs, targets, Gradient())
    layers = ["features.4", "head.2"]
    ours = relative_stability(
        Gradient(), model, inputs, targets, of="representation", layers=layers, n_samples=N, seed=2, batch_size=B
    )
    assert_equal_scores(ours, theirs)
    assert "features.0" in hidden_layers(model)
    assert "features" not in hidden_layers(model)
    assert all(not m._forward_hooks for m in model.modules())  # removed
    with pytest.raises(ValueError, match=r"layers must be None or names of the model's modules.*'nope'"):
        relative_stability(Gradient(), model, inputs, targets, of="representation", layers=["nope"], n_samples=1)
    with pytest.raises(ValueError, match="of must be 'input', 'output' or 'representation', got 'logits'"):
        relative_stability(Gradient(), model, inputs, targets, of="logits", n_samples=1)  # type: ignore[arg-type]


def test_perturbations_that_change_the_prediction_are_left_out(setup):
    _, inputs, targets = setup
    torch.manual_seed(0)  # an MLP whose prediction flips under U(-0.3, 0.3) for two of the four images
    model = nn.Sequential(nn.Flatten(), nn.Linear(768, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    targets = targets % 3
    n = 6
    deltas = _uniform_perturbations(tuple(inputs.shape[1:]), n, -0.3, 0.3, seed=0)
    kw = {"n_samples": n, "lower_bound": 0.3, "upper_bound": None, "seed": 0, "batch_size": B}
    every = relative_stability(Gradient(), model, inputs, targets, drop_changed=False, **kw)
    theirs_every = quantus_scores(
        quantus.RelativeInputStability(
            nr_samples=n, perturb_func=Replay(deltas), return_nan_when_prediction_changes=False, disable_warnings=True
        ),
        model, inputs, targets, Gradient(),
    )  # fmt: skip
    assert_equal_scores(every, theirs_every)
    theirs = quantus_scores(
        quantus.RelativeInputStability(nr_samples=n, perturb_func=Replay(deltas), disable_warnings=True),
        model, inputs, targets, Gradient(),
    )  # fmt: skip
    assert np.isnan(theirs).any(), theirs  # the case this test is about
    assert np.isfinite(theirs).any(), theirs
    kept = relative_stability(Gradient(), model, inputs, targets, **kw)  # drop_changed=True by default
    finite = np.isfinite(theirs)
    # Where no perturbation changed the prediction Quantus agrees; elsewhere it gives NaN, ours the max over the
    # perturbations that kept it (at most the max over all of them).
    np.testing.assert_allclose(kept.double().numpy()[finite], theirs[finite], rtol=1e-5)
    assert torch.isfinite(kept).all()
    assert (kept <= every).all()
    assert (kept < every).any()


def test_every_perturbation_changing_the_prediction_falls_back_with_a_warning(setup):
    _, inputs, targets = setup
    model = nn.Sequential(nn.Flatten(), nn.Linear(768, 2))  # class 1 for inputs of mean < 1, else class 0
    targets = torch.ones_like(targets)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1 / 768
        model[1].bias.copy_(torch.tensor([0.0, 1.0]))
    kw = {"n_samples": 2, "lower_bound": 50.0, "upper_bound": 60.0, "batch_size": B}
    with pytest.warns(SaliencyWarning, match=r"every perturbation changed the prediction of image\(s\) \[0, 1, 2"):
        fallback = relative_stability(Gradient(), model, inputs, targets, **kw)
    torch.testing.assert_close(
        fallback, relative_stability(Gradient(), model, inputs, targets, drop_changed=False, **kw)
    )


def test_scores_are_batch_independent_and_leave_the_rng_alone(setup):
    model, inputs, targets = setup
    rng = torch.get_rng_state()
    whole = avg_sensitivity(Gradient(), model, inputs, targets, n_samples=3, batch_size=5)
    assert torch.equal(rng, torch.get_rng_state())
    part = avg_sensitivity(Gradient(), model, inputs[2:], targets[2:], n_samples=3, batch_size=5)
    torch.testing.assert_close(part, whole[2:], rtol=1e-5, atol=1e-6)


def test_bad_arguments_name_the_argument_and_the_value(setup):
    model, inputs, targets = setup
    with pytest.raises(ValueError, match="n_samples must be an int >= 1, got 0"):
        local_lipschitz_estimate(Gradient(), model, inputs, targets, n_samples=0)
    with pytest.raises(ValueError, match="perturb_std must be a float >= 0, got -1"):
        local_lipschitz_estimate(Gradient(), model, inputs, targets, perturb_std=-1)
    with pytest.raises(ValueError, match=r"upper_bound must be None or a float > lower_bound \(0.2\), got 0.1"):
        avg_sensitivity(Gradient(), model, inputs, targets, upper_bound=0.1)
    with pytest.raises(ValueError, match=r"n_steps must be an int in \[1, 2W \+ 1\] = \[1, 33\], got 40"):
        continuity(Gradient(), model, inputs, targets, n_steps=40)
    with pytest.raises(ValueError, match="eps_min must be a float > 0, got 0"):
        relative_stability(Gradient(), model, inputs, targets, eps_min=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        relative_stability(Gradient(), model, inputs, targets, batch_size=0)
    with pytest.raises(TypeError, match="explain must be a SaliencyMethod or a callable, got str"):
        LocalLipschitzEstimate("gradient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="explain must return a Tensor"):
        avg_sensitivity(lambda m, x, t: 3, model, inputs, targets, n_samples=1)


class _Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


class _TupleNet(nn.Module):
    """A model with a layer returning a tuple (as attention modules do)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.pair, self.head = nn.Conv2d(3, 4, 3, padding=1), _Pair(), nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.pair(torch.relu(self.conv(x)))
        return self.head(features.flatten(1))


def test_representation_leaves_out_non_tensor_outputs_by_default_and_refuses_them_by_name(setup):
    _, inputs, targets = setup
    model = _TupleNet().eval()
    kw = {"of": "representation", "n_samples": 2, "batch_size": B, "drop_changed": False}
    default = relative_stability(Gradient(), model, inputs, targets, **kw)
    conv_head = relative_stability(Gradient(), model, inputs, targets, layers=["conv", "head"], **kw)
    torch.testing.assert_close(default, conv_head)  # "pair" is left out of the default layers
    with pytest.raises(TypeError, match=r"layer 'pair' returns tuple, not a Tensor \[N=4, \.\.\.\]"):
        relative_stability(Gradient(), model, inputs, targets, layers=["pair"], **kw)
    assert all(not m._forward_hooks for m in model.modules())  # removed, also after the error
