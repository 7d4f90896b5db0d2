"""Plots: the mean deletion/insertion curves, one line per method."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from lightning_saliency.render.colour import _lut
from lightning_saliency.render.text import _fit, _font, _line_height, _to_tensor

__all__ = ["curve_plot"]


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
