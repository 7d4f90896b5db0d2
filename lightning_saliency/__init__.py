"""lightning-saliency: watch what your image classifier looks at while it trains.

Add :class:`SaliencyMonitor` to ``Trainer(callbacks=[...])``; every validation epoch it logs saliency-map grids
and timings of a fixed probe batch to TensorBoard, without changing training.

The names below are imported when first used (PEP 562), so that importing a submodule alone (TensorBoard loads
``lightning_saliency.tensorboard.plugin`` at start-up) does not import torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_saliency._runtime import (
        Precision,
        eval_mode,
        gradients_enabled,
        preserved_rng,
    )
    from lightning_saliency.callbacks import (
        Alarm,
        ClassModelMonitor,
        SaliencyMonitor,
    )
    from lightning_saliency.exceptions import (
        SaliencyWarning,
    )
    from lightning_saliency.layers import (
        find_target_layer,
        resolve_target_layer,
    )
    from lightning_saliency.methods import (
        CAMERAS,
        KPCACAM,
        METHODS,
        RISE,
        AblationCAM,
        AttentionRelevance,
        AttentionRollout,
        AugSmooth,
        DeepLift,
        EigenCAM,
        EigenGradCAM,
        EigenSmooth,
        FinerCAM,
        FullGrad,
        FusedCAM,
        GradCAM,
        GradCAMElementWise,
        GradCAMPlusPlus,
        Gradient,
        GradientShap,
        GradientXInput,
        HiResCAM,
        IntegratedGradients,
        LayerCAM,
        LRPAlphaBeta,
        LRPEpsilonPlusFlat,
        Occlusion,
        SaliencyMethod,
        ScoreCAM,
        ShapleyCAM,
        SmoothGrad,
        SmoothGradSquared,
        VarGrad,
        XGradCAM,
        available_methods,
        compute_saliency,
        get_method,
        register_method,
    )
    from lightning_saliency.probe import (
        Probe,
    )
    from lightning_saliency.targets import (
        CallableTarget,
        ClassTarget,
        MultiLabelTarget,
        RegressionTarget,
        SegmentationTarget,
        Target,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Precision": "lightning_saliency._runtime",
    "eval_mode": "lightning_saliency._runtime",
    "gradients_enabled": "lightning_saliency._runtime",
    "preserved_rng": "lightning_saliency._runtime",
    "Alarm": "lightning_saliency.callbacks",
    "ClassModelMonitor": "lightning_saliency.callbacks",
    "SaliencyMonitor": "lightning_saliency.callbacks",
    "SaliencyWarning": "lightning_saliency.exceptions",
    "find_target_layer": "lightning_saliency.layers",
    "resolve_target_layer": "lightning_saliency.layers",
    "CAMERAS": "lightning_saliency.methods",
    "KPCACAM": "lightning_saliency.methods",
    "METHODS": "lightning_saliency.methods",
    "RISE": "lightning_saliency.methods",
    "AblationCAM": "lightning_saliency.methods",
    "AugSmooth": "lightning_saliency.methods",
    "DeepLift": "lightning_saliency.methods",
    "EigenCAM": "lightning_saliency.methods",
    "EigenGradCAM": "lightning_saliency.methods",
    "EigenSmooth": "lightning_saliency.methods",
    "FinerCAM": "lightning_saliency.methods",
    "FullGrad": "lightning_saliency.methods",
    "FusedCAM": "lightning_saliency.methods",
    "GradCAM": "lightning_saliency.methods",
    "GradCAMElementWise": "lightning_saliency.methods",
    "GradCAMPlusPlus": "lightning_saliency.methods",
    "Gradient": "lightning_saliency.methods",
    "GradientShap": "lightning_saliency.methods",
    "GradientXInput": "lightning_saliency.methods",
    "HiResCAM": "lightning_saliency.methods",
    "IntegratedGradients": "lightning_saliency.methods",
    "LayerCAM": "lightning_saliency.methods",
    "Occlusion": "lightning_saliency.methods",
    "SaliencyMethod": "lightning_saliency.methods",
    "ScoreCAM": "lightning_saliency.methods",
    "ShapleyCAM": "lightning_saliency.methods",
    "SmoothGrad": "lightning_saliency.methods",
    "SmoothGradSquared": "lightning_saliency.methods",
    "VarGrad": "lightning_saliency.methods",
    "XGradCAM": "lightning_saliency.methods",
    "available_methods": "lightning_saliency.methods",
    "compute_saliency": "lightning_saliency.methods",
    "get_method": "lightning_saliency.methods",
    "register_method": "lightning_saliency.methods",
    "Probe": "lightning_saliency.probe",
    "CallableTarget": "lightning_saliency.targets",
    "ClassTarget": "lightning_saliency.targets",
    "MultiLabelTarget": "lightning_saliency.targets",
    "RegressionTarget": "lightning_saliency.targets",
    "SegmentationTarget": "lightning_saliency.targets",
    "Target": "lightning_saliency.targets",
    # vision-transformer attention methods
    "AttentionRelevance": "lightning_saliency.methods",
    "AttentionRollout": "lightning_saliency.methods",
    # LRP
    "LRPAlphaBeta": "lightning_saliency.methods",
    "LRPEpsilonPlusFlat": "lightning_saliency.methods",
}
"""Public name -> the module it lives in."""

__all__ = [
    "AblationCAM",
    "Alarm",
    "AugSmooth",
    "CAMERAS",
    "CallableTarget",
    "ClassModelMonitor",
    "ClassTarget",
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
    "GradientShap",
    "GradientXInput",
    "HiResCAM",
    "IntegratedGradients",
    "KPCACAM",
    "LayerCAM",
    "METHODS",
    "MultiLabelTarget",
    "Occlusion",
    "Precision",
    "Probe",
    "RISE",
    "RegressionTarget",
    "SaliencyMethod",
    "SaliencyMonitor",
    "SaliencyWarning",
    "ScoreCAM",
    "SegmentationTarget",
    "ShapleyCAM",
    "SmoothGrad",
    "SmoothGradSquared",
    "Target",
    "VarGrad",
    "XGradCAM",
    "__version__",
    "available_methods",
    "compute_saliency",
    "eval_mode",
    "find_target_layer",
    "get_method",
    "gradients_enabled",
    "preserved_rng",
    "register_method",
    "resolve_target_layer",
    # vision-transformer attention methods
    "AttentionRelevance",
    "AttentionRollout",
    # LRP
    "LRPAlphaBeta",
    "LRPEpsilonPlusFlat",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_saliency' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return __all__
