"""Rendering: denormalisation, colormaps, overlays and grids."""

from __future__ import annotations

import pytest
import torch

from lightning_saliency.render import (
    CARD_WIDTH,
    COLORMAPS,
    apply_colormap,
    curve_plot,
    method_grid,
    overlay,
    overview_grid,
    row_labels,
    to_display,
)


def test_to_display_denormalises_with_mean_and_std():
    pixels = torch.rand(2, 3, 5, 7)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalised = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(to_display(normalised, mean, std), pixels, atol=1e-6)


def test_to_display_channels_and_ranges():
    gray = torch.rand(1, 1, 4, 6)
    shown = to_display(gray)
    assert shown.shape == (1, 3, 4, 6)
    assert torch.equal(shown[:, 0], gray[:, 0])
    assert torch.equal(shown[:, 2], gray[:, 0])
    wide = torch.randn(2, 3, 4, 4) * 5  # outside [0, 1]: min-max per image
    shown = to_display(wide)
    assert shown.amin((1, 2, 3)).tolist() == [0.0, 0.0]
    assert torch.allclose(shown.amax((1, 2, 3)), torch.ones(2))
    assert to_display(torch.rand(1, 5, 3, 3)).shape == (1, 3, 3, 3)  # many channels -> grey mean
    nan = torch.full((1, 3, 2, 2), float("nan"))
    assert not to_display(nan).isnan().any()


