"""The argument checks of :class:`~lightning_saliency.SaliencyMonitor`.

Each error names the argument, the value received and what was expected.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods import SaliencyMethod, get_method
from lightning_saliency.metrics import SCORES
from lightning_saliency.monitoring.summary import Alarm
from lightning_saliency.monitoring.targeting import TargetSpec
from lightning_saliency.probe import Probe
from lightning_saliency.targets import Target

__all__ = [
    "ProbeSpec",
    "build_methods",
    "check_alarms",
    "check_class_names",
    "check_probe_spec",
    "check_scores",
    "check_targets_spec",
    "describe_probe",
]

ProbeSpec = Tensor | tuple[Tensor, Tensor] | Sequence[int] | Probe | None


def check_targets_spec(targets: Any) -> TargetSpec:
    """``"label"``, ``"predicted"``, a class index ``>= 0``, a Target, or a callable ``output -> Tensor[B]``."""
    if isinstance(targets, Target) or (callable(targets) and not isinstance(targets, (str, int))):
        return targets
    if not (isinstance(targets, int) and not isinstance(targets, bool) and targets >= 0) and targets not in (
        "label",
        "predicted",
    ):
        raise ValueError(
            "targets must be 'label', 'predicted', a class index >= 0, a Target (ClassTarget, MultiLabelTarget, "
            f"SegmentationTarget, RegressionTarget) or a callable output -> Tensor[B], got {targets!r}."
        )
    return targets


def build_methods(methods: Sequence[str | SaliencyMethod], target_layer: LayerSpec) -> list[SaliencyMethod]:
    if isinstance(methods, (str, SaliencyMethod)):
        methods = [methods]
    if not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names or instances, got {methods!r}.")
    built: list[SaliencyMethod] = []
    for m in methods:
        if isinstance(m, SaliencyMethod):
            built.append(m)
            continue
        if not isinstance(m, str):
            raise TypeError(f"Each method must be a registered name or a SaliencyMethod instance, got {m!r}.")
        cls = type(get_method(m))
        accepts_layer = "target_layer" in inspect.signature(cls.__init__).parameters
        built.append(get_method(m, **({"target_layer": target_layer} if accepts_layer else {})))
    labels = [m.label for m in built]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(
            f"Method labels must be unique, got {labels}; give repeated methods a `name=` (e.g. "
            f"GradCAM(target_layer='layer3', name='gradcam_layer3'))."
        )
    return built


def check_probe_spec(probe: ProbeSpec) -> Probe | list[int] | None:
    """The probe as given, checked: a :class:`Probe` (from tensors), dataset indices, or ``None``."""
    if probe is None or isinstance(probe, Probe):
        return probe
    if isinstance(probe, Tensor):
        return Probe(probe)
    if isinstance(probe, tuple) and len(probe) == 2 and isinstance(probe[0], Tensor):
        return Probe(probe[0], probe[1])
    if (
        isinstance(probe, Sequence)
        and not isinstance(probe, str)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in probe)
    ):
        if not probe:
            raise ValueError("probe indices must not be empty.")
        return [int(i) for i in probe]
    raise TypeError(
        f"probe must be None, a Tensor [B, C, H, W], a tuple (inputs, labels), or a list of dataset indices, "
        f"got {type(probe).__name__}."
    )


def check_class_names(class_names: Sequence[str] | None) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise TypeError(f"class_names must be a sequence of strings (one per class), got {class_names!r}.")
    return list(class_names)


def describe_probe(config: dict[str, Any]) -> str:
    """``num_samples=4``, ``probe=[0, 3, 5]`` or ``probe=<tensor [4, 3, 16, 16], sum 12.5>``."""
    if "num_samples" in config:
        return f"num_samples={config['num_samples']}"
    if "indices" in config:
        return f"probe={config['indices']}"
    *shape, total = config["inputs"]
    return f"probe=<tensor {shape}, sum {total:g}>"


def check_alarms(alarms: Sequence[Alarm], methods: list[SaliencyMethod], scores: list[str]) -> list[Alarm]:
    labels = [m.label for m in methods]
    checked = []
    for alarm in alarms:
        if not isinstance(alarm, Alarm):
            raise TypeError(f"alarms must be Alarm instances, got {alarm!r}.")
        if alarm.score not in scores:
            raise ValueError(f"Alarm on {alarm.score!r}, but that score is not computed: scores={scores}.")
        unknown = [m for m in alarm.methods or [] if m not in labels]
        if unknown:
            raise ValueError(f"Alarm on methods {unknown}, but the monitor's methods are {labels}.")
        checked.append(alarm)
    return checked


def check_scores(scores: Sequence[str]) -> list[str]:
    if isinstance(scores, str):
        scores = [scores]
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"Unknown score(s) {unknown}. Available: {', '.join(SCORES)}.")
    return list(dict.fromkeys(scores))
