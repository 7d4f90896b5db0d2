"""Lightning callbacks, one per file."""

from lightning_saliency.callbacks.class_model_monitor import ClassModelMonitor
from lightning_saliency.callbacks.saliency_monitor import Alarm, SaliencyMonitor

__all__ = ["Alarm", "ClassModelMonitor", "SaliencyMonitor"]
