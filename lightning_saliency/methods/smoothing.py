"""pytorch-grad-cam's two options of every CAM method, ``eigen_smooth`` and ``aug_smooth``; a base for own-pass CAMs.

* ``eigen_smooth``: instead of summing a CAM's weighted channels ``w_k A_k`` it keeps their first principal
  component (:func:`~lightning_saliency.methods.cams.eigen_projection`: the projection of each location's vector of
  contributions on it, with the sign that agrees with the plain sum), then the ReLU: less noise, as pytorch-grad-cam's
  ``cam(..., eigen_smooth=True)`` (whose SVD sign is arbitrary). :func:`cam_from_contributions` is that choice;
  :class:`EigenSmooth` wraps a CAM of the shared gradient pass (Grad-CAM, HiResCAM, ...), the CAMs of this package
  that run their own passes (:class:`OwnPassCAM`: Ablation-CAM, Shapley-CAM, Finer-CAM) and Grad-CAM element-wise
  take ``eigen_smooth=True`` themselves.
* ``aug_smooth`` (test-time augmentation): :class:`AugSmooth` runs any method on the horizontally flipped and
  brightness-scaled copies of the inputs (pytorch-grad-cam's ``ttach`` set: flip in {no, yes} x factor in
  {0.9, 1, 1.1}, 6 copies), flips each map back and averages the normalised maps.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least
from lightning_saliency._chunking import run_chunked
from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import (
    ActivationMethod,
    CAMMethod,
    GradientMethod,
    GradientPass,
    LayerMethod,
    SaliencyMethod,
    compute_saliency,
)
from lightning_saliency.methods.cams import eigen_projection
from lightning_saliency.methods.registry import get_method
from lightning_saliency.targets import SegmentationTarget, Target, UndefinedForTarget

__all__ = ["AugSmooth", "EigenSmooth", "OwnPassCAM", "cam_from_contributions"]

TTA_FLIPS = (False, True)
TTA_FACTORS = (0.9, 1.0, 1.1)  # pytorch-grad-cam's default tta_transforms (ttach): HorizontalFlip x Multiply


def cam_from_contributions(contributions: Tensor, eigen_smooth: bool = False) -> Tensor:
    """``ReLU(sum_k C_k)``, or with ``eigen_smooth`` the ReLU of the first principal component of ``C``.

    Args:
        contributions: ``[B, K, h, w]`` a CAM's weighted channels ``w_k A_k`` (or element-wise contributions).
        eigen_smooth: Project each location's ``K`` contributions on their first principal component
            (centred over locations; sign chosen to correlate with the plain sum) instead of summing them.

    Returns:
        ``[B, 1, h, w]`` float32 raw map.

    Example:
        >>> c = torch.zeros(1, 2, 2, 2)
        >>> c[0, :, 0, 0] = 1.0
        >>> cam_from_contributions(c)[0, 0], cam_from_contributions(c, eigen_smooth=True)[0, 0] > 0
        (tensor([[2., 0.],
                [0., 0.]]), tensor([[ True, False],
                [False, False]]))
    """
    if eigen_smooth:
        return F.relu(eigen_projection(contributions))
    return F.relu(contributions.float().sum(1, keepdim=True))


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``values [B]`` or ``[B, K]`` viewed to broadcast against ``like [B, K, *spatial]`` (images and volumes)."""
    return values.view(*values.shape, *([1] * (like.ndim - values.ndim)))


