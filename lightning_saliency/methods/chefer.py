"""Gradient-weighted attention relevance for vision transformers (Chefer, Gur & Wolf, ICCV 2021).

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers".

``R = I``; per block, first to last, ``A_bar = mean_heads((dS/dA * A).clamp(min=0))`` and ``R = R + A_bar R``; the
map is the class token's row of ``R`` over the patch tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._attention import patch_row, record_attention
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import SaliencyMethod, _warn_non_finite
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["AttentionRelevance", "attention_relevance"]


def attention_relevance(weights: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """Chefer et al.'s relevance ``[B, T, T]`` from per-block weights and their gradients ``[B, heads, T, T]``.

    Example:
        >>> w, g = torch.full((1, 1, 2, 2), 0.5), torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
        >>> attention_relevance([w], [g])[0]
        tensor([[1.5000, 0.0000],
                [1.0000, 1.0000]])
    """
    b, t = weights[0].shape[0], weights[0].shape[-1]
    relevance = torch.eye(t, device=weights[0].device).expand(b, t, t)
    for w, g in zip(weights, grads, strict=True):
        a_bar = (g.float() * w.float()).clamp(min=0).mean(1)  # [B,T,T]
        relevance = relevance + a_bar @ relevance
    return relevance


@register_method("attention_relevance")
class AttentionRelevance(SaliencyMethod):
    """Gradient-weighted attention relevance (Chefer et al. 2021, the ICCV'21 rule) for vision transformers.

    ``R = I``; for each block, first to last, ``A_bar = E_heads[(dS_t/dA ⊙ A)^+]`` and ``R = R + A_bar R``, with
    ``A`` the block's attention weights ``[heads, T, T]`` and ``S_t`` the target's score (:mod:`lightning_saliency
    .targets`: a class logit, multi-label, segmentation or regression targets, as for the gradient methods); the map
    is the class token's row of ``R`` over the patch tokens, at the patch grid (upsampled by the engine).

    The gradients are one ``torch.autograd.grad`` of the summed scores w.r.t. every block's weights (images do not
    interact in eval mode); the weights are put into the graph by forward hooks that recompute each attention
    block with its weights and hand that output downstream (equal to the fused one). Architectures as
    :class:`~lightning_saliency.methods.rollout.AttentionRollout`: every ``nn.MultiheadAttention`` block of a
    torchvision ViT (class-token row; mean row without one); the last stage of a torchvision Swin when it fits in one
    window (224 px for ``swin_t``: 7x7; mean row, as Swin pools all tokens), an error for larger inputs; an error
    naming what is needed for other models (a CNN).

    Cost: one forward (each attention block run a second time, with its weights) and one backward.

    Args:
        name: Label in logs.

    Example:
        >>> from torchvision.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(32, 16, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=8, num_classes=3)
        >>> _ = torch.nn.init.normal_(vit.heads.head.weight)  # torchvision's head starts at zero
        >>> AttentionRelevance()(vit, torch.rand(2, 3, 32, 32), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 32, 32])
    """

    needs = frozenset({"attention"})

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """The class token's relevance over the patches, ``[B, 1, h, w]``."""
        x = inputs.detach().clone().requires_grad_(True)  # a graph even if every parameter is frozen
        att = record_attention(model, x, run, self.label, differentiable=True)
        targets.check(att.output)
        _warn_non_finite(att.output)
        score = targets.score(att.output).sum()
        grads = torch.autograd.grad(score, att.weights, allow_unused=True)
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            raise RuntimeError(
                f"{self.label}: the target score of {type(model).__name__} does not depend through autograd on the "
                f"attention weights of block(s) {missing} (autograd returned None): their relevance is undefined."
            )
        weights = [att.tokens(w) for w in att.weights]  # [B,heads,T,T]
        relevance = attention_relevance(weights, [att.tokens(g) for g in grads if g is not None])
        return patch_row(relevance, att)
