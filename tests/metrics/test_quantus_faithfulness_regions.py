"""Region Perturbation, Selectivity, IROF, Sensitivity-N and Sufficiency equal Quantus 0.6 on the same inputs.

A small seeded CNN, four 3-channel images; each of our functions against ``quantus.<Metric>(...)(model=...,
x_batch=..., y_batch=..., a_batch=..., device="cpu")`` with default and non-default arguments; then the
arguments' checks, the torchmetrics classes and the registry entries.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _quantus_names import ours as quantus_names
from torch import nn

from lightning_saliency.metrics import IROF, RegionPerturbation, Selectivity, SensitivityN, Sufficiency
from lightning_saliency.metrics.functional import (
    curve_auc,
    irof,
    region_perturbation,
    selectivity,
    sensitivity_n,
    slic_segments,
    sufficiency,
)
from lightning_saliency.metrics.functional.faithfulness_regions import _check_segments

quantus = pytest.importorskip("quantus")
from quantus.functions.perturb_func import baseline_replacement_by_mask  # noqa: E402

ATOL = 2e-6


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    ).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_model()


def batch(size: int = 16, channels_in_map: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, size, size, generator=g) * 2 - 1  # normalised-looking inputs, negative values too
    a = torch.randn(4, channels_in_map, size, size, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    return x, y, a


def q(metric, model, x, y, a, **kwargs):
    """Quantus on numpy copies, warnings off."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu", **kwargs)


