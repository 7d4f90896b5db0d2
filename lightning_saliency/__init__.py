"""lightning-saliency: watch what your image classifier looks at while it trains.

Add :class:`SaliencyMonitor` to ``Trainer(callbacks=[...])``; every validation epoch it logs saliency-map grids
and timings of a fixed probe batch to TensorBoard, without changing training.
"""

from lightning_saliency._runtime import Precision, eval_mode, gradients_enabled, preserved_rng
from lightning_saliency.callbacks import Alarm, ClassModelMonitor, SaliencyMonitor
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import find_target_layer, resolve_target_layer
from lightning_saliency.methods import (
    CAMERAS,
    METHODS,
    EigenCAM,
    FusedCAM,
    GradCAM,
    GradCAMPlusPlus,
    Gradient,
    GradientXInput,
    HiResCAM,
    IntegratedGradients,
    LayerCAM,
    SaliencyMethod,
    ScoreCAM,
    SmoothGrad,
    XGradCAM,
    available_methods,
    compute_saliency,
    get_method,
    register_method,
)
from lightning_saliency.probe import Probe

__version__ = "0.1.0"

__all__ = [
    "CAMERAS",
    "Alarm",
    "METHODS",
    "ClassModelMonitor",
    "EigenCAM",
    "FusedCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "Gradient",
    "GradientXInput",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "Precision",
    "Probe",
    "SaliencyMethod",
    "SaliencyMonitor",
    "SaliencyWarning",
    "ScoreCAM",
    "SmoothGrad",
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
]
