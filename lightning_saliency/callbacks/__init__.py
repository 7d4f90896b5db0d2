"""Lightning callbacks, one per file."""

from lightning_saliency.callbacks.class_model_monitor import ClassModelMonitor
from lightning_saliency.callbacks.saliency_monitor import SaliencyMonitor

__all__ = ["ClassModelMonitor", "SaliencyMonitor"]
