"""What the monitor writes for TensorBoard's SALIENCY tab: one :class:`ProbeView` per logged epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_saliency.monitoring.sinks import ProbeView

__all__ = ["write_probe_view"]


def write_probe_view(writer: Any, view: ProbeView, step: int) -> None:
    """Write ``view`` to a ``SummaryWriter`` at ``step`` (nothing is written yet: the tab is being built)."""