def _check_bool(value: Any, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be True or False, got {value!r}.")
    return value


class OwnPassCAM(LayerMethod):
    """A CAM that runs its own passes (not the shared gradient pass) and writes only its contributions ``w_k A_k``.

    :meth:`compute` is :func:`cam_from_contributions` of :meth:`contributions`, so every such CAM takes
    ``eigen_smooth``.

    Args:
        target_layer: ``"auto"``, a dotted module name, or the module.
        reshape: How the layer's output becomes ``[B, K, h, w]`` (see
            :class:`~lightning_saliency.methods.base.LayerMethod`).
        eigen_smooth: First principal component of the contributions instead of their sum (pytorch-grad-cam's).
        name: Label in logs.
    """

    def __init__(
        self,
        *,
        target_layer: LayerSpec = "auto",
        reshape: Reshape = "auto",
        eigen_smooth: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, name=name)
        self.eigen_smooth = _check_bool(eigen_smooth, "eigen_smooth")

    @abstractmethod
    def contributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """The weighted channels ``w_k A_k``, ``[B, K, h, w]`` float32, at the target layer's resolution."""

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``ReLU(sum_k w_k A_k)`` (or its ``eigen_smooth`` version), ``[B, 1, h, w]``."""
        return cam_from_contributions(self.contributions(model, inputs, targets, run), self.eigen_smooth)


def _contributions(method: ActivationMethod, acts: Tensor, grads: Tensor | None) -> Tensor:
    """``w_k A_k`` of a CAM of the shared pass, ``[B, K, h, w]``."""
    own = getattr(method, "contributions", None)
    if callable(own):
        out: Tensor = own(acts, grads)
        return out
    assert isinstance(method, CAMMethod)
    assert grads is not None
    weights = method.channel_weights(acts, grads)  # [B,K] or [B,K,h,w]
    return _per_sample(weights, acts) * acts


class EigenSmooth(GradientMethod):
    """pytorch-grad-cam's ``eigen_smooth=True`` for a CAM of the shared gradient pass: ``ReLU(PC_1(w_k A_k))``.

    The wrapped CAM's channel weights (or element-wise contributions) are read from the same shared pass; only the
    final sum over channels is replaced by the projection on the first principal component
    (:func:`cam_from_contributions`). Equals pytorch-grad-cam's ``cam(input, targets, eigen_smooth=True)`` up to
    the SVD's sign, which here is fixed (the projection correlates positively with the plain CAM).

    Args:
        method: A CAM of the shared pass: a registry name (``"gradcam"``, ``"gradcam++"``, ``"hirescam"``,
            ``"xgradcam"``, ``"layercam"``, ``"gradcam_elementwise"``) or an instance.
        name: Label in logs (default ``"<method>_eigen_smooth"``).
        **kwargs: Constructor arguments of the method when given by name (``target_layer=...``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> EigenSmooth("gradcam")(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, method: str | SaliencyMethod = "gradcam", *, name: str | None = None, **kwargs: Any) -> None:
        inner = get_method(method, **kwargs) if isinstance(method, str) else method
        if kwargs and not isinstance(method, str):
            raise TypeError("Constructor arguments go with a method given by name, not with an instance.")
        own = getattr(inner, "contributions", None)
        if isinstance(inner, OwnPassCAM):
            raise TypeError(
                f"{type(inner).__name__} runs its own passes: create it with eigen_smooth=True instead of wrapping it."
            )
        if not isinstance(inner, ActivationMethod) or not (isinstance(inner, CAMMethod) or callable(own)):
            raise TypeError(
                "EigenSmooth needs a CAM of the shared gradient pass (a CAMMethod such as 'gradcam', or "
                f"'gradcam_elementwise'), got {inner!r}."
            )
        super().__init__(name=name or f"{inner.label}_eigen_smooth")
        self.method: ActivationMethod = inner

    @property
    def uses_gradients(self) -> bool:
        """Those of the wrapped CAM."""
        return self.method.uses_gradients

    def layers(self, model: nn.Module, inputs: Tensor, run: Run) -> list[nn.Module]:
        """The wrapped CAM's target layer."""
        return self.method.layers(model, inputs, run)

    def layer_name(self, model: nn.Module, inputs: Tensor, run: Run | None = None) -> str | None:
        """The wrapped CAM's target layer's name."""
        return self.method.layer_name(model, inputs, run)

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(PC_1(w_k A_k))``, ``[B, 1, h, w]``."""
        acts, grads = self.method.feature_maps(p, layers[0])
        return cam_from_contributions(_contributions(self.method, acts, grads), eigen_smooth=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method!r}, name={self.label!r})"


class AugSmooth(SaliencyMethod):
    """pytorch-grad-cam's ``aug_smooth=True`` (test-time augmentation) for any method: the mean map over augmentations.

    Each augmentation is a horizontal flip (or none) followed by a brightness factor, ``x_a = factor * flip(x)``;
    the method's normalised map of ``x_a`` is flipped back, and the maps of all ``len(flips) * len(factors)``
    augmentations are averaged (then normalised by the engine). The defaults are pytorch-grad-cam's (``ttach``'s
    ``HorizontalFlip()`` and ``Multiply([0.9, 1, 1.1])``, in that order): its ``cam(..., aug_smooth=True)`` returns
    that mean, which this map equals up to the final min-max normalisation.

    Cost: the wrapped method's, once per augmentation (6 by default); ``batch_size`` augmentations are run together
    (``batch_size * B`` images in one call of the method; halved on out-of-memory).

    Args:
        method: A registry name or a method instance.
        flips: Which flips to use (``False``: none, ``True``: horizontal).
        factors: Brightness factors the (flipped) inputs are multiplied by.
        batch_size: Augmented copies of the batch per call of the method.
        name: Label in logs (default ``"<method>_aug_smooth"``).
        **kwargs: Constructor arguments of the method when given by name.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> AugSmooth("gradcam")(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        method: str | SaliencyMethod = "gradcam",
        *,
        flips: Sequence[bool] = TTA_FLIPS,
        factors: Sequence[float] = TTA_FACTORS,
        batch_size: int = 6,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        inner = get_method(method, **kwargs) if isinstance(method, str) else method
        if kwargs and not isinstance(method, str):
            raise TypeError("Constructor arguments go with a method given by name, not with an instance.")
        if not isinstance(inner, SaliencyMethod):
            raise TypeError(f"method must be a registry name or a SaliencyMethod, got {method!r}.")
        flips, factors = tuple(flips), tuple(factors)
        if not flips or not all(isinstance(f, bool) for f in flips):
            raise ValueError(f"flips must be a non-empty sequence of booleans, got {flips!r}.")
        if not factors or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in factors):
            raise ValueError(f"factors must be a non-empty sequence of positive numbers, got {factors!r}.")
        int_at_least(batch_size, 1, "batch_size", "augmented copies per call")
        super().__init__(name=name or f"{inner.label}_aug_smooth")
        self.method, self.batch_size = inner, batch_size
        self.augmentations = list(itertools.product(flips, (float(f) for f in factors)))

    def layer_name(self, model: nn.Module, inputs: Tensor, run: Run | None = None) -> str | None:
        """The wrapped method's layer, if any."""
        return self.method.layer_name(model, inputs, run)

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Mean of the de-augmented normalised maps, ``[B, 1, H, W]``."""
        if isinstance(targets, SegmentationTarget):
            raise UndefinedForTarget(
                f"{self.label}: a flipped image would need its segmentation mask flipped too; aug_smooth explains "
                "whole-image targets (classes, labels, regression outputs)."
            )
        b, size = inputs.shape[0], inputs.shape[2:]
        total = torch.zeros((b, 1, *size), device=inputs.device)

        def augmented(start: int, stop: int) -> None:
            augs = self.augmentations[start:stop]
            copies = torch.cat([_augment(inputs, flip, factor) for flip, factor in augs])  # [n*B,C,H,W]
            rows = targets[torch.arange(len(augs) * b, device=inputs.device) % b]
            (maps,) = compute_saliency(
                model, copies, rows, [self.method], precision=run.precision, output_adapter=run.output_adapter
            )  # [n*B,1,H,W] normalised
            maps = maps.view(len(augs), b, 1, *size)  # flips are along the last (width) axis
            back = [maps[i].flip(-1) if flip else maps[i] for i, (flip, _) in enumerate(augs)]
            total.add_(torch.stack(back).sum(0))  # last step: a chunk that ran out of memory added nothing

        run_chunked(augmented, len(self.augmentations), self.batch_size, what="augmented copies")
        return total / len(self.augmentations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.method!r}, name={self.label!r}, augmentations={self.augmentations})"


def _augment(inputs: Tensor, flip: bool, factor: float) -> Tensor:
    """``factor * flip(x)`` (ttach's order: the flip, then the multiplication)."""
    x = inputs.flip(-1) if flip else inputs
    return x * factor if factor != 1.0 else x
