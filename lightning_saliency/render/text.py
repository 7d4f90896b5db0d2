"""Text in the pictures: fonts sized for TensorBoard's card width, title strips, captions, the rows' labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["CARD_WIDTH", "row_labels"]

_PAD = 2
CARD_WIDTH = 350
"""The width (px) at which TensorBoard's IMAGES cards show an image, unless *Show actual image size* is ticked.

Text in the grids is sized so that it reads at about 11 px there: ``11 * grid width / CARD_WIDTH``, at least 11.
"""


def _font_size(width: int) -> int:
    return max(11, round(11 * width / CARD_WIDTH))


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
