"""Rendering saliency maps for people: denormalised inputs, colormapped heat maps, overlays and grids.

Everything returns float images in [0, 1], ``[3, H, W]`` or ``[B, 3, H, W]``, ready for
``SummaryWriter.add_image``. Pure torch, and Pillow for the text (titles, row labels, plot axes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_saliency._colormaps import COLORMAPS

__all__ = [
    "CARD_WIDTH",
    "COLORMAPS",
    "apply_colormap",
    "column_grid",
    "curve_plot",
    "filmstrip_grid",
    "method_grid",
    "overlay",
    "overview_grid",
    "row_labels",
    "to_display",
]


def to_display(inputs: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Model inputs ``[B, C, H, W]`` as displayable RGB ``[B, 3, H, W]`` in [0, 1].

    With ``mean``/``std`` (the normalisation the data pipeline applied) the inputs are denormalised
    (``x * std + mean``) and clipped. Without them, inputs already in [0, 1] are shown as they are and others
    are min-max scaled per image. One channel is shown as grey; more than three channels as the grey mean.

    Raises:
        ValueError: If ``mean``/``std`` do not have one value per channel (or one value).

    Example:
        >>> to_display(torch.zeros(2, 1, 4, 5), mean=[0.5], std=[0.25]).shape
        torch.Size([2, 3, 4, 5])
    """
    x = torch.nan_to_num(inputs.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)  # [B,C,H,W]
    c = x.shape[1]
    if mean is not None or std is not None:
        m = _per_channel(mean if mean is not None else [0.0], c, "mean")
        s = _per_channel(std if std is not None else [1.0], c, "std")
        x = (x * s + m).clamp(0, 1)
    elif x.numel() and (x.min() < 0 or x.max() > 1):
        flat = x.flatten(1)
        lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    if c == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3:
        return x
    return x.mean(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def _per_channel(values: Sequence[float], channels: int, arg: str) -> Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() not in (1, channels):
        raise ValueError(
            f"{arg} must have one value per input channel ({channels}) or a single value, got {list(values)!r}."
        )
    return t[None, :, None, None]  # [1,C,1,1]


def apply_colormap(maps: Tensor, colormap: str = "turbo") -> Tensor:
    """Colour maps ``[B, 1, H, W]`` in [0, 1] with a 256-entry LUT, giving ``[B, 3, H, W]``.

    Example:
        >>> apply_colormap(torch.tensor([[[[0.0, 1.0]]]]), "viridis")[0, :, 0, 0]
        tensor([0.2667, 0.0039, 0.3294])
    """
    lut = _lut(colormap)  # [256,3]
    idx = (torch.nan_to_num(maps.detach().float().cpu(), nan=0.0).clamp(0, 1) * 255).round().long()  # [B,1,H,W]
    return lut[idx[:, 0]].permute(0, 3, 1, 2).contiguous()  # [B,H,W,3] -> [B,3,H,W]


def _lut(colormap: str) -> Tensor:
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}.")
    return torch.frombuffer(bytearray(COLORMAPS[colormap]), dtype=torch.uint8).view(256, 3).float() / 255


def overlay(images: Tensor, maps: Tensor, alpha: float = 0.5, colormap: str = "turbo") -> Tensor:
    """Blend colormapped ``maps [B, 1, H, W]`` over ``images [B, 3, H, W]``: ``(1 - alpha) * image + alpha * heat``."""
    return ((1 - alpha) * images.float().cpu() + alpha * apply_colormap(maps, colormap)).clamp(0, 1)


_PAD = 2
CARD_WIDTH = 350
"""The width (px) at which TensorBoard's IMAGES cards show an image, unless *Show actual image size* is ticked.

Text in the grids is sized so that it reads at about 11 px there: ``11 * grid width / CARD_WIDTH``, at least 11.
"""


