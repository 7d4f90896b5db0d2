"""TopKIntersection, RelevanceRankAccuracy, AUC and Focus equal Quantus 0.6's on the same maps and regions.

Maps are seeded continuous noise (no ties: Quantus ranks with the unstable ``np.argsort``, so tied pixels at the
k-th place would be chosen arbitrarily there), except where the AUC's tie rule (one half, as scikit-learn's curve) is
tested. Quantus' AUC runs scikit-learn's ``roc_curve`` and ``auc``; ours is torch only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _quantus_names import ours as quantus_names

from lightning_saliency.metrics import (
    Focus,
    LocalisationAUC,
    RelevanceRankAccuracy,
    TopKIntersection,
    focus,
    localisation_auc,
    region_masks,
    relevance_rank_accuracy,
    top_k_intersection,
)

quantus = pytest.importorskip("quantus")

SIZE = 32  # 1024 pixels: more than Quantus' default k = 1000
BOXES = torch.tensor([[0, 0, 16, 16], [8, 4, 30, 20], [2, 10, 12, 32], [5, 5, 7, 9]])


def batch(seed: int = 0, raw: bool = False) -> dict[str, np.ndarray]:
    """``x [4, 3, 32, 32]``, ``y``, ``a [4, 1, 32, 32]`` (maximum 1, or signed raw values), ``s [4, 1, 32, 32]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, SIZE, SIZE, generator=g)
    a = torch.rand(4, 1, SIZE, SIZE, generator=g)
    a[:, :, 4:14, 4:14] += 0.5  # some signal where boxes 0 and 1 are
    a = a / a.flatten(1).amax(1).view(4, 1, 1, 1)
    if raw:
        a = (a - 0.4) * torch.tensor([0.01, 1.0, 30.0, 2.0]).view(4, 1, 1, 1)
    s = region_masks((4, SIZE, SIZE), boxes=BOXES, device=torch.device("cpu"))[:, None]
    return {"x_batch": x.numpy(), "y_batch": np.zeros(4, dtype=np.int64), "a_batch": a.numpy(), "s_batch": s.numpy()}


def theirs(metric, data: dict[str, np.ndarray], **call) -> np.ndarray:
    return np.asarray(metric(model=None, **data, device="cpu", **call), dtype=np.float64)


def ours(fn, data: dict[str, np.ndarray], **kwargs) -> np.ndarray:
    out = fn(torch.from_numpy(data["a_batch"]), masks=torch.from_numpy(data["s_batch"]), **kwargs)
    assert out.dtype == torch.float32
    assert out.shape == (4,)
    return out.double().numpy()


CASES = [
    (top_k_intersection, quantus.TopKIntersection, {}),
    (top_k_intersection, quantus.TopKIntersection, {"k": 50}),
    (top_k_intersection, quantus.TopKIntersection, {"k": 50, "concept_influence": True}),
    (top_k_intersection, quantus.TopKIntersection, {"k": 300, "abs": True}),
    (relevance_rank_accuracy, quantus.RelevanceRankAccuracy, {}),
    (relevance_rank_accuracy, quantus.RelevanceRankAccuracy, {"abs": True}),
    (localisation_auc, quantus.AUC, {}),
    (localisation_auc, quantus.AUC, {"abs": True, "normalise": False}),
]


