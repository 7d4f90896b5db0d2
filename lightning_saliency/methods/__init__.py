"""Saliency methods, each behind the :class:`SaliencyMethod` protocol and registered by name.

``inputs [B, C, H, W]`` and targets (:mod:`lightning_saliency.targets`, or class indices ``[B]``) -> ``maps
[B, 1, H, W]`` float32 in [0, 1], detached.
"""

from lightning_saliency._runtime import Run
from lightning_saliency.methods.ablation import AblationCAM
from lightning_saliency.methods.attribution import DeepLift, GradientShap
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
from lightning_saliency.methods.chefer import AttentionRelevance
from lightning_saliency.methods.eigen import KPCACAM, EigenGradCAM
from lightning_saliency.methods.elementwise import GradCAMElementWise
from lightning_saliency.methods.finer import FinerCAM
from lightning_saliency.methods.fullgrad import FullGrad
from lightning_saliency.methods.fusion import FusedCAM
from lightning_saliency.methods.gradcam import GradCAM, GradCAMPlusPlus
from lightning_saliency.methods.gradient import Gradient, GradientXInput, SmoothGrad
from lightning_saliency.methods.integrated_gradients import IntegratedGradients

# LRP (the [lrp] extra: zennit is imported when a method is constructed)
from lightning_saliency.methods.lrp import LRPAlphaBeta, LRPEpsilonPlusFlat
from lightning_saliency.methods.noise_tunnel import SmoothGradSquared, VarGrad
from lightning_saliency.methods.perturbation import RISE, Occlusion
from lightning_saliency.methods.registry import METHODS, available_methods, get_method, register_method
from lightning_saliency.methods.rollout import AttentionRollout
from lightning_saliency.methods.scorecam import ScoreCAM
from lightning_saliency.methods.shapley import ShapleyCAM
from lightning_saliency.methods.smoothing import AugSmooth, EigenSmooth

__all__ = [
    "CAMERAS",
    "KPCACAM",
    "METHODS",
    "RISE",
    "AblationCAM",
    "ActivationMethod",
    "AugSmooth",
    "CAMMethod",
    "DeepLift",
    "EigenCAM",
    "EigenGradCAM",
    "EigenSmooth",
    "FinerCAM",
    "FullGrad",
    "FusedCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "Gradient",
    "GradientMethod",
    "GradientPass",
    "GradientShap",
    "GradientXInput",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "LayerMethod",
    "Occlusion",
    "Run",
    "SaliencyMethod",
    "ScoreCAM",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradSquared",
    "VarGrad",
    "XGradCAM",
    "available_methods",
    "compute_saliency",
    "get_method",
    "normalize_maps",
    "register_method",
    # vision-transformer attention methods
    "AttentionRelevance",
    "AttentionRollout",
    # LRP
    "LRPAlphaBeta",
    "LRPEpsilonPlusFlat",
]