def _upscale(cells: Tensor, min_size: int) -> Tensor:
    """Nearest-neighbour upscale by an integer factor so the shorter side is at least ``min_size``."""
    short = min(cells.shape[-2:])
    factor = max(1, -(-min_size // max(short, 1)))
    return cells if factor == 1 else F.interpolate(cells, scale_factor=factor, mode="nearest")


def _font_size(width: int) -> int:
    return max(11, round(11 * width / CARD_WIDTH))


def _grid(
    columns: list[Tensor],
    titles: list[str],
    min_size: int,
    labels: Sequence[Sequence[str]] | None = None,
    max_columns: int | None = None,
) -> Tensor:
    """Rows = images, columns = ``columns`` (each ``[B, 3, H, W]``), with titles; ``[3, H', W']`` in [0, 1].

    With ``labels`` (texts per image) a caption above each image's cells says which image it is. With
    ``max_columns``, an image's cells are spread over as few lines as keep each line at most that many cells wide
    (15 cells, at most 5 per line: 3 lines of 5), each line titled, so the grid stays narrow however many methods
    there are. Text is sized for TensorBoard's card width (:data:`CARD_WIDTH`).
    """
    b, n = columns[0].shape[0], len(columns)
    cells = _upscale(torch.stack(columns, 1).flatten(0, 1), min_size)  # [B*n,3,h,w], image by image
    h, w = cells.shape[-2:]
    cells = cells.view(b, n, 3, h, w)
    lines = 1 if not max_columns else -(-n // max_columns)
    per_line = -(-n // lines)
    width = _PAD + per_line * (w + _PAD)
    font = _font(_font_size(width))
    pieces: list[Tensor] = []  # [3, h_i, width] each, top to bottom
    if lines == 1 and b:
        pieces.append(_text_strip(titles, w, width, font))
    for i in range(b):
        if labels is not None:
            pieces.append(_caption(labels[i], width, font))
        for line in range(lines):
            chunk = slice(line * per_line, min(n, (line + 1) * per_line))
            if lines > 1:
                pieces.append(_text_strip(titles[chunk], w, width, font))
            row = torch.ones(3, _PAD + h, width)
            for j, cell in enumerate(cells[i, chunk]):
                x = _PAD + j * (w + _PAD)
                row[:, _PAD:, x : x + w] = cell
            pieces.append(row)
    pieces.append(torch.ones(3, _PAD, width))
    return torch.cat(pieces, 1)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def _to_tensor(image: Image.Image) -> Tensor:
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)
    return data.permute(2, 0, 1).float() / 255  # [3,h,w]


def _line_height(font: Any) -> int:
    return int(font.size) + 3


def _text_strip(titles: Sequence[str], cell_width: int, width: int, font: Any) -> Tensor:
    """A white strip ``[3, h, width]`` with each column's title above its cell."""
    strip = Image.new("RGB", (width, _line_height(font) + 1), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, title in enumerate(titles):
        x0 = _PAD + i * (cell_width + _PAD)
        draw.text((x0 + 1, 1), _fit(draw, title, cell_width - 2, font), fill=(0, 0, 0), font=font)
    return _to_tensor(strip)


def _caption(items: Sequence[str], width: int, font: Any) -> Tensor:
    """A white strip ``[3, h, width]``: ``items`` joined by `` · `` on as many lines as they need."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for item in items:
        joined = f"{lines[-1]} · {item}" if lines else item
        if lines and probe.textlength(joined, font=font) <= width - 6:
            lines[-1] = joined
        else:
            lines.append(item)
    strip = Image.new("RGB", (width, len(lines) * _line_height(font) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for k, line in enumerate(lines):
        draw.text((3, 3 + k * _line_height(font)), _fit(draw, line, width - 6, font), fill=(0, 0, 0), font=font)
    return _to_tensor(strip)


def row_labels(
    predicted: Tensor,
    confidence: Tensor,
    *,
    labels: Tensor | None = None,
    explained: Tensor | None = None,
    indices: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[list[str]]:
    """The caption of each image's row: probe position and dataset index, true class, prediction and its probability.

    A last line names the class the maps explain when it is not the predicted one (e.g. ``targets="label"`` on a
    misclassified image).

    Example:
        >>> row_labels(torch.tensor([2]), torch.tensor([0.93]), labels=torch.tensor([1]), class_names=["a", "b", "c"])
        [['#0', 'true: b', 'pred: c (0.93)']]
    """

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)

    rows = []
    for i in range(predicted.shape[0]):
        pred = int(predicted[i])
        lines = [f"#{i}" + (f" (index {indices[i]})" if indices is not None else "")]
        if labels is not None:
            lines.append(f"true: {name(int(labels[i]))}")
        lines.append(f"pred: {name(pred)} ({float(confidence[i]):.2f})")
        if explained is not None and int(explained[i]) != pred:
            lines.append(f"map of: {name(int(explained[i]))}")
        rows.append(lines)
    return rows


def column_grid(
    columns: dict[str, Tensor],
    *,
    min_size: int = 96,
    labels: Sequence[Sequence[str]] | None = None,
    max_columns: int | None = None,
) -> Tensor:
    """One row per image, one titled column per entry of ``columns`` (each ``[B, 3, H, W]`` in [0, 1]).

    Example:
        >>> column_grid({"a": torch.rand(2, 3, 8, 8), "b": torch.rand(2, 3, 8, 8)}, min_size=8).shape
        torch.Size([3, 37, 22])
    """
    return _grid([c.float().cpu() for c in columns.values()], list(columns), min_size, labels, max_columns)


def overview_grid(
    images: Tensor,
    maps: dict[str, Tensor],
    *,
    alpha: float = 0.5,
    colormap: str = "turbo",
    min_size: int = 96,
    labels: Sequence[Sequence[str]] | None = None,
    max_columns: int | None = None,
) -> Tensor:
    """One row per image: the input, then each method's overlay. ``[3, H', W']`` in [0, 1].

    Args:
        images: Displayable inputs ``[B, 3, H, W]`` (see :func:`to_display`).
        maps: Method label -> maps ``[B, 1, H, W]`` in [0, 1].
        alpha: Heat-map opacity.
        colormap: A name in :data:`COLORMAPS`.
        min_size: Cells are upscaled (nearest, integer factor) until their shorter side is at least this.
        labels: Texts per image (:func:`row_labels`), captioned above its cells.
        max_columns: At most this many cells per line; an image's further cells continue on further lines.

    Example:
        >>> overview_grid(torch.rand(2, 3, 8, 8), {"gradcam": torch.rand(2, 1, 8, 8)}, min_size=8).shape
        torch.Size([3, 37, 22])
    """
    columns = [images.float().cpu(), *(overlay(images, m, alpha, colormap) for m in maps.values())]
    return _grid(columns, ["input", *maps], min_size, labels, max_columns)


def method_grid(
    images: Tensor,
    maps: Tensor,
    *,
    alpha: float = 0.5,
    colormap: str = "turbo",
    min_size: int = 96,
    labels: Sequence[Sequence[str]] | None = None,
) -> Tensor:
    """One row per image: the input, the heat map alone, and the overlay. ``[3, H', W']`` in [0, 1]."""
    columns = [images.float().cpu(), apply_colormap(maps, colormap), overlay(images, maps, alpha, colormap)]
    return _grid(columns, ["input", "heat", "overlay"], min_size, labels)


def filmstrip_grid(
    images: Tensor,
    maps_over_time: Sequence[Tensor],
    titles: Sequence[str],
    *,
    alpha: float = 0.5,
    colormap: str = "turbo",
    min_size: int = 96,
    labels: Sequence[Sequence[str]] | None = None,
    max_columns: int | None = None,
) -> Tensor:
    """One row per image: its overlay at each logged epoch, oldest first. ``[3, H', W']`` in [0, 1].

    Args:
        images: Displayable inputs ``[B, 3, H, W]``.
        maps_over_time: One ``[B, 1, h, w]`` map batch per epoch (any resolution; resized to ``H, W``).
        titles: One column title per epoch (e.g. ``"ep 3"``).
        alpha: Heat-map opacity.
        colormap: A name in :data:`COLORMAPS`.
        min_size: Cells are upscaled until their shorter side is at least this.
        labels: Texts per image, captioned above its cells.
        max_columns: At most this many epochs per line.

    Example:
        >>> maps = [torch.rand(2, 1, 4, 4)] * 3
        >>> filmstrip_grid(torch.rand(2, 3, 8, 8), maps, ["ep 0", "ep 1", "ep 2"], min_size=8).shape
        torch.Size([3, 37, 32])
    """
    size = tuple(images.shape[-2:])
    columns = [
        overlay(
            images, F.interpolate(m.float().cpu(), size=size, mode="bilinear", align_corners=False), alpha, colormap
        )
        for m in maps_over_time
    ]
    return _grid(columns, list(titles), min_size, labels, max_columns)


def curve_plot(
    curves: dict[str, Tensor],
    title: str,
    *,
    x_label: str = "fraction of pixels",
    y_label: str = "probability",
    width: int = 300,
    height: int = 190,
) -> Tensor:
    """A line plot of one curve per method over x in [0, 1] and y in [0, 1]. ``[3, height + legend, width]``.

    Used for the mean deletion/insertion curves (x: fraction of pixels deleted/inserted, y: target probability).
    Colours are spread over the turbo colormap in the order of ``curves``; the legend sits below the plot, in as
    many rows as the methods need, so it stays readable with many methods.

    Example:
        >>> curve_plot({"gradcam": torch.linspace(1, 0, 5)}, "deletion").shape
        torch.Size([3, 210, 300])
    """
    per_row = 3
    font = _font(11)
    legend_line = _line_height(font)
    legend_rows = -(-max(len(curves), 1) // per_row)
    total = height + legend_rows * legend_line + 6
    img = Image.new("RGB", (width, total), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 40, 16, width - 8, height - 28
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    draw.text((left, 2), title, fill=(0, 0, 0), font=font)
    for y_val in (0.0, 0.5, 1.0):
        y = bottom - y_val * (bottom - top)
        draw.text((18, y - 6), f"{y_val:.1f}", fill=(90, 90, 90), font=font)
    draw.text((left, bottom + 3), "0", fill=(90, 90, 90), font=font)
    draw.text((right - 6, bottom + 3), "1", fill=(90, 90, 90), font=font)
    draw.text(
        ((left + right) // 2 - draw.textlength(x_label, font=font) // 2, bottom + 3), x_label, fill=(0, 0, 0), font=font
    )
    axis = Image.new("RGB", (bottom - top, 12), (255, 255, 255))  # the y label, written sideways
    ImageDraw.Draw(axis).text(
        (max(0, (bottom - top - int(draw.textlength(y_label, font=font))) // 2), 0), y_label, fill=(0, 0, 0), font=font
    )
    img.paste(axis.rotate(90, expand=True), (2, top))
    lut = _lut("turbo")
    n = max(len(curves), 1)
    column = (width - 8) // per_row
    for i, (label, curve) in enumerate(curves.items()):
        colour = tuple(int(c * 255) for c in lut[round(30 + (200 * i) / max(n - 1, 1))].tolist())
        values = torch.nan_to_num(curve.detach().float().cpu().flatten(), nan=0.0).clamp(0, 1).tolist()
        k = max(len(values) - 1, 1)
        points = [(left + (right - left) * j / k, bottom - (bottom - top) * v) for j, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        x0, y0 = 6 + column * (i % per_row), height + 2 + legend_line * (i // per_row)
        draw.line((x0, y0 + 7, x0 + 12, y0 + 7), fill=colour, width=3)
        draw.text((x0 + 16, y0), _fit(draw, label, column - 20, font), fill=(0, 0, 0), font=font)
    return _to_tensor(img)
