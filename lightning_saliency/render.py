"""Rendering saliency maps for people: denormalised inputs, colormapped heat maps, overlays and grids.

Everything returns float images in [0, 1], ``[3, H, W]`` or ``[B, 3, H, W]``, ready for
``SummaryWriter.add_image``. Pure torch (and Pillow, which torchvision already needs, for column titles).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from lightning_saliency._colormaps import COLORMAPS

__all__ = [
    "COLORMAPS",
    "apply_colormap",
    "column_grid",
    "curve_plot",
    "filmstrip_grid",
    "method_grid",
    "overlay",
    "overview_grid",
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


def _upscale(cells: Tensor, min_size: int) -> Tensor:
    """Nearest-neighbour upscale by an integer factor so the shorter side is at least ``min_size``."""
    short = min(cells.shape[-2:])
    factor = max(1, -(-min_size // max(short, 1)))
    return cells if factor == 1 else F.interpolate(cells, scale_factor=factor, mode="nearest")


def _grid(columns: list[Tensor], titles: list[str], min_size: int) -> Tensor:
    """Rows = images, columns = ``columns`` (each ``[B, 3, H, W]``), with a title strip on top."""
    b = columns[0].shape[0]
    cells = torch.stack(columns, 1).flatten(0, 1)  # [B*n,3,H,W], row-major: image by image
    cells = _upscale(cells, min_size)
    grid = make_grid(cells, nrow=len(columns), padding=2, pad_value=1.0)  # [3,H',W']
    header = _title_strip(titles, cell_width=cells.shape[-1], padding=2, width=grid.shape[-1])
    return torch.cat([header, grid], 1) if header is not None and b else grid


def _title_strip(titles: list[str], cell_width: int, padding: int, width: int) -> Tensor | None:
    """A white strip with each column's title, or ``None`` if Pillow cannot draw text here."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        return None
    height = 14
    strip = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for i, title in enumerate(titles):
        x0 = padding + i * (cell_width + padding)
        text = title
        while text and draw.textlength(text, font=font) > cell_width - 2:
            text = text[:-1]
        draw.text((x0 + 1, 1), text, fill=(0, 0, 0), font=font)
    data = torch.frombuffer(bytearray(strip.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return data.permute(2, 0, 1).float() / 255  # [3,h,W]


def column_grid(columns: dict[str, Tensor], *, min_size: int = 96) -> Tensor:
    """One row per image, one titled column per entry of ``columns`` (each ``[B, 3, H, W]`` in [0, 1]).

    Example:
        >>> column_grid({"a": torch.rand(2, 3, 8, 8), "b": torch.rand(2, 3, 8, 8)}, min_size=8).shape
        torch.Size([3, 36, 22])
    """
    return _grid([c.float().cpu() for c in columns.values()], list(columns), min_size)


def overview_grid(
    images: Tensor,
    maps: dict[str, Tensor],
    *,
    alpha: float = 0.5,
    colormap: str = "turbo",
    min_size: int = 96,
) -> Tensor:
    """One row per image: the input, then each method's overlay. ``[3, H', W']`` in [0, 1].

    Args:
        images: Displayable inputs ``[B, 3, H, W]`` (see :func:`to_display`).
        maps: Method label -> maps ``[B, 1, H, W]`` in [0, 1].
        alpha: Heat-map opacity.
        colormap: A name in :data:`COLORMAPS`.
        min_size: Cells are upscaled (nearest, integer factor) until their shorter side is at least this.

    Example:
        >>> overview_grid(torch.rand(2, 3, 8, 8), {"gradcam": torch.rand(2, 1, 8, 8)}, min_size=8).shape
        torch.Size([3, 36, 22])
    """
    columns = [images.float().cpu(), *(overlay(images, m, alpha, colormap) for m in maps.values())]
    return _grid(columns, ["input", *maps], min_size)


def method_grid(
    images: Tensor, maps: Tensor, *, alpha: float = 0.5, colormap: str = "turbo", min_size: int = 96
) -> Tensor:
    """One row per image: the input, the heat map alone, and the overlay. ``[3, H', W']`` in [0, 1]."""
    columns = [images.float().cpu(), apply_colormap(maps, colormap), overlay(images, maps, alpha, colormap)]
    return _grid(columns, ["input", "heat", "overlay"], min_size)


def filmstrip_grid(
    images: Tensor,
    maps_over_time: Sequence[Tensor],
    titles: Sequence[str],
    *,
    alpha: float = 0.5,
    colormap: str = "turbo",
    min_size: int = 96,
) -> Tensor:
    """One row per image: its overlay at each logged epoch, oldest first. ``[3, H', W']`` in [0, 1].

    Args:
        images: Displayable inputs ``[B, 3, H, W]``.
        maps_over_time: One ``[B, 1, h, w]`` map batch per epoch (any resolution; resized to ``H, W``).
        titles: One column title per epoch (e.g. ``"ep 3"``).
        alpha: Heat-map opacity.
        colormap: A name in :data:`COLORMAPS`.
        min_size: Cells are upscaled until their shorter side is at least this.

    Example:
        >>> maps = [torch.rand(2, 1, 4, 4)] * 3
        >>> filmstrip_grid(torch.rand(2, 3, 8, 8), maps, ["ep 0", "ep 1", "ep 2"], min_size=8).shape
        torch.Size([3, 36, 32])
    """
    size = tuple(images.shape[-2:])
    columns = [
        overlay(
            images, F.interpolate(m.float().cpu(), size=size, mode="bilinear", align_corners=False), alpha, colormap
        )
        for m in maps_over_time
    ]
    return _grid(columns, list(titles), min_size)


def curve_plot(curves: dict[str, Tensor], title: str, *, width: int = 300, height: int = 190) -> Tensor:
    """A small line plot of one curve per method over x in [0, 1] and y in [0, 1]. ``[3, height, width]``.

    Used for the mean deletion/insertion curves (x: fraction of pixels deleted/inserted, y: target
    probability). Colours are spread over the turbo colormap in the order of ``curves``; a legend is drawn.

    Example:
        >>> curve_plot({"gradcam": torch.linspace(1, 0, 5)}, "deletion").shape
        torch.Size([3, 190, 300])
    """
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, top, right, bottom = 28, 16, width - 96, height - 18  # the legend sits right of the plot
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    draw.text((left, 2), title, fill=(0, 0, 0), font=font)
    for y_val in (0.0, 0.5, 1.0):
        y = bottom - y_val * (bottom - top)
        draw.text((4, y - 6), f"{y_val:.1f}", fill=(90, 90, 90), font=font)
    draw.text((left, bottom + 3), "0", fill=(90, 90, 90), font=font)
    draw.text((right - 6, bottom + 3), "1", fill=(90, 90, 90), font=font)
    lut = _lut("turbo")
    n = max(len(curves), 1)
    for i, (label, curve) in enumerate(curves.items()):
        colour = tuple(int(c * 255) for c in lut[round(30 + (200 * i) / max(n - 1, 1))].tolist())
        values = torch.nan_to_num(curve.detach().float().cpu().flatten(), nan=0.0).clamp(0, 1).tolist()
        k = max(len(values) - 1, 1)
        points = [(left + (right - left) * j / k, bottom - (bottom - top) * v) for j, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((right + 6, top + 3 + 11 * i), label[:14], fill=colour, font=font)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return data.permute(2, 0, 1).float() / 255
