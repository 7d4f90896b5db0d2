"""Synthetic "shapes on textured backgrounds": an image classification task whose truth is known.

Each image holds one object (disc, square or cross, class 0/1/2) in a random colour, size and position, on a
smooth random background. Everything is made in code from a seed, so no download is needed, and the object's
bounding box is known: a good saliency map should light up the object, not the background.

Optionally a small coloured *marker* sits in the top-left corner. With ``marker=1.0`` its colour (red, green,
blue) always matches the class: a spurious shortcut a network can learn instead of the shapes. With
``marker=0.0`` its colour is random, so the shortcut no longer predicts the label.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

CLASSES = ("disc", "square", "cross")
MARKER_COLOURS = ((0.95, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.2, 0.95))
MARKER_SIZE = 7
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _shape_mask(kind: int, size: int, cy: Tensor, cx: Tensor, r: Tensor) -> Tensor:
    """``[N, size, size]`` bool masks of one shape kind centred at (cy, cx) with half-size r."""
    yy = torch.arange(size, dtype=torch.float32)[None, :, None]
    xx = torch.arange(size, dtype=torch.float32)[None, None, :]
    dy, dx = (yy - cy[:, None, None]).abs(), (xx - cx[:, None, None]).abs()
    rr = r[:, None, None]
    if kind == 0:  # disc
        return dy.pow(2) + dx.pow(2) <= rr.pow(2)
    if kind == 1:  # square
        return (dy <= rr * 0.85) & (dx <= rr * 0.85)
    arm = rr * 0.33  # cross
    return ((dy <= arm) & (dx <= rr)) | ((dx <= arm) & (dy <= rr))


def make_shapes(n: int, size: int = 64, seed: int = 0, marker: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` images ``[n, 3, size, size]`` in [0, 1], labels ``[n]`` and object boxes ``[n, 4]`` (x1, y1, x2, y2).

    Args:
        n: Number of images.
        size: Side in pixels.
        seed: Seed of everything random.
        marker: ``None`` for no corner marker; otherwise the probability that the marker's colour gives away the
            class (else its colour is drawn at random).
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    grey = torch.rand(n, 1, size // 8, size // 8, generator=g)  # smooth, mostly grey background texture
    tint = 0.25 * torch.rand(n, 3, size // 8, size // 8, generator=g)
    low = 0.75 * grey + tint
    images = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 0.6 + 0.2
    r = size * (0.12 + 0.1 * torch.rand(n, generator=g))
    free = MARKER_SIZE + 2  # objects stay clear of the marker's corner
    cy = free + r + (size - free - 2 * r) * torch.rand(n, generator=g)
    cx = free + r + (size - free - 2 * r) * torch.rand(n, generator=g)
    colours = torch.rand(n, 3, generator=g)
    colours = torch.where(colours.mean(1, keepdim=True) > 0.5, colours, 1 - colours)  # bright objects
    for kind in range(len(CLASSES)):
        idx = (labels == kind).nonzero().flatten()
        mask = _shape_mask(kind, size, cy[idx], cx[idx], r[idx])[:, None]  # [k,1,H,W]
        images[idx] = torch.where(mask, colours[idx][:, :, None, None], images[idx])
    if marker is not None:
        honest = torch.rand(n, generator=g) < marker
        marker_class = torch.where(honest, labels, torch.randint(0, len(CLASSES), (n,), generator=g))
        images[:, :, 1 : 1 + MARKER_SIZE, 1 : 1 + MARKER_SIZE] = torch.tensor(MARKER_COLOURS)[marker_class][
            :, :, None, None
        ]
    images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    boxes = torch.stack([cx - r, cy - r, cx + r, cy + r], 1).clamp(0, size).floor()
    return images, labels, boxes


def make_scenes(n: int, size: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` scenes ``[n, 3, size, size]`` in [0, 1], each holding one disc, one square and one cross, and their
    segmentation ``[n, size, size]`` (0 background, 1 disc, 2 square, 3 cross: ``SCENE_CLASSES``).

    Each shape sits in its own quadrant (three of the four, at random), in a random colour and size.
    """
    g = torch.Generator().manual_seed(seed)
    grey = torch.rand(n, 1, size // 8, size // 8, generator=g)
    low = 0.75 * grey + 0.25 * torch.rand(n, 3, size // 8, size // 8, generator=g)
    images = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 0.6 + 0.2
    segmentation = torch.zeros(n, size, size, dtype=torch.long)
    half = size / 2
    quadrants = torch.stack([torch.randperm(4, generator=g)[:3] for _ in range(n)])  # [n,3] quadrant of each kind
    for kind in range(len(CLASSES)):
        q = quadrants[:, kind]
        r = half * (0.25 + 0.15 * torch.rand(n, generator=g))
        cy = (q // 2).float() * half + half / 2 + (half / 2 - r) * (2 * torch.rand(n, generator=g) - 1)
        cx = (q % 2).float() * half + half / 2 + (half / 2 - r) * (2 * torch.rand(n, generator=g) - 1)
        mask = _shape_mask(kind, size, cy, cx, r)  # [n,H,W]
        colours = torch.rand(n, 3, generator=g)
        colours = torch.where(colours.mean(1, keepdim=True) > 0.5, colours, 1 - colours)
        images = torch.where(mask[:, None], colours[:, :, None, None], images)
        segmentation[mask] = kind + 1
    images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    return images, segmentation


SCENE_CLASSES = ("background", *CLASSES)


class ScenesDataset(Dataset):
    """Normalised scenes as dicts ``{"image", "mask"}`` (the mask: each pixel's category, ``SCENE_CLASSES``).

    SaliencyMonitor takes the ``"mask"`` as the probe's segmentation: with ``SegmentationTarget(category)`` the maps
    explain the category's logits over its true pixels, and the localisation scores compare them with that mask.
    """

    classes = SCENE_CLASSES

    def __init__(self, n: int, size: int = 64, seed: int = 0) -> None:
        images, self.masks = make_scenes(n, size, seed)
        mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
        self.images = (images - mean) / std

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


class ShapesDataset(Dataset):
    """Normalised shape images as dicts ``{"image", "label", "box"}``.

    The ``"box"`` lets SaliencyMonitor score localisation (pointing game, energy pointing game); ``classes`` gives
    its grids the class names (as torchvision's ``ImageFolder`` does).
    """

    classes = CLASSES

    def __init__(self, n: int, size: int = 64, seed: int = 0, marker: float | None = None) -> None:
        images, self.labels, self.boxes = make_shapes(n, size, seed, marker)
        mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
        self.images = (images - mean) / std

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "box": self.boxes[i]}


if __name__ == "__main__":  # pragma: no cover
    x, y, b = make_shapes(6)
    print(x.shape, y.tolist(), b[:2].tolist(), math.isfinite(float(x.sum())))