@pytest.mark.parametrize(("fn", "peer", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", str(c)))
@pytest.mark.parametrize("raw", [False, True], ids=["maps", "raw"])
def test_equal_to_quantus(fn, peer, kwargs, raw):
    data = batch(raw=raw)
    expected = theirs(peer(disable_warnings=True, **kwargs), data)  # rankings: scale-free, batch maximum or not
    got = ours(fn, data, **quantus_names(kwargs))
    # hit counts over k are exact, the AUC's float64 rank sums equal scikit-learn's trapezoids to 1e-16; ours returns
    # float32, which rounds them by half an ulp (6e-8 at 1; concept influence reaches 12.8: 6e-8 relative)
    np.testing.assert_allclose(got, expected, rtol=6e-8, atol=6e-8)
    assert len(set(np.round(expected, 6))) > 1  # the images differ: a constant answer would not pass


def test_auc_ties_count_one_half_as_scikit_learn():
    data = batch(seed=1)
    data["a_batch"] = np.round(data["a_batch"] * 4) / 4  # five levels: many ties across the region's border
    expected = theirs(quantus.AUC(disable_warnings=True), data)
    np.testing.assert_allclose(ours(localisation_auc, data), expected, rtol=0, atol=6e-8)


def test_empty_or_full_regions_are_undefined_as_in_quantus():
    data = batch()
    data["s_batch"][1] = 0  # empty: Quantus sets NaN
    data["s_batch"][2] = 1  # the whole map: no negatives, scikit-learn's ROC is undefined (NaN)
    with pytest.warns(Warning, match="segmentation|negative"):  # Quantus' and scikit-learn's warnings
        expected = theirs(quantus.AUC(disable_warnings=True), data)
    got = ours(localisation_auc, data)
    np.testing.assert_allclose(got, expected, rtol=0, atol=6e-8)  # NaN where NaN
    assert np.isnan(got[[1, 2]]).all()
    assert not np.isnan(got[[0, 3]]).any()
    for fn, peer in (
        (top_k_intersection, quantus.TopKIntersection),
        (relevance_rank_accuracy, quantus.RelevanceRankAccuracy),
    ):
        np.testing.assert_allclose(ours(fn, data), theirs(peer(disable_warnings=True), data), rtol=0, atol=6e-8)
    maps, masks = torch.from_numpy(data["a_batch"]), torch.from_numpy(data["s_batch"])
    metric = RelevanceRankAccuracy()
    metric.update(maps, masks=masks)  # the undefined image is left out of the mean
    torch.testing.assert_close(metric.compute(), relevance_rank_accuracy(maps, masks=masks)[[0, 2, 3]].mean())


def test_boxes_and_masks_give_the_same_scores():
    data = batch()
    maps = torch.from_numpy(data["a_batch"])
    for fn in (top_k_intersection, relevance_rank_accuracy, localisation_auc):
        torch.testing.assert_close(fn(maps, boxes=BOXES), fn(maps, masks=torch.from_numpy(data["s_batch"])))


def mosaics(seed: int = 0, size: int = 16) -> dict[str, np.ndarray]:
    """Mosaics of 2 x 2 images ``[4, 3, 2s, 2s]``, maps on them, and Quantus' ``custom_batch`` of quadrants."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 3, 2 * size, 2 * size, generator=g)
    a = torch.rand(4, 1, 2 * size, 2 * size, generator=g) - 0.3  # some negative relevance, which Focus drops
    a[0, :, :size, :size] += 1.0
    quadrants = np.array([(1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1)])
    return {"x_batch": x.numpy(), "y_batch": np.zeros(4, dtype=np.int64), "a_batch": a.numpy()}, quadrants


class Net(torch.nn.Module):  # Focus wants a model, though it only reads the maps
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


@pytest.mark.parametrize("kwargs", [{}, {"abs": True}, {"normalise": False}])
@pytest.mark.parametrize("size", [16, 15], ids=["even", "odd"])
def test_focus_equal_to_quantus(kwargs, size):
    data, quadrants = mosaics(size=size)
    if size == 15:  # an odd side: Quantus' halves are H // 2 rows and W // 2 columns
        data = {k: v[:, :, :-1, :-2] if v.ndim == 4 else v for k, v in data.items()}
    metric = quantus.Focus(disable_warnings=True, **kwargs)
    expected = np.asarray(metric(model=Net(), **data, custom_batch=quadrants, device="cpu"), dtype=np.float64)
    got = focus(torch.from_numpy(data["a_batch"]), torch.from_numpy(quadrants), **quantus_names(kwargs))
    assert got.dtype == torch.float32
    # Quantus sums in float32 (1024 values), ours in float64: measured <= 1e-7
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-6, atol=1e-7)
    assert expected[0] > 0.6
    assert len(set(np.round(expected, 4))) == 4


def test_metric_classes_average_the_functionals():
    data = batch()
    maps, masks = torch.from_numpy(data["a_batch"]), torch.from_numpy(data["s_batch"])
    for cls, fn in ((TopKIntersection, top_k_intersection), (LocalisationAUC, localisation_auc)):
        metric = cls()
        metric.update(maps[:3], masks=masks[:3])
        metric.update(maps[3:], masks=masks[3:])
        torch.testing.assert_close(metric.compute(), fn(maps, masks=masks).mean())
    mosaic, quadrants = mosaics()
    metric = Focus()
    metric.update(torch.from_numpy(mosaic["a_batch"]), torch.from_numpy(quadrants))
    torch.testing.assert_close(
        metric.compute(), focus(torch.from_numpy(mosaic["a_batch"]), torch.from_numpy(quadrants)).mean()
    )


MAPS = torch.rand(2, 1, 8, 8)
BOX = torch.tensor([[0, 0, 4, 4]] * 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: top_k_intersection(MAPS, BOX, k=64), r"k must be an int in \[1, 64\) .*got 64"),
        (lambda: top_k_intersection(MAPS, BOX, k=0), r"k must be an int in \[1, 64\) .*got 0"),
        (lambda: top_k_intersection(MAPS, BOX, k=2.5), "k must be an int .*got 2.5"),
        (lambda: top_k_intersection(MAPS, BOX, k=4, concept_influence=1), "concept_influence must be a bool, got 1"),
        (lambda: relevance_rank_accuracy(MAPS, BOX, absolute="no"), "absolute must be a bool, got 'no'"),
        (lambda: localisation_auc(MAPS), "Pass exactly one of boxes"),
        (lambda: localisation_auc(MAPS, torch.zeros(2, 3)), r"boxes must have shape \[B, 4\].*got \(2, 3\)"),
        (lambda: focus(MAPS, torch.ones(2, 3)), r"quadrants must be a Tensor \[B=2, 4\] of 0/1 .*got \(2, 3\)"),
        (lambda: focus(MAPS, torch.full((2, 4), 2.0)), "with values other than 0 and 1"),
        (lambda: focus(torch.rand(8, 8), torch.ones(8, 4)), r"attributions must be a Tensor \[B, 1, H, W\]"),
        (lambda: TopKIntersection(k=0), "k must be an int >= 1"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
