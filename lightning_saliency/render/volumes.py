"""Volumes and videos as pictures: each ``[C, D, H, W]`` sample becomes one 2-D cell the grids can draw.

Two views (``volume_view=`` of :class:`~lightning_saliency.SaliencyMonitor`):

* ``"slices"`` (medical volumes): the axial, coronal and sagittal planes through one voxel, then the
  maximum-intensity projection along the depth (``max`` over ``D``), side by side; the coronal (``D x W``) and
  sagittal (``D x H``) planes are stretched to the axial plane's height ``H``. The voxel is each sample's
  *consensus peak*, the argmax of the mean of the methods' maps, so every method's cell shows the same planes (and
  the filmstrips the same planes at every epoch);
* ``"frames"`` (video ``[C, T, H, W]``): ``FRAMES`` frames evenly spaced in time, left to right.

A thin gap separates the planes (white in the images, zero in the maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FRAMES", "PANELS", "VOLUME_VIEWS", "describe_planes", "flatten_volumes", "volume_peaks"]

VOLUME_VIEWS = ("slices", "frames")
FRAMES = 4
PANELS = 4
"""Images side by side in one cell, at most: three slices and the projection, or ``FRAMES`` frames."""


def volume_peaks(maps: Sequence[Tensor]) -> Tensor:
    """Each sample's consensus peak ``[B, 3]`` as voxel indices ``(d, h, w)``: the argmax of the maps' mean.

    ``maps`` are ``[B, 1, D, H, W]`` each (any values; NaN counts as 0). Ties go to the first voxel in C order.

    Example:
        >>> m = torch.zeros(1, 1, 2, 3, 4)
        >>> m[0, 0, 1, 2, 3] = 1.0
        >>> volume_peaks([m, m]).tolist()
        [[1, 2, 3]]
    """
    if not maps:
        raise ValueError("volume_peaks needs at least one map batch [B, 1, D, H, W], got none.")
    consensus = torch.stack([torch.nan_to_num(m.detach().float().cpu()) for m in maps]).mean(0)[:, 0]  # [B,D,H,W]
    h, w = consensus.shape[-2:]
    flat = consensus.flatten(1).argmax(1)  # [B]
    return torch.stack([flat // (h * w), (flat // w) % h, flat % w], 1)


def _frames(depth: int) -> list[int]:
    return torch.linspace(0, depth - 1, min(depth, FRAMES)).round().long().tolist()


def flatten_volumes(volumes: Tensor, view: str, peaks: Tensor | None = None, fill: float = 1.0) -> Tensor:
    """Volumes ``[B, C, D, H, W]`` as 2-D cells ``[B, C, H, W']`` (see the module's docstring for the views).

    Args:
        volumes: Display images or maps, ``[B, C, D, H, W]``.
        view: ``"slices"`` or ``"frames"``.
        peaks: For ``"slices"``: the voxel ``[B, 3]`` each sample's planes pass through
            (:func:`volume_peaks`); ``None`` for the centre.
        fill: The value of the gaps between planes (``1`` white for images, ``0`` for maps).

    Example:
        >>> flatten_volumes(torch.rand(2, 3, 4, 8, 6), "slices").shape  # 6 + gap + 6 + gap + 8 + gap + 6
        torch.Size([2, 3, 8, 29])
        >>> flatten_volumes(torch.rand(2, 1, 9, 8, 6), "frames").shape  # 4 frames of 6, 3 gaps
        torch.Size([2, 1, 8, 27])
    """
    if view not in VOLUME_VIEWS:
        raise ValueError(f"volume_view must be one of {VOLUME_VIEWS}, got {view!r}.")
    if volumes.ndim != 5:
        raise ValueError(f"flatten_volumes needs volumes [B, C, D, H, W], got shape {tuple(volumes.shape)}.")
    x = volumes.detach().float().cpu()
    b, c, d, h, w = x.shape
    if peaks is None:
        peaks = torch.tensor([[d // 2, h // 2, w // 2]] * b)
    gap = torch.full((c, h, max(1, h // 32)), float(fill))
    cells = []
    for i in range(b):
        if view == "slices":
            z, y, v = (int(p) for p in peaks[i])
            planes = [
                x[i, :, z],  # axial [C,H,W]
                _stretch(x[i, :, :, y], (h, w)),  # coronal [C,D,W] -> [C,H,W]
                _stretch(x[i, :, :, :, v], (h, h)),  # sagittal [C,D,H] -> [C,H,H]
                x[i].amax(1),  # maximum-intensity projection along the depth [C,H,W]
            ]
        else:
            planes = [x[i, :, t] for t in _frames(d)]
        pieces = [planes[0]]
        for plane in planes[1:]:
            pieces += [gap, plane]
        cells.append(torch.cat(pieces, -1))  # [C,H,W']
    return torch.stack(cells) if cells else x.new_zeros(0, c, h, w)


def _stretch(plane: Tensor, size: tuple[int, int]) -> Tensor:
    """``[C, h, w]`` resized (bilinear) to ``size``."""
    if tuple(plane.shape[-2:]) == size:
        return plane
    return F.interpolate(plane[None], size=size, mode="bilinear", align_corners=False)[0]


def describe_planes(view: str, shape: Sequence[int], peaks: Tensor | None) -> tuple[str, list[str]]:
    """What the cells show: one sentence for the whole grid, and one text per sample (its planes or frames).

    ``shape`` is the volumes' spatial shape ``(D, H, W)``.

    Example:
        >>> describe_planes("frames", (9, 8, 6), None)[0]
        'each cell: frames 0, 3, 5, 8 of 9'
        >>> describe_planes("slices", (4, 8, 6), torch.tensor([[1, 2, 3]]))[1]
        ['slices d=1 h=2 w=3']
    """
    if view == "frames":
        return f"each cell: frames {', '.join(map(str, _frames(shape[0])))} of {shape[0]}", []
    rows = [] if peaks is None else [f"slices d={int(z)} h={int(y)} w={int(x)}" for z, y, x in peaks.tolist()]
    return "each cell: axial, coronal, sagittal slices through the methods' consensus peak, then the MIP", rows
