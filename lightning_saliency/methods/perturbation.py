"""Perturbation methods: Occlusion (Zeiler & Fergus 2014, captum's ``Occlusion``) and RISE (Petsiuk et al. 2018).

Both only run forwards (no gradients, under ``torch.inference_mode``), batched over images and perturbations with a
memory bound: ``batch_size`` perturbed images per forward, halved on out-of-memory (:func:`run_chunked`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_saliency._baselines import Baseline, perturbation_baseline
from lightning_saliency._checks import an_int, int_at_least
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import AttributionMethod, SaliencyMethod
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target, UndefinedForTarget

__all__ = ["RISE", "Occlusion", "occlusion_windows", "rise_draws", "rise_masks", "upsampling_matrix"]

Sizes = int | tuple[int, ...]
"""One size for every axis, or one per axis: ``(height, width)`` (volumes: ``(depth, height, width)``)."""


def _sizes(value: Sizes | None, arg: str) -> int | tuple[int, ...] | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    if (
        not isinstance(value, tuple)
        or len(value) not in (2, 3)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(
            f"{arg} must be None, an int >= 1 or one per axis ((height, width), volumes (depth, height, width)), "
            f"got {value!r}."
        )
    return value


def _per_axis(value: int | tuple[int, ...], size: tuple[int, ...], arg: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * len(size)
    if len(value) != len(size):
        raise ValueError(f"{arg} {value} has {len(value)} sizes but the inputs have {len(size)} axes {size}.")
    return value


def _needs_confidence(method: SaliencyMethod, targets: Target) -> None:
    if not targets.has_confidence:
        raise UndefinedForTarget(
            f"{method.label} reads the target's probability, which {type(targets).__name__} does not define (its "
            "output is unbounded)."
        )


def occlusion_windows(size: int, window: int, stride: int) -> Tensor:
    """Start offsets ``[n]`` of captum's sliding windows along one axis of ``size`` pixels.

    ``n = ceil((size - window) / stride) + 1`` windows start at ``0, stride, 2 stride, ...``; the last one may
    stick out of the image (then it is cut off), as in captum's ``Occlusion``. A window larger than the axis is cut
    to it (captum refuses it).

    Example:
        >>> occlusion_windows(10, 4, 4).tolist()  # the last window covers pixels 8 and 9 only
        [0, 4, 8]
    """
    window = min(window, size)
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


@register_method("occlusion")
class Occlusion(AttributionMethod):
    """Occlusion: the drop of the target score when a window around the pixel is replaced by a baseline, averaged.

    A ``window`` (all channels) slides over the image by ``stride``; for each position ``j`` the input with the
    window replaced by the baseline is scored, and every pixel of the window gets ``S(x) - S(x_j)``; a pixel's
    attribution is the mean over the windows that cover it (captum's ``Occlusion`` with
    ``sliding_window_shapes=(C, h, w)``, ``strides=(C, sh, sw)``, equal to it). Volumes ``[B, C, D, H, W]`` get
    3-D windows ``(d, h, w)``. ``S`` is the target's
    :meth:`~lightning_saliency.targets.Target.score` (``read="score"``, captum's: the model's output, a class's
    logit) or its probability (``read="confidence"``). The map is signed (negative where occluding raises the
    score); the engine's min-max then puts the largest drop at 1.

    Cost: one forward of the batch, then one forward per (window position, image): ``ceil((H - h) / sh + 1) *
    ceil((W - w) / sw + 1)`` per image, about 15 x 15 = 225 with the default window (an eighth of each side, rounded
    up, and half of it as stride, whatever the size); ``batch_size`` occluded images per forward, no autograd.

    Args:
        window: Window ``(h, w)`` (volumes ``(d, h, w)``) or one int for every axis; ``None``: an eighth of each side,
            rounded up. Cut to the image if larger.
        stride: Shift between windows (or one int), at most the window; ``None``: half the window, rounded up.
        baseline: What occluded pixels become: ``"zero"`` (captum's default), ``"mean"``, ``"blur"``, a float or a
            tensor broadcastable to the inputs.
        read: ``"score"`` (the target's score, captum's) or ``"confidence"`` (its probability).
        batch_size: Occluded images per forward.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> Occlusion(window=4, stride=2)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    READS: ClassVar[tuple[str, ...]] = ("score", "confidence")

    def __init__(
        self,
        window: Sizes | None = None,
        stride: Sizes | None = None,
        baseline: Baseline = "zero",
        read: str = "score",
        batch_size: int = 64,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.window, self.stride = _sizes(window, "window"), _sizes(stride, "stride")
        if self.window is not None and self.stride is not None:
            axes = max(len(v) if isinstance(v, tuple) else 1 for v in (self.window, self.stride))
            window_ = _per_axis(self.window, (0,) * axes, "window")
            stride_ = _per_axis(self.stride, (0,) * axes, "stride")
            if any(s > w for s, w in zip(stride_, window_, strict=True)):
                raise ValueError(f"stride {stride} must not exceed the window {window}: pixels would be skipped.")
        if read not in self.READS:
            raise ValueError(f"read must be one of {', '.join(map(repr, self.READS))}, got {read!r}.")
        if not isinstance(baseline, Tensor):
            perturbation_baseline(torch.zeros(1, 1, 1, 1), baseline)  # fails early on an unknown baseline
        self.baseline, self.read, self.batch_size = (
            baseline,
            read,
            int_at_least(batch_size, 1, "batch_size", "occluded images per forward"),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, window={self.window}, stride={self.stride})"

    def geometry(self, size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The window and stride ``((h, w), (sh, sw))`` used on inputs of ``size`` (cut to it; defaults filled)."""
        asked = tuple(math.ceil(side / 8) for side in size) if self.window is None else self.window
        window = tuple(min(w, side) for w, side in zip(_per_axis(asked, size, "window"), size, strict=True))
        strides = tuple(math.ceil(w / 2) for w in window) if self.stride is None else self.stride
        stride = _per_axis(strides, size, "stride")
        for axis in range(len(size)):
            if stride[axis] > window[axis] and window[axis] < size[axis]:
                raise ValueError(
                    f"stride {stride} exceeds the window {window} (cut to the input size {size}): pixels would be "
                    "skipped. Use a smaller stride or a larger window."
                )
        return window, stride

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Occlusion's attributions are its map ``[B, 1, H, W]``."""
        return self.compute(model, inputs, targets, run)

    def _read(self, targets: Target, logits: Tensor) -> Tensor:
        return (targets.score(logits) if self.read == "score" else targets.confidence(logits)).float()

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Mean score drop over the windows covering each pixel, ``[B, 1, H, W]``."""
        if self.read == "confidence":
            _needs_confidence(self, targets)
        b, size = inputs.shape[0], tuple(inputs.shape[2:])  # (H, W), or (D, H, W) for volumes
        window, stride = self.geometry(size)
        with torch.inference_mode():
            logits = run.output(model, inputs)
        targets.check(logits)
        original = self._read(targets, logits.clone())  # [B]
        base = perturbation_baseline(inputs, self.baseline)  # [B,C,H,W]
        offsets = [occlusion_windows(side, w, s) for side, w, s in zip(size, window, stride, strict=True)]
        starts = torch.cartesian_prod(*offsets).view(-1, len(size)).to(inputs.device)  # [n,2] (top, left) row-major
        axes = [torch.arange(side, device=inputs.device) for side in size]

        def masks(index: Tensor) -> Tensor:  # [m] window indices -> [m,1,H,W] float32 masks of the windows
            mask = torch.ones((index.numel(), *([1] * len(size))), device=inputs.device)
            for axis, (coords, w) in enumerate(zip(axes, window, strict=True)):
                first = starts[index, axis, None]  # [m,1]
                inside = ((coords >= first) & (coords < first + w)).float()  # [m,side]
                mask = mask * inside.view(-1, *[side if a == axis else 1 for a, side in enumerate(size)])
            return mask[:, None]

        total = torch.zeros((b, 1, *size), device=inputs.device)  # [B,1,H,W]

        def occluded_chunk(start: int, stop: int) -> None:
            index = torch.arange(start, stop, device=inputs.device)
            win, img = index // b, index % b  # window-major rows, as captum's perturbations_per_eval
            m = masks(win).to(inputs.dtype)  # [n,1,H,W]
            occluded = inputs[img] * (1 - m) + base[img] * m  # captum's ablated input
            with torch.inference_mode():
                out = run.output(model, occluded)
            drop = original[img] - self._read(targets[img], out.clone())  # [n]
            total.index_add_(0, img, drop.view(-1, *([1] * (m.ndim - 1))) * m.float())  # last: safe to retry on OOM

        run_chunked(occluded_chunk, starts.shape[0] * b, self.batch_size, what="occluded images")
        counts = masks(torch.arange(starts.shape[0], device=inputs.device)).sum(0, keepdim=True)  # [1,1,H,W] >= 1
        return total / counts


def upsampling_matrix(size_in: int, size_out: int) -> Tensor:
    """``[size_out, size_in]`` float32 weights of linear upsampling along one axis, as RISE's code upsamples.

    scikit-image's ``resize(order=1, mode="reflect", anti_aliasing=False)``: output pixel ``o`` samples the input at
    ``(o + 0.5) * size_in / size_out - 0.5`` (pixel centres), linearly between its two neighbours, mirrored at the
    borders (``-t`` reads ``t``; numpy's ``reflect``).

    Example:
        >>> upsampling_matrix(2, 4)
        tensor([[0.7500, 0.2500],
                [0.7500, 0.2500],
                [0.2500, 0.7500],
                [0.2500, 0.7500]])
    """
    if size_in == 1:
        return torch.ones(size_out, 1)
    coord = (torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5  # [out]
    low = coord.floor()
    frac = coord - low
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    period = 2 * (size_in - 1)
    for index, w in ((low, 1 - frac), (low + 1, frac)):
        mirrored = index.long().remainder(period)
        mirrored = torch.where(mirrored > size_in - 1, period - mirrored, mirrored)  # [out] in [0, size_in)
        weights.index_put_((torch.arange(size_out), mirrored), w, accumulate=True)
    return weights.float()


def rise_draws(num_masks: int, grid_size: int, p: float, seed: int, dims: int = 2) -> tuple[Tensor, Tensor]:
    """RISE's random draws, from a private CPU generator seeded with ``seed``: grids and shifts.

    Returns:
        ``grids [N, s, s]`` (``dims = 3``, volumes: ``[N, s, s, s]``) float32 in {0, 1} (each cell kept with
        probability ``p``) and ``shifts [N, dims]`` float64 uniform in [0, 1): the fractions of a cell that the
        upsampled grid is shifted by (rows, columns), so the same draws serve any image size.

    Example:
        >>> grids, shifts = rise_draws(4, 3, 0.5, seed=0)
        >>> grids.shape, shifts.shape, set(grids.unique().tolist()) <= {0.0, 1.0}
        (torch.Size([4, 3, 3]), torch.Size([4, 2]), True)
    """
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand((num_masks, *[grid_size] * dims), generator=generator) < p).float()
    shifts = torch.rand((num_masks, dims), generator=generator, dtype=torch.float64)
    return grids, shifts


def rise_masks(grids: Tensor, shifts: Tensor, size: tuple[int, ...]) -> Tensor:
    """RISE masks ``[N, H, W]`` (float32 in [0, 1]) of ``grids [N, s, s]`` for images of ``size``, Petsiuk et al.

    The paper's algorithm (the authors' ``generate_masks``): the cell size is ``c = ceil(H / s)`` (and
    ``ceil(W / s)``); each grid is upsampled linearly (:func:`upsampling_matrix`) to ``(s + 1) * c`` pixels a side
    and cropped to ``H x W`` from offset ``floor(shift * c)``. Computed as ``R_y G R_x^T`` with the crop's rows of
    the upsampling matrices (no full-size intermediate); volumes (``[N, s, s, s]`` grids, ``size = (D, H, W)``) are
    upsampled along each of the three axes the same way.

    Example:
        >>> grids, shifts = rise_draws(2, 3, 0.5, seed=0)
        >>> rise_masks(grids, shifts, (8, 6)).shape
        torch.Size([2, 8, 6])
    """
    s = grids.shape[-1]
    mats = []
    for axis, side in enumerate(size):
        cell = math.ceil(side / s)
        matrix = upsampling_matrix(s, (s + 1) * cell).to(grids.device)  # [(s+1)c, s]
        offset = (shifts[:, axis] * cell).floor().long().clamp(0, cell - 1).to(grids.device)  # [N]
        mats.append(matrix[offset[:, None] + torch.arange(side, device=grids.device)])  # [N,side,s]
    if len(size) == 2:
        return mats[0] @ grids @ mats[1].transpose(1, 2)  # [N,H,W]
    return torch.einsum("nai,nbj,nck,nijk->nabc", *mats, grids)  # [N,D,H,W]


@register_method("rise")
class RISE(SaliencyMethod):
    """RISE (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", 2018).

    ``M = sum_i p_t(x * M_i) M_i / (N * p)``: the target's probability
    (:meth:`~lightning_saliency.targets.Target.confidence`) on the input multiplied by each of ``N`` random masks,
    as a weight of that mask. The masks follow the paper's algorithm (:func:`rise_masks`): binary ``s x s`` grids
    (cells kept with probability ``p``), upsampled linearly to ``(s + 1)`` cells and cropped at a random shift
    (volumes: ``s x s x s`` grids, upsampled along the three axes). The
    grids and shifts come from a private generator seeded with ``seed`` (:func:`rise_draws`), the same for every
    image and call, so maps are reproducible, do not depend on the batch, and training's RNG stream is untouched.
    The paper's defaults are ``s = 7``, ``p = 0.5`` and ``N = 4000`` (ResNet-50); fewer masks give noisier maps.

    Cost: one forward of the batch (to check the targets), then ``num_masks`` forwards per image, ``batch_size`` per
    forward, no autograd; masks are built per chunk (memory: ``batch_size`` masked inputs and their masks).

    Args:
        num_masks: Random masks ``N`` per image.
        grid_size: Cells ``s`` per side of the grids.
        p: Probability that a cell is kept.
        batch_size: Masked images per forward.
        seed: Seed of the masks.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> RISE(num_masks=16)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        num_masks: int = 500,
        grid_size: int = 7,
        p: float = 0.5,
        batch_size: int = 64,
        seed: int = 0,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        int_at_least(num_masks, 1, "num_masks")
        int_at_least(grid_size, 1, "grid_size")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"p must be a probability in (0, 1], got {p!r}.")
        self.num_masks, self.grid_size, self.p, self.seed = num_masks, grid_size, float(p), an_int(seed, "seed")
        self.batch_size = int_at_least(batch_size, 1, "batch_size", "masked images per forward")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, num_masks={self.num_masks}, grid_size={self.grid_size})"

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``sum_i p_t(x * M_i) M_i / (N p)``, ``[B, 1, H, W]``."""
        _needs_confidence(self, targets)
        b, size = inputs.shape[0], tuple(inputs.shape[2:])  # (H, W), or (D, H, W) for volumes
        with torch.inference_mode():
            targets.check(run.output(model, inputs))
        grids, shifts = rise_draws(self.num_masks, self.grid_size, self.p, self.seed, dims=len(size))
        grids = grids.to(inputs.device)
        total = torch.zeros((b, 1, *size), device=inputs.device)  # [B,1,H,W]

        def masked_chunk(start: int, stop: int) -> None:
            index = torch.arange(start, stop, device=inputs.device)
            mask_idx, img = index // b, index % b  # mask-major rows: a chunk builds few masks
            first = start // b
            masks = rise_masks(grids[first : (stop - 1) // b + 1], shifts[first : (stop - 1) // b + 1], size)
            m = masks[mask_idx - first][:, None]  # [n,1,H,W]
            with torch.inference_mode():
                out = run.output(model, (inputs[img].float() * m).to(inputs.dtype))
            confidence = targets[img].confidence(out.clone()).float()  # [n]
            total.index_add_(0, img, confidence.view(-1, *([1] * (m.ndim - 1))) * m)  # last: safe to retry on OOM

        run_chunked(masked_chunk, self.num_masks * b, self.batch_size, what="masked images")
        return total / (self.num_masks * self.p)
