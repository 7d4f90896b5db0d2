"""Weakly supervised localisation: thresholds, connected components, boxes, IoU, drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_saliency import get_method
from lightning_saliency.localisation import (
    box_iou,
    largest_component,
    mask_iou,
    mask_to_box,
    saliency_to_box,
    saliency_to_mask,
)
from lightning_saliency.metrics.functional.localisation import region_masks
from lightning_saliency.render import draw_localisation

BOX = (3, 2, 11, 8)  # (x1, y1, x2, y2): columns 3..10, rows 2..7 of a 12 x 14 image


class BoxScore(nn.Module):
    """``logit_c = sum of channel c inside BOX`` for c < 3, plus a constant class 3; BatchNorm/Dropout in front."""

    def __init__(self, box: tuple[int, int, int, int] = BOX, size: tuple[int, int] = (12, 14)) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        x1, y1, x2, y2 = box
        region = torch.zeros(1, 1, *size)
        region[..., y1:y2, x1:x2] = 1.0
        self.register_buffer("region", region)

    def forward(self, x: Tensor) -> Tensor:
        scores = (self.drop(self.norm(x)) * self.region).sum((2, 3))  # [B,3]
        return torch.cat([scores, torch.zeros_like(scores[:, :1])], 1)  # [B,4]


def test_gradient_map_of_a_box_model_localises_the_box():
    model = BoxScore()
    inputs = torch.randn(4, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    maps = get_method("gradient")(model, inputs, torch.tensor([0, 1, 2, 1]))
    truth = torch.tensor([BOX] * 4, dtype=torch.float32)
    for method in ("quantile", "otsu"):
        boxes = saliency_to_box(maps, method, quantile=0.6)
        iou = box_iou(boxes, truth)
        assert (iou > 0.95).all(), (method, iou)
    masks = largest_component(saliency_to_mask(maps, "otsu"))
    assert (mask_iou(masks, region_masks((4, 12, 14), boxes=truth, device=torch.device("cpu"))) > 0.95).all()


def test_box_of_a_noisy_blob_map_beats_a_random_box_and_ignores_a_spurious_spot():
    g = torch.Generator().manual_seed(1)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    blob = torch.exp(-((rows - 12) ** 2 + (cols - 25) ** 2) / (2 * 4.0**2))  # centred at (x=25, y=12)
    maps = (blob + 0.05 * torch.rand(32, 40, generator=g))[None, None]  # [1,1,32,40]
    maps[..., 28:30, 2:4] = 1.0  # a small, strong spurious spot far away
    box = saliency_to_box(maps, "otsu")
    expected = torch.tensor([[25.0 - 6, 12 - 6, 25 + 7, 12 + 7]])  # ~1.5 sigma around the centre
    assert box_iou(box, expected) > 0.5, box
    assert box[0, 1] > 4
    assert box[0, 3] < 26
    assert box_iou(mask_to_box(saliency_to_mask(maps, "otsu")), expected) < 0.5  # without the component step it is


def test_otsu_splits_a_bimodal_image_and_matches_skimage():
    skimage_filters = pytest.importorskip("skimage.filters")
    g = torch.Generator().manual_seed(2)
    low = 0.25 + 0.05 * torch.randn(600, generator=g)
    high = 0.75 + 0.05 * torch.randn(400, generator=g)
    order = torch.randperm(1000, generator=g)
    values = torch.cat([low, high])[order].view(1, 1, 25, 40)
    is_high = (torch.arange(1000) >= 600)[order].view(1, 25, 40)
    mask = saliency_to_mask(values, "otsu")
    assert torch.equal(mask, is_high)
    reference = values[0, 0].numpy() > skimage_filters.threshold_otsu(values[0, 0].numpy(), nbins=256)
    assert (mask[0].numpy() != reference).mean() < 0.005


def test_quantile_threshold_keeps_the_top_fraction_and_constant_maps_give_empty_masks():
    maps = torch.arange(100.0).view(1, 1, 10, 10)
    assert saliency_to_mask(maps, quantile=0.8).sum() == 20
    assert saliency_to_mask(maps, quantile=0.0).sum() == 99  # everything but the minimum
    constant = torch.full((2, 1, 5, 5), 0.3)
    for method in ("quantile", "otsu"):
        assert not saliency_to_mask(constant, method).any()
        assert torch.equal(saliency_to_box(constant, method), torch.zeros(2, 4))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_largest_component_picks_the_bigger_blob_and_matches_scipy(connectivity):
    ndimage = pytest.importorskip("scipy.ndimage")
    mask = torch.zeros(2, 10, 12, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True  # 4 px
    mask[0, 5:9, 6:11] = True  # 20 px: the winner
    mask[1, 0:3, 0] = True  # 3 px
    mask[1, 3, 1] = True  # diagonal to (2, 0): joins the first blob only with 8-connectivity
    mask[1, 4, 2] = True
    mask[1, 6:10, 8] = True  # 4 px
    out = largest_component(mask, connectivity)
    expected0 = torch.zeros(10, 12, dtype=torch.bool)
    expected0[5:9, 6:11] = True
    assert torch.equal(out[0], expected0)
    if connectivity == 8:
        assert out[1].sum() == 5
        assert out[1, 0, 0]
        assert out[1, 4, 2]
    else:
        assert out[1].sum() == 4
        assert out[1, 6:10, 8].all()

    g = torch.Generator().manual_seed(3)
    random_masks = torch.rand(6, 24, 30, generator=g) > 0.5
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for m, got in zip(random_masks, largest_component(random_masks, connectivity), strict=True):
        labels, _ = ndimage.label(m.numpy(), structure)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        assert got.sum() == sizes.max()
        assert any(np.array_equal(labels == lab, got.numpy()) for lab in np.flatnonzero(sizes == sizes.max()))


def test_largest_component_ties_go_to_the_first_blob_and_empty_stays_empty():
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, 4:6, 4:6] = True
    mask[0, 0:2, 3:5] = True  # same size, starts first in raster order
    out = largest_component(mask)
    assert out[0, 0:2, 3:5].all()
    assert out[0].sum() == 4
    assert not out[1].any()


def test_mask_to_box_is_half_open_and_matches_region_masks():
    mask = torch.zeros(3, 7, 9, dtype=torch.bool)
    mask[0, 2:5, 1:8] = True
    mask[1, 6, 8] = True
    boxes = mask_to_box(mask)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[1, 2, 8, 5], [8, 6, 9, 7], [0, 0, 0, 0]]
    back = region_masks((3, 7, 9), boxes=boxes, device=torch.device("cpu"))
    assert torch.equal(back, mask)  # a rectangle goes there and back exactly


def test_iou_values_and_empty_conventions():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 6, 6]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 0, 0], [0, 0, 2, 2]])
    assert torch.allclose(box_iou(a, b), torch.tensor([1.0, 50 / 150, 0.0, 0.0]))
    tv = pytest.importorskip("torchvision.ops")
    assert torch.allclose(box_iou(a[:2], b[:2]), tv.box_iou(a[:2], b[:2]).diagonal())
    m1 = torch.zeros(2, 4, 4, dtype=torch.bool)
    m2 = torch.zeros(2, 4, 4, dtype=torch.bool)
    m1[0, :2], m2[0, 1:3] = True, True
    assert torch.allclose(mask_iou(m1, m2), torch.tensor([4 / 12, 0.0]))


def test_draw_localisation_draws_boxes_and_masks_in_their_colours():
    images = torch.full((2, 3, 16, 16), 0.5)
    maps = torch.zeros(2, 1, 16, 16)
    pred = torch.tensor([[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 0.0, 0.0]])  # second: empty, not drawn
    true = torch.tensor([[4.0, 4.0, 14.0, 14.0], [1.0, 1.0, 5.0, 5.0]])
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[1, 10:14, 10:14] = True
    out = draw_localisation(images, maps, pred, true, masks)
    assert out.shape == (2, 3, 16, 16)
    assert out.dtype == torch.float32
    assert out.min() >= 0
    assert out.max() <= 1
    red, lime = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    assert torch.allclose(out[0, :, 3, 5], red)  # top edge of the predicted box (row y1)
    assert torch.allclose(out[0, :, 11, 2], red)  # bottom-left corner (row y2 - 1, column x1)
    assert torch.allclose(out[0, :, 13, 8], lime)  # bottom edge of the true box
    assert not torch.allclose(out[0, :, 12, 2], red)  # just outside the predicted box
    assert torch.allclose(out[1, :, 1, 3], lime)
    shaded = out[1, :, 12, 12]
    assert not torch.allclose(shaded, out[1, :, 8, 8])  # the mask is shaded, the rest is not
    plain = draw_localisation(images, None, pred)
    assert torch.allclose(plain[0, :, 0, 0], torch.full((3,), 0.5), atol=1 / 255)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: saliency_to_mask(torch.rand(2, 1, 4, 4), "mean"), "method must be 'quantile' or 'otsu', got 'mean'"),
        (lambda: saliency_to_mask(torch.rand(2, 1, 4, 4), quantile=1.0), r"quantile must be a float in \[0, 1\)"),
        (lambda: saliency_to_mask(torch.rand(2, 1, 4, 4), "otsu", bins=1), "bins must be an int >= 2, got 1"),
        (lambda: saliency_to_mask(torch.rand(2, 3, 4, 4)), r"maps must be a Tensor \[B, 1, H, W\].*\(2, 3, 4, 4\)"),
        (lambda: largest_component(torch.ones(2, 4, 4), connectivity=6), "connectivity must be 4 or 8, got 6"),
        (lambda: mask_to_box(torch.ones(4, 4)), r"mask must be a bool Tensor \[B, H, W\], got \(4, 4\)"),
        (lambda: box_iou(torch.zeros(2, 4), torch.zeros(3, 4)), r"two \[B, 4\] tensors.*\(2, 4\) and \(3, 4\)"),
        (lambda: mask_iou(torch.ones(1, 2, 2), torch.ones(1, 3, 3)), "masks of the same shape"),
        (lambda: draw_localisation(torch.rand(1, 1, 4, 4), None, torch.zeros(1, 4)), r"images must be displayable"),
        (
            lambda: draw_localisation(torch.rand(1, 3, 4, 4), None, torch.zeros(2, 4)),
            r"boxes_pred must be .*\[B=1, 4\]",
        ),
        (lambda: draw_localisation(torch.rand(1, 3, 4, 4), None, torch.zeros(1, 4), width=0), "width must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
