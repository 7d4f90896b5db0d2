"""Saliency methods, each behind the :class:`SaliencyMethod` protocol and registered by name.

``inputs [B, C, H, W]`` and targets (:mod:`lightning_saliency.targets`, or class indices ``[B]``) -> ``maps
[B, 1, H, W]`` float32 in [0, 1], detached.
"""

from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import (
    ActivationMethod,
    CAMMethod,
    GradientMethod,
    GradientPass,
    LayerMethod,
    SaliencyMethod,
    compute_saliency,
    normalize_maps,
)
from lightning_saliency.methods.cameras import CAMERAS
from lightning_saliency.methods.cams import EigenCAM, HiResCAM, LayerCAM, XGradCAM
from lightning_saliency.methods.fusion import FusedCAM
from lightning_saliency.methods.gradcam import GradCAM, GradCAMPlusPlus
from lightning_saliency.methods.gradient import Gradient, GradientXInput, SmoothGrad
from lightning_saliency.methods.integrated_gradients import IntegratedGradients
from lightning_saliency.methods.registry import METHODS, available_methods, get_method, register_method
from lightning_saliency.methods.scorecam import ScoreCAM

__all__ = [
    "CAMERAS",
    "METHODS",
    "ActivationMethod",
    "CAMMethod",
    "EigenCAM",
    "FusedCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "Gradient",
    "GradientMethod",
    "GradientPass",
    "GradientXInput",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "LayerMethod",
    "Run",
    "SaliencyMethod",
    "ScoreCAM",
    "SmoothGrad",
    "XGradCAM",
    "available_methods",
    "compute_saliency",
    "get_method",
    "normalize_maps",
    "register_method",
]
