"""Shapley-CAM (Cai et al., "CAMs as Shapley Value-based Explainers", 2025): Grad-CAM with a second-order term.

The channel weights are the spatial means of ``g - 1/2 H A``: the gradient of the target score with respect to
the layer's activations minus half the Hessian-vector product with the activations themselves, a second-order
estimate of each activation's Shapley value.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import graph_from
from lightning_saliency.methods.registry import register_method
from lightning_saliency.methods.smoothing import OwnPassCAM
from lightning_saliency.targets import ClassTarget, Target

__all__ = ["ShapleyCAM"]


def rest_score(targets: Target, logits: Tensor) -> Tensor:
    """The ReST objective ``S_t + log p_t`` (``[B]``): pytorch-grad-cam's ``ClassifierOutputReST`` for a class.

    For a :class:`~lightning_saliency.targets.ClassTarget` this is ``logit - cross_entropy = logit + log_softmax``
    (computed with ``log_softmax``); for another target ``score + log(confidence)``.
    """
    if isinstance(targets, ClassTarget):
        log_p = logits.float().log_softmax(1).gather(1, targets.classes.to(logits.device)[:, None])[:, 0]
    else:
        log_p = targets.confidence(logits).clamp_min(torch.finfo(torch.float32).tiny).log()
    return targets.score(logits) + log_p


@register_method("shapleycam")
class ShapleyCAM(OwnPassCAM):
    """Shapley-CAM: ``w_k = mean_ij (g - 1/2 H A)_kij`` with ``g = dS/dA`` and ``H A`` the Hessian of ``S`` times ``A``.

    ``S`` is the target's :meth:`~lightning_saliency.targets.Target.score` (``objective="score"``: a class's logit,
    pytorch-grad-cam's ``ClassifierOutputTarget``) or the paper's ReST objective ``S + log p`` (``objective="rest"``:
    the logit minus the cross-entropy, pytorch-grad-cam's ``ClassifierOutputReST``). The map is
    ``ReLU(sum_k w_k A_k)``. Equals pytorch-grad-cam's ``ShapleyCAM`` with the same target. On a ReLU network whose
    head after the layer is piecewise linear (ResNet's ``layer4`` then pooling and a linear layer) the Hessian of the
    logit is zero, so ``objective="score"`` then equals Grad-CAM; the ReST objective's softmax gives it curvature.

    Cost: one forward with autograd recorded from the target layer on, one gradient with ``create_graph=True`` and
    one Hessian-vector product (about 3x Grad-CAM's backward); not shared with the gradient pass. Attention runs on
    PyTorch's math kernel (the fused ones have no second derivative), so on a transformer the forward is slower.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        objective: ``"score"`` (the target's score) or ``"rest"`` (score + log-probability).
        eigen_smooth: First principal component of ``w_k A_k`` instead of their sum (pytorch-grad-cam's option).
        reshape: How the layer's output and gradients become ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> ShapleyCAM(objective="rest")(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    OBJECTIVES: ClassVar[tuple[str, ...]] = ("score", "rest")

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        objective: str = "score",
        *,
        eigen_smooth: bool = False,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, eigen_smooth=eigen_smooth, name=name)
        if objective not in self.OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(map(repr, self.OBJECTIVES))}, got {objective!r}.")
        self.objective = objective

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, objective={self.objective!r})"

    def contributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``w_k A_k``, ``[B, K, h, w]``."""
        layer = self.layer(model, inputs, run)
        size = (inputs.shape[-2], inputs.shape[-1])
        # The math attention kernel: the fused ones (flash, memory-efficient) have no second derivative (ViTs).
        with graph_from(layer) as captured, sdpa_kernel([SDPBackend.MATH]):
            logits = run.output(model, inputs.detach())
        targets.check(logits)
        act = captured[0]
        if act is None or not logits.requires_grad:
            raise RuntimeError(
                f"Target layer {type(layer).__name__} did not run in the forward, or the logits do not depend on it; "
                "choose a layer on the path from the input to the logits."
            )
        score = rest_score(targets, logits) if self.objective == "rest" else targets.score(logits)
        (grad,) = torch.autograd.grad(score.sum(), act, create_graph=True)
        hvp: Tensor | None = None
        if grad.requires_grad:  # else the score is linear in the activations: no curvature
            (hvp,) = torch.autograd.grad(grad, act, grad_outputs=act.detach(), allow_unused=True)
        acts = self.feature_map(act.detach().float(), layer, size)  # [B,K,h,w]
        g = self.reshaped(grad.detach().float(), layer, size)
        if hvp is not None:
            g = g - 0.5 * self.reshaped(hvp.float(), layer, size)
        weights = g.mean(tuple(range(2, g.ndim)))  # [B,K] spatial means
        return weights.view(*weights.shape, *([1] * (acts.ndim - 2))) * acts
