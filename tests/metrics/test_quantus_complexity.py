"""Sparseness, Complexity and EffectiveComplexity equal Quantus 0.6's on the same attributions.

Quantus divides by the batch's largest magnitude by default (``normalise_by_max`` without axes); ours divides each
image by its own (Quantus with ``normalise_axes=[1, 2, 3]``). The two agree on maps whose maxima are equal (the
monitor's min-max maps: 1), which the default-argument cases use; raw attributions of other scales are compared with
Quantus' per-image normalisation, and one test shows where Quantus' batch default differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _quantus_names import ours as quantus_names

from lightning_saliency.metrics import (
    Complexity,
    EffectiveComplexity,
    Sparseness,
    complexity,
    effective_complexity,
    sparseness,
)

quantus = pytest.importorskip("quantus")

PER_IMAGE = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}}


def batch(raw: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """``x [4, 3, 16, 16]``, ``y [4]``, ``a [4, 1, 16, 16]``: maps with maximum 1, or signed raw attributions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 16, 16, generator=g)
    a = torch.rand(4, 1, 16, 16, generator=g) ** 3  # skewed, as saliency is
    a[a < 0.05] = 0.0  # exact zeros: the eps thresholds and Gini's +1e-7 matter
    if raw:
        a = (a - 0.2) * torch.tensor([0.01, 1.0, 30.0, 2.0]).view(4, 1, 1, 1)  # signed, other scales
    else:
        a = a / a.flatten(1).amax(1).view(4, 1, 1, 1)  # each map's maximum is 1
    return {"x_batch": x.numpy(), "y_batch": np.zeros(4, dtype=np.int64), "a_batch": a.numpy()}


def theirs(metric, data: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(metric(model=None, **data, device="cpu"), dtype=np.float64)


CASES = [
    (sparseness, quantus.Sparseness, {}),
    (complexity, quantus.Complexity, {}),
    (effective_complexity, quantus.EffectiveComplexity, {}),
    (effective_complexity, quantus.EffectiveComplexity, {"eps": 0.1}),
    (sparseness, quantus.Sparseness, {"normalise": False}),
    (complexity, quantus.Complexity, {"normalise": False}),
    (sparseness, quantus.Sparseness, {"abs": False}),
]


@pytest.mark.parametrize(("ours", "peer", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", str(c)))
@pytest.mark.parametrize("raw", [False, True], ids=["maps", "raw"])
def test_equal_to_quantus(ours, peer, kwargs, raw):
    data = batch(raw)
    if raw and kwargs.get("abs") is False and ours is sparseness:
        pytest.skip("Gini of signed values: covered on maps")
    expected = theirs(peer(disable_warnings=True, **kwargs, **(PER_IMAGE if raw else {})), data)
    got = ours(torch.from_numpy(data["a_batch"]), **quantus_names(kwargs))
    assert got.dtype == torch.float32
    assert got.shape == (4,)
    # Quantus computes in float32 (entropy terms of 256 values up to log 256); ours sums in float64: measured
    # differences <= 5e-7, so 1e-5 relative (20x) still fails on any real difference of the formula.
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_quantus_default_normalises_by_the_batch_maximum_ours_by_each_image():
    data = batch(raw=True)
    a = torch.from_numpy(data["a_batch"])
    batchwise = theirs(quantus.EffectiveComplexity(disable_warnings=True, eps=0.01), data)
    per_image = theirs(quantus.EffectiveComplexity(disable_warnings=True, eps=0.01, **PER_IMAGE), data)
    ours = effective_complexity(a, eps=0.01).double().numpy()
    np.testing.assert_array_equal(ours, per_image)
    assert not np.array_equal(ours, batchwise)  # the small-scale image loses most values under the batch maximum
    alone = effective_complexity(a[:1], eps=0.01)  # and ours does not depend on the other images
    assert alone.item() == ours[0]


def test_an_all_zero_map_has_no_entropy_but_a_gini_and_a_count():
    maps = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    maps[1] = 0.0
    assert complexity(maps)[1].isnan()
    assert not complexity(maps)[0].isnan()
    assert sparseness(maps)[1] == 0.0
    assert effective_complexity(maps)[1] == 0.0
    metric = Complexity()
    metric.update(maps)
    torch.testing.assert_close(metric.compute(), complexity(maps[:1])[0])  # the undefined image is left out


def test_extremes():
    one_hot = torch.zeros(1, 1, 8, 8)
    one_hot[0, 0, 3, 3] = 1.0
    flat = torch.ones(1, 1, 8, 8)
    assert sparseness(flat).item() == pytest.approx(0.0, abs=1e-6)
    assert sparseness(one_hot).item() == pytest.approx(63 / 64, abs=1e-4)
    assert complexity(flat).item() == pytest.approx(np.log(64), rel=1e-6)
    assert complexity(one_hot).item() == pytest.approx(0.0, abs=1e-9)
    assert effective_complexity(one_hot).item() == 1.0


def test_metric_classes_average_the_functionals():
    data = batch()
    a = torch.from_numpy(data["a_batch"])
    for cls, fn in ((Sparseness, sparseness), (Complexity, complexity), (EffectiveComplexity, effective_complexity)):
        metric = cls()
        metric.update(a[:2])
        metric.update(a[2:])
        torch.testing.assert_close(metric.compute(), fn(a).mean())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sparseness(torch.rand(2, 4), absolute=1), "absolute must be a bool, got 1"),
        (lambda: complexity(torch.rand(2, 4), normalise="yes"), "normalise must be a bool, got 'yes'"),
        (lambda: effective_complexity(torch.rand(2, 4), eps=-1.0), r"eps must be a number >= 0 .*got -1.0"),
        (lambda: sparseness(torch.rand(4)), r"maps must be a floating-point Tensor \[B, \.\.\.\].*got \(4,\)"),
        (lambda: complexity(torch.ones(2, 3, dtype=torch.long)), "maps must be a floating-point Tensor"),
        (lambda: EffectiveComplexity(eps="0.1"), "eps must be a number >= 0"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
