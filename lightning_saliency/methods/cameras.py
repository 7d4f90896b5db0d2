"""CAMERAS (Jalwana et al., CVPR 2021), following the authors' ``CAMERAS.py`` (github VisMIL/CAMERAS).

"CAMERAS: Enhanced Resolution And Sanity preserving Class Activation Mapping for image saliency".

The input is upsampled to several resolutions; at each, the target layer's activation ``A`` and the gradient
``G`` of the target's pre-softmax logit w.r.t. it are resized to the input size and averaged over the scales;
the map is ``ReLU(sum_k mean(A)_k * mean(G)_k)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least
from lightning_saliency._chunking import run_chunked
from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import GradientPass, LayerMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import ClassTarget, Target

__all__ = ["CAMERAS", "DEFAULT_CAMERAS_SCALES"]

DEFAULT_CAMERAS_SCALES: tuple[float, ...] = tuple(r / 224 for r in range(224, 1000, 100))
"""The authors' default resolutions ``224, 324, ..., 924`` relative to their 224 input: 1.0, 1.45, ..., 4.13."""

_FUSE_ELEMENTS = 1 << 22  # ~4M fp32 values (16 MiB) per resized [b, k, H, W] block when fusing


@register_method("cameras")
class CAMERAS(LayerMethod):
    """CAMERAS: multi-scale accumulation of activations and gradients, fused at the input resolution.

    For each factor ``f`` in ``scales`` the input is resized to ``(round(f * H), round(f * W))`` (bicubic,
    ``align_corners=False``; a factor giving the input size uses the input as is). One forward and one
    ``torch.autograd.grad`` of the target logit give ``A_s`` and ``G_s`` at the target layer; both are resized
    bilinearly (``align_corners=False``) to the input size ``(H, W)`` and summed in fp32. As in the authors'
    code, with no class of interest, only the scales whose predicted class is the target count
    (``agreeing_scales_only=True``); ``mean`` is over the counted scales. An image where no scale predicts its
    target counts every scale, which is what the authors' code does when given a class of interest
    (``agreeing_scales_only=False``). Map: ``ReLU(sum_k mean(A)_k * mean(G)_k)`` ``[B, 1, H, W]``.

    Beyond the authors' code (batch size 1, square inputs, CUDA only): batches, any device, non-square inputs
    (height and width scaled separately), the trainer's precision for every forward, and bounded memory. Volumes
    ``[B, C, D, H, W]`` (and video ``[B, C, T, H, W]``) scale height and width and keep the depth (time), resizing
    trilinearly.

    Peak memory beyond the model's weights: the forward of ``batch_size`` images at the largest scale, with an
    autograd graph only from the target layer on (the layers before it run without one, so their activations
    are freed as they go); ``2 * sum_s K * h_s * w_s`` fp32 values per image for the layer-resolution
    ``A_s, G_s`` of the current chunk of ``batch_size`` images; and fusion buffers of about 16 MiB (a block of
    channels at a time, resized by matrix products), never the authors' full ``[K, H, W]`` accumulators.

    Args:
        scales: Resize factors relative to the input size (default: the authors' ``range(224, 1000, 100)``
            over 224, i.e. ``(1.0, 1.45, 1.89, 2.34, 2.79, 3.23, 3.68, 4.13)``).
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        batch_size: Images per forward (each forward at every scale).
        agreeing_scales_only: Average only the scales whose prediction is the target (authors' default).
        reshape: How the layer's output (and gradient) become ``[B, K, h, w]``: ``"auto"`` recognises ViT tokens
            and channels-last Swin maps, ``None`` leaves them, or a callable (see :class:`CAMMethod`).
        name: Label in logs (default ``"cameras"``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> CAMERAS(scales=(1.0, 1.5))(net, torch.rand(2, 3, 8, 10), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 10])
    """

    def __init__(
        self,
        scales: Sequence[float] = DEFAULT_CAMERAS_SCALES,
        target_layer: LayerSpec = "auto",
        batch_size: int = 4,
        agreeing_scales_only: bool = True,
        *,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, name=name)
        if (
            isinstance(scales, (str, bytes))
            or not isinstance(scales, Sequence)
            or not scales
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 64 for s in scales)
        ):
            raise ValueError(
                f"scales must be a non-empty sequence of resize factors in (0, 64) relative to the input size, "
                f"e.g. (1.0, 1.5, 2.0), got {scales!r}."
            )
        int_at_least(batch_size, 1, "batch_size", "images per forward")
        if not isinstance(agreeing_scales_only, bool):
            raise TypeError(f"agreeing_scales_only must be a bool, got {agreeing_scales_only!r}.")
        self.scales = tuple(float(s) for s in scales)
        self.batch_size, self.agreeing_scales_only = batch_size, agreeing_scales_only

    def __repr__(self) -> str:
        scales = ", ".join(f"{s:.3g}" for s in self.scales)
        return f"{type(self).__name__}(name={self.label!r}, scales=({scales}), batch_size={self.batch_size})"

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``ReLU(sum_k mean(A)_k * mean(G)_k)``, ``[B, 1, H, W]``."""
        layer = self.layer(model, inputs, run)
        maps = run_chunked(
            lambda lo, hi: self._chunk(model, inputs[lo:hi], targets[lo:hi], layer, run),
            inputs.shape[0],
            self.batch_size,
            what="images",
        )  # on out-of-memory a chunk is retried with half the images
        return torch.cat(maps)  # [B,1,H,W]

    def _pass(
        self, model: nn.Module, x: Tensor, t: Target, layer: nn.Module, run: Run, size: tuple[int, int], factor: float
    ) -> GradientPass:
        """The gradient pass at one scale; a model that asserts its input size gets an error naming ``scales``."""
        try:
            return run_gradient_pass(model, _rescaled(x, size), t, [layer], run, input_grads=False)
        except AssertionError as err:  # timm's and torchvision's input-size checks (torch._assert)
            if size == tuple(x.shape[-2:]):
                raise
            scales = ", ".join(f"{s:.3g}" for s in self.scales)
            raise ValueError(
                f"CAMERAS resizes the input by each of scales=({scales}); {type(model).__name__} failed on the "
                f"input resized by {factor:g} to {tuple(size)}: {err} Pass scales whose sizes the model accepts "
                "(scales=(1.0,) for a model with a fixed input size), or build it for any size (timm's vision "
                "transformers: dynamic_img_size=True, dynamic_img_pad=True)."
            ) from err

    def _chunk(self, model: nn.Module, x: Tensor, t: Target, layer: nn.Module, run: Run) -> Tensor:
        h, w = x.shape[-2:]
        acts: list[Tensor] = []
        grads: list[Tensor] = []
        agree: list[Tensor] = []
        for factor in self.scales:
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            p = self._pass(model, x, t, layer, run, size, factor)
            acts.append(self.feature_map(p.activations[layer], layer, size))  # [b,K,h_s,w_s] fp32
            grads.append(self.reshaped(p.layer_grads[layer], layer, size))  # [b,K,h_s,w_s] fp32
            agree.append(_predicts(p.logits, t))  # [b]
            del p
        counted = torch.stack(agree).float()  # [S,b]
        if not self.agreeing_scales_only:
            counted = torch.ones_like(counted)
        counted[:, counted.sum(0) == 0] = 1.0  # no scale agrees: count them all
        share = counted / counted.sum(0, keepdim=True)  # [S,b] 1/count where counted, else 0
        if x.ndim == 5:
            return F.relu(_fuse_volumes(acts, grads, share, tuple(x.shape[2:])))  # [b,1,D,H,W]
        return F.relu(_fuse(acts, grads, share, (h, w)))  # [b,1,H,W]


def _rescaled(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` with height and width resized to ``size``: bicubic for images, trilinear (depth kept) for volumes."""
    if tuple(x.shape[-2:]) == size:
        return x
    if x.ndim == 5:
        scaled = F.interpolate(x.float(), size=(x.shape[2], *size), mode="trilinear", align_corners=False)
    else:
        scaled = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False)
    return scaled.to(x.dtype)