def test_to_display_rejects_wrong_mean_length():
    with pytest.raises(ValueError, match=r"mean must have one value per input channel \(3\) or a single value"):
        to_display(torch.rand(1, 3, 2, 2), mean=[0.1, 0.2], std=[0.1, 0.2])


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_colormap_luts_match_matplotlib(name):
    mpl = pytest.importorskip("matplotlib")
    ref = torch.tensor(mpl.colormaps[name](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)
    ours = apply_colormap(torch.linspace(0, 1, 256).view(1, 1, 1, 256), name)[0, :, 0].T
    assert torch.allclose(ours, ref, atol=1 / 255 + 1e-6)


def test_colormap_ends_and_unknown_name():
    ends = apply_colormap(torch.tensor([[[[0.0, 1.0]]]]), "viridis")[0, :, 0]  # [3,2]
    assert ends[:, 0].tolist() == pytest.approx([68 / 255, 1 / 255, 84 / 255])
    assert ends[:, 1].tolist() == pytest.approx([253 / 255, 231 / 255, 37 / 255])
    with pytest.raises(ValueError, match="colormap must be one of"):
        apply_colormap(torch.zeros(1, 1, 1, 1), "jet")


def test_overlay_blends_with_alpha():
    images, maps = torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
    assert torch.allclose(overlay(images, maps, alpha=0.0), images)
    assert torch.allclose(overlay(images, maps, alpha=1.0), apply_colormap(maps))
    half = overlay(images, maps, alpha=0.5)
    assert torch.allclose(half, 0.5 * images + 0.5 * apply_colormap(maps))


TITLE = 15  # a title strip at the smallest font (11 px): 11 + 3 + 1


def test_grids_are_laid_out_row_per_image_and_handle_non_square():
    images = torch.rand(3, 3, 10, 6)
    maps = {"a": torch.rand(3, 1, 10, 6), "b": torch.rand(3, 1, 10, 6)}
    grid = overview_grid(images, maps, min_size=6)
    assert grid.shape == (3, TITLE + 3 * 10 + 4 * 2, 3 * 6 + 4 * 2)  # title strip + 3 rows; input + 2 columns
    assert grid.min() >= 0
    assert grid.max() <= 1
    # the first cell below the title strip is the first input image
    assert torch.allclose(grid[:, TITLE + 2 : TITLE + 12, 2:8], images[0])
    big = method_grid(images, maps["a"], min_size=30)  # shorter side 6 -> x5
    assert big.shape == (3, TITLE + 3 * 50 + 4 * 2, 3 * 30 + 4 * 2)


def test_column_titles_are_drawn():
    grid = overview_grid(torch.ones(1, 3, 8, 8), {"gradcam": torch.zeros(1, 1, 8, 8)}, min_size=40)
    strip = grid[:, :TITLE]
    assert (strip < 0.5).any(), "some dark title text on the white strip"
    assert (strip[:, :, 2 + 40 + 2 :] < 0.5).any(), "the second column has a title too"


def test_wide_grids_spread_each_image_over_lines_of_at_most_max_columns_cells():
    images = torch.rand(2, 3, 10, 10)
    maps = {f"m{i}": torch.rand(2, 1, 10, 10) for i in range(6)}  # 7 columns with the input
    labels = [["#0", "true: a"], ["#1", "true: b"]]
    grid = overview_grid(images, maps, min_size=10, max_columns=3)
    # 7 cells, at most 3 per line: 3 lines of 3, 3 and 1 cells; each line with its own title strip
    line = TITLE + 2 + 10
    assert grid.shape == (3, 2 * 3 * line + 2, 2 + 3 * (10 + 2))
    assert torch.allclose(grid[:, TITLE + 2 : TITLE + 12, 2:12], images[0])  # line 1 of image 0: its input
    second = 3 * line
    assert torch.allclose(grid[:, second + TITLE + 2 : second + TITLE + 12, 2:12], images[1])
    last = 2 * line + TITLE + 2  # image 0, line 3: only m5, the rest of the line is white
    assert torch.equal(grid[:, last : last + 10, 14:], torch.ones(3, 10, 2 * 12))
    balanced = overview_grid(images, dict(list(maps.items())[:4]), min_size=10, max_columns=4)  # 5 cells
    assert balanced.shape[2] == 2 + 3 * 12  # two lines of 3 and 2 cells, not 4 and 1
    unwrapped = overview_grid(images, maps, min_size=10)
    assert unwrapped.shape == (3, TITLE + 2 + 2 * 12, 2 + 7 * 12)
    captioned = overview_grid(images, maps, min_size=10, labels=labels)
    caption = captioned.shape[1] - unwrapped.shape[1]
    assert caption % 2 == 0
    assert caption > 0
    first_caption = captioned[:, TITLE : TITLE + caption // 2]
    assert (first_caption < 0.5).any(), "the caption of image 0 is drawn above its cells"
    assert torch.allclose(captioned[:, TITLE + caption // 2 + 2 : TITLE + caption // 2 + 12, 2:12], images[0])


def test_text_is_sized_for_tensorboards_card_width():
    narrow = overview_grid(torch.rand(1, 3, 8, 8), {"a": torch.rand(1, 1, 8, 8)}, min_size=96)
    wide = overview_grid(torch.rand(1, 3, 8, 8), {f"m{i}": torch.rand(1, 1, 8, 8) for i in range(9)}, min_size=96)
    assert narrow.shape[1] - 2 - 96 - 2 == TITLE  # under CARD_WIDTH: the smallest font
    # 10 cells, 982 px wide, shown at CARD_WIDTH: the titles grow by 982 / 350, to read at the same size there
    font = round(11 * wide.shape[2] / CARD_WIDTH)
    assert wide.shape[1] - 2 - 96 - 2 == font + 3 + 1


def test_row_labels_name_position_index_true_and_predicted_class_and_what_the_map_explains():
    rows = row_labels(
        torch.tensor([2, 0]),
        torch.tensor([0.931, 0.5]),
        labels=torch.tensor([2, 1]),
        explained=torch.tensor([2, 1]),
        indices=[10, 40],
        class_names=["disc", "square", "cross"],
    )
    assert rows == [
        ["#0 (index 10)", "true: cross", "pred: cross (0.93)"],
        ["#1 (index 40)", "true: square", "pred: disc (0.50)", "map of: square"],
    ]
    assert row_labels(torch.tensor([7]), torch.tensor([1.0]), class_names=["a"]) == [["#0", "pred: 7 (1.00)"]]


def test_curve_plot_legend_grows_below_the_plot_with_the_methods():
    one = curve_plot({"a": torch.linspace(1, 0, 5)}, "deletion")
    many = curve_plot({f"method_{i}": torch.linspace(1, 0, 5) for i in range(14)}, "deletion")
    assert one.shape[2] == many.shape[2] == 300
    assert many.shape[1] - one.shape[1] == 4 * 14  # 5 legend rows of 3 entries instead of 1
    legend = many[:, 190:]
    assert (legend < 0.5).any(), "legend text"
    assert not torch.allclose(many[:, :190], torch.ones(3, 190, 300)), "axes and lines are drawn"
