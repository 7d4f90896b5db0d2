"""Lightning callbacks, one per file."""

from lightning_saliency.callbacks.saliency_monitor import SaliencyMonitor

__all__ = ["SaliencyMonitor"]