def _fuse_volumes(acts: list[Tensor], grads: list[Tensor], share: Tensor, size: tuple[int, ...]) -> Tensor:
    """:func:`_fuse` for volumes: each scale's ``A_s, G_s`` resized trilinearly, a block of channels at a time."""
    b, k = acts[0].shape[:2]
    used = [s for s in range(len(acts)) if bool(share[s].any())]
    step = max(1, _FUSE_ELEMENTS // max(1, b * int(torch.tensor(size).prod())))  # channels per block
    saliency = torch.zeros((b, 1, *size), device=acts[0].device)  # [b,1,D,H,W]

    def mean_over_scales(maps: list[Tensor], c: int) -> Tensor:  # channels c:c+step, [b,k',D,H,W]
        resized = [
            share[s][:, None, None, None, None]
            * F.interpolate(maps[s][:, c : c + step], size=size, mode="trilinear", align_corners=False)
            for s in used
        ]
        return torch.stack(resized).sum(0)

    for c in range(0, k, step):
        saliency += (mean_over_scales(acts, c) * mean_over_scales(grads, c)).sum(1, keepdim=True)
    return saliency


def _predicts(logits: Tensor, target: Target) -> Tensor:
    """``[b]``: whether each image's predicted class is its target class (the authors' rule for counting a scale).

    Targets that are not one class per image (no prediction to agree with) count every scale.
    """
    if isinstance(target, ClassTarget):
        return logits.argmax(1) == target.classes.to(logits.device)
    return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)


