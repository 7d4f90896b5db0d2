"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020).

Per block the head-fused attention plus the identity (the residual connection), row-normalised, multiplied through
the blocks; the map is the class token's row over the patch tokens. Class-agnostic: it reads no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._attention import patch_row, record_attention
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import SaliencyMethod
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["AttentionRollout", "attention_rollout"]

_FUSIONS = ("mean", "max", "min")


def attention_rollout(
    weights: Sequence[Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0, protect_first: bool = True
) -> Tensor:
    """The rolled-out attention ``[B, T, T]`` of per-block weights ``[B, heads, T, T]`` (first block first).

    ``A_l = norm_rows((fuse_heads(W_l) + I) / 2)``, ``R = A_L ... A_2 A_1``. With ``discard_ratio > 0`` the
    lowest ``int(T * T * discard_ratio)`` fused weights of each image are set to 0 first, except entry ``(0, 0)`` (the
    class token's attention to itself) when ``protect_first`` (jacobgil's vit-explain).

    Example:
        >>> uniform = torch.full((1, 2, 3, 3), 1 / 3)  # two heads attending uniformly, three tokens
        >>> attention_rollout([uniform])[0, 0]
        tensor([0.6667, 0.1667, 0.1667])
    """
    first = weights[0]
    b, t = first.shape[0], first.shape[-1]
    eye = torch.eye(t, device=first.device)
    result = eye.expand(b, t, t)
    for w in weights:
        w = w.float()
        fused = w.mean(1) if head_fusion == "mean" else w.amax(1) if head_fusion == "max" else w.amin(1)  # [B,T,T]
        drop = int(t * t * discard_ratio)
        if drop:
            flat = fused.flatten(1)  # [B,T*T]
            low = flat.topk(drop, dim=1, largest=False).indices
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, low, True)
            if protect_first:
                mask[:, 0] = False
            fused = flat.masked_fill(mask, 0.0).view(b, t, t)
        a = (fused + eye) / 2
        a = a / a.sum(-1, keepdim=True)  # rows sum to 1
        result = a @ result
    return result


@register_method("attention_rollout")
class AttentionRollout(SaliencyMethod):
    """Attention rollout (Abnar & Zuidema 2020) for vision transformers.

    In each block the attention weights ``[heads, T, T]`` are fused over heads (``head_fusion``: ``"mean"``, the
    paper's, or ``"max"``/``"min"`` as in jacobgil's vit-explain), optionally the lowest ``discard_ratio`` of them
    set to 0 (vit-explain's; the class token's self-attention is kept), the identity added for the residual and the
    rows normalised; the product over the blocks, first to last, is read at the class token's row over the patch
    tokens, reshaped to the patch grid (and upsampled to the input by the engine, as CAMs are). It explains the
    model's attention flow, not a class: the target is checked, not used.

    What is read, per architecture (see :mod:`lightning_saliency._attention`):

    * torchvision ``VisionTransformer`` (``vit_b_16``...) and any model built of ``nn.MultiheadAttention`` blocks:
      every block; the weights come from the module's own ``need_weights=True`` path run from a forward hook (the
      fused forward never makes them); map at the patch grid (14x14 for ``vit_b_16`` at 224 px). No class token
      (global average pooling): the mean row.
    * torchvision ``SwinTransformer`` (``swin_t``...): the blocks of the last stage only, where at 224 px the 7x7
      grid is one window with no shift (torchvision sets it to 0); the map is that 7x7 grid, the mean row (Swin
      pools all tokens). Larger inputs (the last stage in several windows) raise an error: windowed, shifted
      attention with patch merging has no rollout across the image.
    * anything else (a CNN): a ``ValueError`` naming what is needed.

    Cost: one forward with each attention block run a second time for its weights; no gradient.

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: Fraction in ``[0, 1)`` of each block's lowest fused weights set to 0.
        name: Label in logs.

    Example:
        >>> from torchvision.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(32, 16, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=8, num_classes=3)
        >>> AttentionRollout()(vit, torch.rand(2, 3, 32, 32), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 32, 32])
    """

    needs = frozenset({"attention"})

    def __init__(self, *, head_fusion: str = "mean", discard_ratio: float = 0.0, name: str | None = None) -> None:
        super().__init__(name=name)
        if head_fusion not in _FUSIONS:
            raise ValueError(f"head_fusion must be one of {', '.join(map(repr, _FUSIONS))}, got {head_fusion!r}.")
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
            raise ValueError(f"discard_ratio must be a float in [0, 1), got {discard_ratio!r}.")
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """The class token's rolled-out attention over the patches, ``[B, 1, h, w]``."""
        with torch.no_grad():
            att = record_attention(model, inputs, run, self.label)
        targets.check(att.output)
        weights = [att.tokens(w) for w in att.weights]  # [B,heads,T,T]
        rollout = attention_rollout(weights, self.head_fusion, self.discard_ratio, protect_first=att.prefix > 0)
        return patch_row(rollout, att)
