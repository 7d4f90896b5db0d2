"""Localisation drawn: predicted and true boxes, and masks, over the images or their overlays."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from lightning_saliency.localisation import _boxes, _maps, _masks
from lightning_saliency.render.colour import COLORMAPS, overlay

__all__ = ["Colour", "draw_localisation"]

Colour = str | tuple[int, int, int]
"""A colour name or an RGB tuple."""


def draw_localisation(
    images: Tensor,
    maps: Tensor | None,
    boxes_pred: Tensor,
    boxes_true: Tensor | None = None,
    masks: Tensor | None = None,
    *,
    true_masks: Tensor | None = None,
    alpha: float = 0.5,
    colormap: str = "turbo",
    pred_colour: Colour = "red",
    true_colour: Colour = "lime",
    mask_colour: Colour = "white",
    width: int = 1,
) -> Tensor:
    """Draw predicted (and true) boxes, and optional masks, over the images (or over their saliency overlays).

    Args:
        images: Displayable ``[B, 3, H, W]`` in [0, 1] (see :func:`lightning_saliency.render.to_display`).
        maps: ``[B, 1, H, W]`` maps in [0, 1] to blend under the boxes (as :func:`lightning_saliency.render.overlay`),
            or ``None`` to draw on the images themselves.
        boxes_pred: ``[B, 4]`` predicted boxes (half-open, see the module docstring), drawn in ``pred_colour``.
        boxes_true: ``[B, 4]`` ground-truth boxes, drawn in ``true_colour``, or ``None``.
        masks: ``[B, H, W]`` bool masks (e.g. the thresholded saliency) shaded in ``mask_colour``, or ``None``.
        true_masks: ``[B, H, W]`` bool ground-truth masks, outlined (their boundary pixels) in ``true_colour``.
        alpha: Opacity of the heat map and of the masks.
        colormap: A name in :data:`lightning_saliency.render.COLORMAPS`.
        pred_colour: Colour name or RGB tuple of the predicted boxes.
        true_colour: Colour of the ground-truth boxes.
        mask_colour: Colour of the masks.
        width: Line width of the boxes in pixels.

    Returns:
        ``[B, 3, H, W]`` float32 in [0, 1], on the CPU. Each box's outline is drawn on its outermost pixels
        (rows ``y1`` and ``y2 - 1``, columns ``x1`` and ``x2 - 1``); empty boxes are not drawn.

    Raises:
        ValueError: If the shapes do not match or an argument is out of range.

    Example:
        >>> out = draw_localisation(torch.zeros(1, 3, 6, 6), None, torch.tensor([[1.0, 1.0, 4.0, 5.0]]))
        >>> out[0, 0].int()
        tensor([[0, 0, 0, 0, 0, 0],
                [0, 1, 1, 1, 0, 0],
                [0, 1, 0, 1, 0, 0],
                [0, 1, 0, 1, 0, 0],
                [0, 1, 1, 1, 0, 0],
                [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be displayable RGB [B, 3, H, W] in [0, 1] (see render.to_display), got {got}.")
    b, _, h, w = images.shape
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a float in [0, 1], got {alpha!r}.")
    if colormap not in COLORMAPS:
        raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}.")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}.")
    canvas = images.detach().float().cpu().clamp(0, 1)
    if maps is not None:
        maps = _maps(maps)
        if tuple(maps.shape) != (b, h, w):
            raise ValueError(f"maps must have shape [B, 1, H, W] = {[b, 1, h, w]}, got {tuple(maps.shape)}.")
        canvas = overlay(canvas, maps[:, None].cpu(), alpha, colormap)
    pred = _boxes(boxes_pred, b, "boxes_pred")
    true = _boxes(boxes_true, b, "boxes_true") if boxes_true is not None else None
    shade = None
    if masks is not None:
        shade = _masks(masks, "masks").cpu()
        if tuple(shade.shape) != (b, h, w):
            raise ValueError(f"masks must have shape [B, H, W] = {[b, h, w]}, got {tuple(shade.shape)}.")
    outline = None
    if true_masks is not None:
        outline = _masks(true_masks, "true_masks").cpu()
        if tuple(outline.shape) != (b, h, w):
            raise ValueError(f"true_masks must have shape [B, H, W] = {[b, h, w]}, got {tuple(outline.shape)}.")
        outline = _boundary(outline)
    pixels = (canvas * 255).round().to(torch.uint8)  # [B,3,H,W]
    out = []
    for i in range(b):
        img = pixels[i]
        if shade is not None:
            img = draw_segmentation_masks(img, shade[i][None], alpha=float(alpha), colors=[mask_colour])
        if outline is not None:
            img = draw_segmentation_masks(img, outline[i][None], alpha=1.0, colors=[true_colour])
        img = _draw_box(img, pred[i], pred_colour, width)
        if true is not None:
            img = _draw_box(img, true[i], true_colour, width)
        out.append(img)
    return torch.stack(out).float() / 255


def _boundary(masks: Tensor) -> Tensor:
    """The pixels of ``masks [B, H, W]`` with a 4-neighbour outside the mask (or on the image border).

    Example:
        >>> _boundary(torch.ones(1, 3, 3, dtype=torch.bool))[0].int().tolist()
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    """
    outside = F.pad((~masks).float()[:, None], (1, 1, 1, 1), value=1.0)  # [B,1,H+2,W+2]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return masks & (F.conv2d(outside, cross)[:, 0] > 0)


def _draw_box(image: Tensor, box: Tensor, colour: Colour, width: int) -> Tensor:
    x1, y1, x2, y2 = box.tolist()
    if x2 <= x1 or y2 <= y1:
        return image  # empty box: nothing to draw
    # half-open pixel box -> the inclusive corners PIL draws between
    corners = torch.tensor([[x1, y1, x2 - 1, y2 - 1]], dtype=torch.float32)
    return draw_bounding_boxes(image, corners, colors=[colour], width=width)
