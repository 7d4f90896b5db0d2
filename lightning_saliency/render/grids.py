"""Grids: one row per probe image, titled columns (input, heat maps, overlays, epochs), captions, wrapping."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_saliency.render.colour import apply_colormap, overlay
from lightning_saliency.render.text import _PAD, _caption, _font, _font_size, _text_strip

__all__ = ["column_grid", "filmstrip_grid", "method_grid", "overview_grid"]


def _upscale(cells: Tensor, min_size: int) -> Tensor:
    """Nearest-neighbour upscale by an integer factor so the shorter side is at least ``min_size``."""
    short = min(cells.shape[-2:])
    factor = max(1, -(-min_size // max(short, 1)))
    return cells if factor == 1 else F.interpolate(cells, scale_factor=factor, mode="nearest")


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
