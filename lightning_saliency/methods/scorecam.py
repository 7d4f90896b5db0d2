"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for CNNs", CVPRW 2020).

Each channel ``A_k`` of the target layer is upsampled to the input size and min-max normalised into a mask
``H_k``; the model scores the masked input ``x * H_k``, and that score weighs the channel:
``L = ReLU(sum_k w_k A_k)``. It needs no gradients, only ``K`` forwards per image (``K`` channels).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._chunking import run_chunked
from lightning_saliency._reshape import Reshape, apply_reshape, check_reshape
from lightning_saliency.layers import LayerSpec, capture_outputs
from lightning_saliency.methods.base import (
    GradientMethod,
    GradientPass,
    Run,
    _check_feature_map,
    check_targets,
    run_gradient_pass,
)
from lightning_saliency.methods.registry import register_method

__all__ = ["ScoreCAM"]


@register_method("scorecam")
class ScoreCAM(GradientMethod):
    """Score-CAM, batched over images and channels, with the paper's weights or pytorch-grad-cam's.

    Steps: the target layer's activations ``A [B, K, h, w]`` (one forward); each channel upsampled bilinearly
    to the input size and min-max normalised to a mask in [0, 1] (a constant channel gives an all-zero mask);
    one forward of ``input * mask`` per (image, channel); channel weights ``w [B, K]`` from those forwards;
    map ``ReLU(sum_k w_k A_k)`` on the un-normalised layer-resolution activations, as the authors' code.

    ``weights``:

    * ``"probability"`` (the paper): ``w_k`` = softmax probability of the target class on the masked input.
      The paper's ``- f(X_b)`` baseline term is left out, as in the authors' code (haofanwang/Score-CAM) and
      in pytorch-grad-cam: the paper does not fix ``X_b``, and any per-image constant subtracted from all
      ``w_k`` would add a multiple of ``-sum_k A_k`` to the map.
    * ``"softmax_over_channels"`` (pytorch-grad-cam's ``ScoreCAM``): the target *logit* of each masked input,
      then a softmax over the channels of each image. Masks are then made as pytorch-grad-cam makes them
      (``align_corners=True`` upsampling, ``(U - min) / (max - min + 1e-8)``), so its maps are reproduced.

    Exact savings (outputs unchanged): masked forwards run under ``torch.inference_mode``; a channel that is
    constant at layer resolution gives the all-zero input whatever the image, so that input is scored once
    for the whole batch. On ReLU feature maps many channels are all-zero for a given image.

    ``top_k`` (approximate, opt-in): per image, only the ``top_k`` non-constant channels with the largest
    Grad-CAM weight (spatially averaged gradient of the target logit, from one extra forward and gradient
    pass) are scored; constant channels keep their exact weight and the other channels get weight 0. Channels
    Grad-CAM finds supporting the class are those whose masks keep the class score high. On a pretrained
    EfficientNet-Lite0 head (1280 channels) ``top_k=64`` gave Spearman 0.84-0.99 to the exact map depending on
    the image, ``top_k=128`` >= 0.98; see ``benchmarks/README.md``.

    Peak memory beyond the model's weights: one forward (no autograd graph) of ``batch_size`` masked inputs,
    i.e. ``batch_size`` inputs ``[C, H, W]`` and their activations, plus ``batch_size`` fp32 masks
    ``[H, W]`` and the layer activations ``[B, K, h, w]``; never all ``B * K`` masked inputs at once.
    With ``top_k`` add one gradient pass over the ``B`` inputs.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        batch_size: Masked inputs per forward (from any images of the batch).
        weights: ``"probability"`` (paper) or ``"softmax_over_channels"`` (pytorch-grad-cam).
        top_k: Score only this many channels per image (approximate); ``None`` scores all (exact).
        reshape: How the layer's output (and gradient) become ``[B, K, h, w]``: ``"auto"`` recognises ViT tokens
            and channels-last Swin maps, ``None`` leaves them, or a callable (see :class:`CAMMethod`).
        name: Label in logs (default ``"scorecam"``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> ScoreCAM(batch_size=8)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    uses_layer = True
    WEIGHTS: ClassVar[tuple[str, ...]] = ("probability", "softmax_over_channels")

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        batch_size: int = 32,
        weights: str = "probability",
        top_k: int | None = None,
        *,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, name=name)
        self.reshape = check_reshape(reshape)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (masked inputs per forward), got {batch_size!r}.")
        if weights not in self.WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(map(repr, self.WEIGHTS))}, got {weights!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None (score every channel) or an int >= 1, got {top_k!r}.")
        self.batch_size, self.weights, self.top_k = batch_size, weights, top_k

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.label!r}, batch_size={self.batch_size}, weights={self.weights!r}, "
            f"top_k={self.top_k})"
        )

    def from_pass(self, p: GradientPass, layer: nn.Module | None) -> Tensor:
        """Unused: Score-CAM runs its own masked forwards."""
        raise NotImplementedError

    def compute(self, model: nn.Module, inputs: Tensor, targets: Tensor, run: Run) -> Tensor:
        """``ReLU(sum_k w_k A_k)``, ``[B, 1, h, w]`` at the target layer's resolution."""
        layer = self.layer(model, inputs, run)
        assert layer is not None
        size = (inputs.shape[-2], inputs.shape[-1])
        selected: Tensor | None = None
        if self.top_k is not None:
            p = run_gradient_pass(model, inputs, targets, [layer], run, input_grads=False)
            acts = apply_reshape(self.reshape, p.activations[layer], size)  # [B,K,h,w] fp32
            _check_feature_map(acts, layer)
            criterion = apply_reshape(self.reshape, p.layer_grads[layer], size).mean((2, 3))  # [B,K] Grad-CAM weights
            del p
        else:
            with torch.inference_mode(), capture_outputs([layer]) as captured:
                logits = run.logits(model, inputs)
            check_targets(targets, logits)
            if captured[0] is None:
                raise RuntimeError(
                    f"Target layer {type(layer).__name__} did not run in the forward; choose a layer on the path "
                    "from the input to the logits."
                )
            acts = captured[0].float().clone()  # a normal tensor (cloned outside inference mode)
            acts = apply_reshape(self.reshape, acts, size)  # [B,K,h,w]
            _check_feature_map(acts, layer)
        k = acts.shape[1]
        constant = acts.flatten(2).amax(2) == acts.flatten(2).amin(2)  # [B,K]
        if self.top_k is not None and self.top_k < k:
            ranked = criterion.masked_fill(constant, float("-inf"))  # [B,K]
            top = ranked.topk(self.top_k, dim=1).indices  # [B,top_k]
            selected = torch.zeros_like(constant).scatter_(1, top, True) & ~constant  # [B,K]
        with torch.inference_mode():
            scores = self._score(model, inputs, targets, acts, constant, selected, run)  # [B,K]
        scores = scores.clone()  # a normal tensor again
        scored = torch.ones_like(constant) if selected is None else constant | selected  # [B,K]
        if self.weights == "probability":
            w = torch.where(scored, scores, torch.zeros_like(scores))  # [B,K]
        else:
            w = scores.masked_fill(~scored, float("-inf")).softmax(1)  # [B,K]
        return F.relu((w[:, :, None, None] * acts).sum(1, keepdim=True))  # [B,1,h,w]

    def _score(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        acts: Tensor,
        constant: Tensor,
        selected: Tensor | None,
        run: Run,
    ) -> Tensor:
        """Per (image, channel) score of the masked input, ``[B, K]`` fp32 (unscored entries are 0)."""
        b, k = acts.shape[:2]
        size = (inputs.shape[-2], inputs.shape[-1])
        pgc = self.weights == "softmax_over_channels"
        scores = torch.zeros((b, k), device=acts.device)  # [B,K]
        if bool(constant.any()):  # every constant channel masks the input to zeros: one forward for the batch
            zero_logits = run.logits(model, torch.zeros_like(inputs[:1])).float()  # [1,N]
            zero_scores = self._read(zero_logits.expand(b, -1), targets)  # [B]
            scores = torch.where(constant, zero_scores[:, None], scores)
        todo = ~constant if selected is None else selected  # [B,K]
        img_idx, ch_idx = todo.nonzero(as_tuple=True)  # [P], [P]
        h, w = acts.shape[-2:]
        if pgc:  # pytorch-grad-cam's masks: upsample (align_corners=True), then normalise with +1e-8
            rep_img, rep_maps, inverse = img_idx, acts[img_idx, ch_idx][:, None], None  # [P,1,h,w]
        else:
            # Channels whose layer maps are equal after min-max normalisation (A_j = a A_k + b, a > 0; common for
            # sparse ReLU channels) give the same mask, since bilinear upsampling commutes with that map: score one.
            flat = acts[img_idx, ch_idx].flatten(1)  # [P,h*w]
            lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
            normalised = (flat - lo) / (hi - lo)  # non-constant channels only: hi > lo
            keys = torch.cat([img_idx[:, None].to(normalised.dtype), normalised], 1)  # [P,1+h*w]
            unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [U,1+h*w], [P]
            rep_img, rep_maps = unique[:, 0].long(), unique[:, 1:].view(-1, 1, h, w)  # [U], [U,1,h,w]
        rep_scores = torch.zeros(rep_img.shape[0], device=acts.device)  # [U]

        def score_chunk(start: int, stop: int) -> None:
            bi = rep_img[start:stop]  # [n]
            up = F.interpolate(rep_maps[start:stop], size=size, mode="bilinear", align_corners=pgc)  # [n,1,H,W]
            lo = up.flatten(1).amin(1)[:, None, None, None]  # [n,1,1,1]
            hi = up.flatten(1).amax(1)[:, None, None, None]
            if pgc:
                masks = (up - lo) / (hi - lo + 1e-8)
            else:
                span = hi - lo
                masks = torch.where(span > 0, (up - lo) / span.clamp_min(1e-30), torch.zeros_like(up))
            masked = (inputs[bi].float() * masks).to(inputs.dtype)  # [n,C,H,W]
            logits = run.logits(model, masked).float()  # [n,N]
            rep_scores[start:stop] = self._read(logits, targets[bi])

        # On out-of-memory the chunk is retried at half the size (results written by index: a retry overwrites).
        run_chunked(score_chunk, rep_img.numel(), self.batch_size, what="masked inputs")
        scores[img_idx, ch_idx] = rep_scores if inverse is None else rep_scores[inverse]
        return scores

    def _read(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The score of each row's target: softmax probability (paper) or logit (pytorch-grad-cam), ``[n]``."""
        values = logits.softmax(1) if self.weights == "probability" else logits
        return values.gather(1, targets[:, None])[:, 0]
