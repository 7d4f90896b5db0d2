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

from lightning_saliency._chunking import run_chunked
from lightning_saliency._reshape import Reshape, apply_reshape, check_reshape
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import GradientMethod, GradientPass, Run, _check_feature_map, run_gradient_pass
from lightning_saliency.methods.registry import register_method

__all__ = ["CAMERAS", "DEFAULT_CAMERAS_SCALES"]

DEFAULT_CAMERAS_SCALES: tuple[float, ...] = tuple(r / 224 for r in range(224, 1000, 100))
"""The authors' default resolutions ``224, 324, ..., 924`` relative to their 224 input: 1.0, 1.45, ..., 4.13."""

_FUSE_ELEMENTS = 1 << 22  # ~4M fp32 values (16 MiB) per resized [b, k, H, W] block when fusing


@register_method("cameras")
class CAMERAS(GradientMethod):
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
    (height and width scaled separately), the trainer's precision for every forward, and bounded memory.

    Peak memory beyond the model's weights: the forward and autograd graph of ``batch_size`` images at the
    largest scale; ``2 * sum_s K * h_s * w_s`` fp32 values per image for the layer-resolution ``A_s, G_s`` of
    the current chunk of ``batch_size`` images; and fusion buffers of about 16 MiB (channels are resized to the
    input size a block at a time), never the authors' full ``[K, H, W]`` accumulators.

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

    uses_layer = True

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
        super().__init__(target_layer=target_layer, name=name)
        self.reshape = check_reshape(reshape)
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (images per forward), got {batch_size!r}.")
        if not isinstance(agreeing_scales_only, bool):
            raise TypeError(f"agreeing_scales_only must be a bool, got {agreeing_scales_only!r}.")
        self.scales = tuple(float(s) for s in scales)
        self.batch_size, self.agreeing_scales_only = batch_size, agreeing_scales_only

    def __repr__(self) -> str:
        scales = ", ".join(f"{s:.3g}" for s in self.scales)
        return f"{type(self).__name__}(name={self.label!r}, scales=({scales}), batch_size={self.batch_size})"

    def from_pass(self, p: GradientPass, layer: nn.Module | None) -> Tensor:
        """Unused: CAMERAS runs its own passes, one per scale."""
        raise NotImplementedError

    def compute(self, model: nn.Module, inputs: Tensor, targets: Tensor, run: Run) -> Tensor:
        """``ReLU(sum_k mean(A)_k * mean(G)_k)``, ``[B, 1, H, W]``."""
        layer = self.layer(model, inputs, run)
        assert layer is not None
        maps = run_chunked(
            lambda lo, hi: self._chunk(model, inputs[lo:hi], targets[lo:hi], layer, run),
            inputs.shape[0],
            self.batch_size,
            what="images",
        )  # on out-of-memory a chunk is retried with half the images
        return torch.cat(maps)  # [B,1,H,W]

    def _chunk(self, model: nn.Module, x: Tensor, t: Tensor, layer: nn.Module, run: Run) -> Tensor:
        b, _, h, w = x.shape
        acts: list[Tensor] = []
        grads: list[Tensor] = []
        agree: list[Tensor] = []
        for factor in self.scales:
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            xs = x if size == (h, w) else F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False)
            p = run_gradient_pass(model, xs.to(x.dtype), t, [layer], run, input_grads=False)
            a = apply_reshape(self.reshape, p.activations[layer], size)  # [b,K,h_s,w_s] fp32
            _check_feature_map(a, layer)
            acts.append(a)
            grads.append(apply_reshape(self.reshape, p.layer_grads[layer], size))  # [b,K,h_s,w_s] fp32
            agree.append(p.logits.argmax(1) == t)  # [b]
            del p
        counted = torch.stack(agree).float()  # [S,b]
        if not self.agreeing_scales_only:
            counted = torch.ones_like(counted)
        counted[:, counted.sum(0) == 0] = 1.0  # no scale agrees: count them all
        share = counted / counted.sum(0, keepdim=True)  # [S,b] 1/count where counted, else 0
        k = acts[0].shape[1]
        step = max(1, _FUSE_ELEMENTS // max(1, b * h * w))
        saliency = torch.zeros((b, 1, h, w), device=x.device)  # [b,1,H,W]
        for c in range(0, k, step):
            mean_a = torch.zeros((b, min(step, k - c), h, w), device=x.device)  # [b,k',H,W]
            mean_g = torch.zeros_like(mean_a)
            for s in range(len(self.scales)):
                if not bool(counted[s].any()):
                    continue
                wgt = share[s][:, None, None, None]  # [b,1,1,1]
                mean_a += wgt * _resize(acts[s][:, c : c + step], (h, w))
                mean_g += wgt * _resize(grads[s][:, c : c + step], (h, w))
            saliency += (mean_a * mean_g).sum(1, keepdim=True)
        return F.relu(saliency)


def _resize(t: Tensor, size: tuple[int, int]) -> Tensor:
    return t if tuple(t.shape[-2:]) == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)