@pytest.fixture(autouse=True)
def _numpy_trapz(monkeypatch):
    """Quantus 0.6 calls ``np.trapz``, which numpy 2.4 removed (``np.trapezoid`` is the same rule)."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (16, {}),  # Quantus' defaults: patch 8, MoRF, 100 regions, black
        (20, {"patch_size": 8}),  # padded to 24 (2 rows/columns before, 2 after)
        (16, {"patch_size": 4, "order": "lerf", "regions_evaluation": 7}),
        (18, {"patch_size": 4, "perturb_baseline": "mean"}),  # the running mean of the edge-padded image
        (16, {"patch_size": 4, "perturb_baseline": "white", "abs": True}),
        (16, {"patch_size": 2, "perturb_baseline": 0.25, "regions_evaluation": 30}),
    ],
)
def test_region_perturbation_equals_quantus(model, size, kwargs):
    x, y, a = batch(size)
    theirs = np.asarray(q(quantus.RegionPerturbation(disable_warnings=True, **kwargs), model, x, y, a))
    ours = region_perturbation(model, x, y, a, **quantus_names(kwargs))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.numpy(), theirs, atol=ATOL, rtol=0)


def test_region_perturbation_with_per_channel_attributions_and_quantus_auc(model):
    x, y, a = batch(16, channels_in_map=3)
    metric = quantus.RegionPerturbation(patch_size=4, disable_warnings=True)
    theirs = np.asarray(q(metric, model, x, y, a))
    ours = region_perturbation(model, x, y, a, patch_size=4)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=ATOL, rtol=0)
    k = ours.shape[1]
    assert metric.get_auc_score == pytest.approx(float(curve_auc(ours).mean()) * (k - 1), abs=1e-5)
    # the class: the mean over images of curve_auc
    m = RegionPerturbation(patch_size=4)
    m.update(model, x, y, a)
    torch.testing.assert_close(m.compute(), curve_auc(ours).mean())


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (16, {}),
        (20, {"patch_size": 8}),
        (16, {"patch_size": 4, "perturb_baseline": "mean"}),
        (18, {"patch_size": 4, "perturb_baseline": "white", "abs": True}),
    ],
)
def test_selectivity_equals_quantus(model, size, kwargs):
    x, y, a = batch(size, seed=1)
    metric = quantus.Selectivity(disable_warnings=True, **kwargs)
    theirs = np.asarray(q(metric, model, x, y, a))
    ours = selectivity(model, x, y, a, **quantus_names(kwargs))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.numpy(), theirs, atol=ATOL, rtol=0)
    k = ours.shape[1]
    assert metric.get_auc_score == pytest.approx(float(curve_auc(ours).mean()) * (k - 1), abs=1e-5)


def _mask_broadcast(arr, mask, **kwargs):
    """Quantus 0.6's IROF passes a one-channel mask and asserts it has the input's shape: for 3 channels, broadcast."""
    return baseline_replacement_by_mask(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (16, {}),  # SLIC, the batch's running mean
        (24, {"perturb_baseline": "black"}),
        (16, {"perturb_baseline": "white", "abs": True}),
        (16, {"perturb_baseline": 0.5}),
    ],
)
def test_irof_equals_quantus(model, size, kwargs):
    x, y, a = batch(size, seed=2)
    metric = quantus.IROF(return_aggregate=False, disable_warnings=True, perturb_func=_mask_broadcast, **kwargs)
    theirs = np.asarray(q(metric, model, x, y, a))
    ours = irof(model, x, y, a, **quantus_names(kwargs))
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=0)
    # Quantus' default: the aggregate (mean) over images
    agg = q(quantus.IROF(disable_warnings=True, perturb_func=_mask_broadcast, **kwargs), model, x, y, a)
    assert agg[0] == pytest.approx(float(ours.mean()), abs=1e-5)


def test_irof_single_channel_runs_quantus_unpatched_and_takes_given_segments():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5)).eval()
    x, y, a = batch(16, seed=3)
    x = x[:, :1]
    theirs = np.asarray(q(quantus.IROF(return_aggregate=False, disable_warnings=True), net, x, y, a))
    np.testing.assert_allclose(irof(net, x, y, a).numpy(), theirs, atol=1e-5, rtol=0)
    # the same segments given explicitly, relabelled (shifted by 7): the same scores
    segments = slic_segments(x)
    torch.testing.assert_close(irof(net, x, y, a, segments=segments + 7), irof(net, x, y, a))


def test_irof_per_image_baseline_differs_from_the_batch_one_and_does_not_depend_on_the_batch(model):
    x, y, a = batch(16, seed=4)
    seg = slic_segments(x)
    full = irof(model, x, y, a, segments=seg, baseline_over="image")
    part = irof(model, x[:2], y[:2], a[:2], segments=seg[:2], baseline_over="image")
    torch.testing.assert_close(full[:2], part)
    assert not torch.allclose(irof(model, x, y, a, segments=seg), full)


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (8, {}),  # Quantus' defaults: one element per step, 0.8 of the pixels, black
        (12, {"features_in_step": 4, "n_max_percentage": 0.5}),  # Quantus wants H * W % features_in_step == 0
        (10, {"features_in_step": 5, "perturb_baseline": "mean"}),
        (10, {"features_in_step": 4, "perturb_baseline": "white", "abs": True}),
    ],
)
def test_sensitivity_n_equals_quantus(model, size, kwargs):
    x, y, a = batch(size, channels_in_map=3, seed=5)  # one attribution per element: no ties
    theirs = np.asarray(
        q(quantus.SensitivityN(return_aggregate=False, disable_warnings=True, **kwargs), model, x, y, a)
    )
    ours = sensitivity_n(model, x, y, a, **quantus_names(kwargs))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=0)
    agg = q(quantus.SensitivityN(disable_warnings=True, **kwargs), model, x, y, a)
    assert agg[0] == pytest.approx(float(ours.mean()), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"threshold": 0.9}, {"threshold": 0.3, "abs": False}, {"distance_func": "euclidean", "threshold": 0.8}],
)
def test_sufficiency_equals_quantus(model, kwargs, monkeypatch):
    from quantus.metrics.faithfulness import sufficiency as quantus_sufficiency

    cdist = quantus_sufficiency.cdist  # scipy 1.17 takes V= only for "seuclidean"; Quantus passes V=None to all
    monkeypatch.setattr(quantus_sufficiency, "cdist", lambda a, b, metric, V=None: cdist(a, b, metric))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(12, 3, 16, 16, generator=g) * 10  # large inputs: the CNN predicts several classes
    a = torch.randn(12, 1, 16, 16, generator=g)
    a[6:] = a[:6] + 0.3 * torch.randn(6, 1, 16, 16, generator=g)  # pairs of similar maps: neighbours
    y = torch.zeros(12, dtype=torch.long)  # Quantus ignores y_batch
    theirs = np.asarray(q(quantus.Sufficiency(disable_warnings=True, **kwargs), model, x, y, a))
    ours = sufficiency(
        model,
        x,
        a,
        threshold=kwargs.get("threshold", 0.6),
        distance=kwargs.get("distance_func", "seuclidean"),
        absolute=kwargs.get("abs", True),
    )
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6, rtol=0)
    assert 0 < float(ours.mean()) < 1  # neighbours with and without the same prediction


def test_sufficiency_ignores_a_feature_that_is_the_same_in_every_image(model):
    g = torch.Generator().manual_seed(7)
    x, a = torch.rand(6, 3, 8, 8, generator=g), torch.rand(6, 1, 8, 8, generator=g)
    a_const = a.clone()
    a_const[:, :, 0, 0] = 0.5  # zero variance: Quantus' distances turn NaN, every score 0
    b = a.clone()
    b[:, :, 0, 0] = 0.0
    c = b.clone()
    c[:, :, 0, 0] = 1.0
    torch.testing.assert_close(sufficiency(model, x, b), sufficiency(model, x, c))
    assert torch.isfinite(sufficiency(model, x, a_const)).all()


def test_tied_maps_rank_regions_in_raster_order(model):
    x, y, _ = batch(16)
    flat = torch.zeros(4, 1, 16, 16)
    # every patch ties: MoRF and LeRF both take the patches in raster order, so they are the same curve
    torch.testing.assert_close(
        region_perturbation(model, x, y, flat, patch_size=4),
        region_perturbation(model, x, y, flat, patch_size=4, order="lerf"),
    )


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (region_perturbation, {"patch_size": 0}, r"patch_size must be an int >= 1 .*got 0"),
        (region_perturbation, {"patch_size": 2.5}, r"patch_size must be an int >= 1 .*got 2\.5"),
        (region_perturbation, {"order": "random"}, r"order must be one of 'morf', 'lerf', got 'random'"),
        (region_perturbation, {"regions_evaluation": 0}, r"regions_evaluation must be an int >= 1 .*got 0"),
        (
            region_perturbation,
            {"perturb_baseline": "uniform"},
            r"perturb_baseline must be 'black', 'white', 'mean' or a number, got",
        ),
        (selectivity, {"perturb_baseline": True}, r"perturb_baseline must be .* got True"),
        (selectivity, {"batch_size": 0}, r"batch_size must be a positive int .*got 0"),
        (irof, {"baseline_over": "all"}, r"baseline_over must be one of 'batch', 'image', got 'all'"),
        (irof, {"segments": torch.zeros(4, 8, 8, dtype=torch.long)}, r"segments must be an integer Tensor \[B, H, W\]"),
        (irof, {"segments": torch.zeros(4, 16, 16, dtype=torch.long)}, r"more than one segment .* image 0 has 1"),
        (sensitivity_n, {"n_max_percentage": 1.5}, r"n_max_percentage must be a number in \(0, 1\], got 1\.5"),
        (sensitivity_n, {"features_in_step": 0}, r"features_in_step must be an int >= 1 .*got 0"),
        (sensitivity_n, {"features_in_step": 1000}, r"features_in_step=1000 leaves no step"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(model, fn, kwargs, match):
    x, y, a = batch(16)
    with pytest.raises(ValueError, match=match):
        fn(model, x, y, a, **kwargs)


def test_bad_shapes_and_batches_are_refused(model):
    x, y, a = batch(16)
    with pytest.raises(ValueError, match=r"attributions must be a Tensor .* broadcasts to the inputs \(4, 3, 16, 16\)"):
        region_perturbation(model, x, y, a[:, :, :8])
    with pytest.raises(ValueError, match=r"inputs must be 2-D images"):
        selectivity(model, x[:, :, None], y, a[:, :, None])
    with pytest.raises(ValueError, match=r"inputs need >= 2 images, got 1"):
        sensitivity_n(model, x[:1], y[:1], a[:1])
    with pytest.raises(ValueError, match=r"threshold must be a number >= 0 .*got -1"):
        sufficiency(model, x, a, threshold=-1)
    with pytest.raises(ValueError, match=r"distance must be one of 'seuclidean', 'euclidean', got 'cosine'"):
        sufficiency(model, x, a, distance="cosine")
    with pytest.raises(ValueError, match=r"attributions must be a Tensor \[B, ...\] with B=4, got \(3, 1, 16, 16\)"):
        sufficiency(model, x, a[:3])
    seg_net = nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match=r"logits \[B, num_classes\], got an output of shape \(4, 2, 16, 16\)"):
        sufficiency(seg_net, x, a)


def test_segments_are_relabelled_in_order():
    seg = torch.tensor([[[5, 5], [9, 2]]])
    assert _check_segments(seg, torch.zeros(1, 1, 2, 2)).tolist() == [[[1, 1], [2, 0]]]


def test_classes_accumulate_the_mean_score(model):
    x, y, a = batch(16)
    sel = Selectivity(patch_size=4)
    sel.update(model, x[:2], y[:2], a[:2])
    sel.update(model, x[2:], y[2:], a[2:])
    torch.testing.assert_close(sel.compute(), curve_auc(selectivity(model, x, y, a, patch_size=4)).mean())
    seg = slic_segments(x)
    m = IROF()
    m.update(model, x, y, a, segments=seg)
    torch.testing.assert_close(m.compute(), irof(model, x, y, a, segments=seg).mean())
    sn = SensitivityN(features_in_step=16)
    sn.update(model, x, y, a)
    torch.testing.assert_close(sn.compute(), sensitivity_n(model, x, y, a, features_in_step=16).mean())
    su = Sufficiency(threshold=0.9)
    su.update(model, x, a)
    torch.testing.assert_close(su.compute(), sufficiency(model, x, a, threshold=0.9).mean())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Selectivity(patch_size=-1), r"patch_size must be an int >= 1 .*got -1"),
        (lambda: RegionPerturbation(order="MoRF-ish"), r"order must be one of 'morf', 'lerf', got 'MoRF-ish'"),
        (lambda: RegionPerturbation(regions_evaluation=0), r"regions_evaluation must be an int >= 1 .*got 0"),
        (
            lambda: IROF(perturb_baseline="uniform"),
            r"perturb_baseline must be 'black', 'white', 'mean' or a number, got 'uniform'",
        ),
        (lambda: IROF(baseline_over="rank"), r"baseline_over must be one of 'batch', 'image', got 'rank'"),
        (lambda: SensitivityN(features_in_step=0), r"features_in_step must be an int >= 1 .*got 0"),
        (lambda: Sufficiency(distance="cosine"), r"distance must be one of 'seuclidean', 'euclidean', got 'cosine'"),
    ],
)
def test_classes_check_their_arguments_when_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()