def _fuse(acts: list[Tensor], grads: list[Tensor], share: Tensor, size: tuple[int, int]) -> Tensor:
    """``sum_k mean(A)_k * mean(G)_k`` at ``size``, the means weighted by ``share [S, b]``; ``[b, 1, H, W]``.

    Bilinear resizing (``align_corners=False``) is separable and linear: resizing ``A_s [h_s, w_s]`` to
    ``[H, W]`` is ``Rh_s @ A_s @ Rw_s.T`` with PyTorch's own 1-D interpolation matrices. So the weighted sum
    over scales is one matrix product per channel, ``[Rh_1 | ... | Rh_S] @ stack_s(share_s * A_s @ Rw_s.T)``
    (``[H, sum h_s] @ [sum h_s, W]``), instead of ``S`` resized ``[K, H, W]`` copies to add up (6-14x less
    time measured on CPU). Channels go a block at a time so that no buffer exceeds about 16 MiB.
    """
    b, k = acts[0].shape[:2]
    h, w = size
    used = [s for s in range(len(acts)) if bool(share[s].any())]
    device = acts[0].device
    rows = torch.cat([_resize_matrix(acts[s].shape[-2], h, device) for s in used], 1)  # [H,sum h_s]
    cols = [_resize_matrix(acts[s].shape[-1], w, device).T for s in used]  # [w_s,W] each
    weights = [share[s][:, None, None, None] for s in used]  # [b,1,1,1] each
    step = max(1, _FUSE_ELEMENTS // max(1, b * max(h, rows.shape[1]) * w))  # channels per block

    def mean_over_scales(maps: list[Tensor], c: int) -> Tensor:  # channels c:c+step, [b,k',H,W]
        blocks = [wt * (maps[s][:, c : c + step] @ r) for s, r, wt in zip(used, cols, weights, strict=True)]
        return rows @ torch.cat(blocks, 2)  # [H,sum h_s] @ [b,k',sum h_s,W]

    saliency = torch.zeros((b, 1, h, w), device=device)  # [b,1,H,W]
    for c in range(0, k, step):
        saliency += (mean_over_scales(acts, c) * mean_over_scales(grads, c)).sum(1, keepdim=True)
    return saliency


def _resize_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """``[n_out, n_in]``: 1-D bilinear resizing (``align_corners=False``) as a matrix, from ``F.interpolate`` itself."""
    eye = torch.eye(n_in, device=device)[None, None]  # [1,1,n_in,n_in]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False)[0, 0]
