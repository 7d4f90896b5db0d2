"""Phase 5, render: the epoch's grids, filmstrips and curve plot, as captioned images for the sinks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_saliency.localisation import saliency_to_box
from lightning_saliency.monitoring.result import EpochResult
from lightning_saliency.monitoring.sinks import Image, ProbeView
from lightning_saliency.monitoring.summary import History
from lightning_saliency.probe import Probe
from lightning_saliency.render import (
    column_grid,
    curve_plot,
    draw_localisation,
    filmstrip_grid,
    method_grid,
    overview_grid,
    to_display,
)

__all__ = ["RenderOptions", "probe_view", "render_epoch"]

_X_LABELS = {"deletion": "fraction of pixels deleted", "insertion": "fraction of pixels inserted"}


@dataclass(frozen=True)
class RenderOptions:
    """How the monitor draws (see :class:`~lightning_saliency.SaliencyMonitor`'s arguments of the same names)."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    alpha: float = 0.5
    colormap: str = "turbo"
    min_display_size: int = 96
    grid_columns: int | None = 5
    localisation: bool = True


def render_epoch(
    prefix: str,
    probe: Probe,
    result: EpochResult,
    rows: list[list[str]],
    history: History | None,
    options: RenderOptions,
    when: str,
) -> list[Image]:
    """The images of one logged epoch, each with a caption.

    ``prefix/overview``, ``prefix/<method>``, and ``prefix/localisation``, ``prefix/filmstrip/<method>`` (given a
    ``history``) and ``prefix/curves`` when known.

    ``rows`` are the per-image captions of the grids (:func:`~lightning_saliency.render.row_labels`); ``when`` says
    the epoch and step for the captions.
    """
    maps = result.maps
    images = to_display(probe.inputs, options.mean, options.std)  # [B,3,H,W]
    draw: dict[str, Any] = {
        "alpha": options.alpha,
        "colormap": options.colormap,
        "min_size": options.min_display_size,
        "labels": rows,
    }
    wrap: dict[str, Any] = {"max_columns": options.grid_columns}
    per_row = "; ".join(" · ".join(row) for row in rows)
    labels = ", ".join(maps)
    out = [
        Image(
            f"{prefix}/overview",
            overview_grid(images, maps, **draw, **wrap),
            f"input, then {labels} ({when}). {per_row}",
        )
    ]
    for label, m in maps.items():
        out.append(
            Image(
                f"{prefix}/{label}",
                method_grid(images, m, **draw),
                f"{label}: input, heat, overlay ({when}). {per_row}",
            )
        )
    if options.localisation:
        columns = {"input": images}
        for label, m in maps.items():
            columns[label] = draw_localisation(
                images,
                m,
                saliency_to_box(m, "otsu"),
                probe.boxes,
                probe.masks,
                alpha=options.alpha,
                colormap=options.colormap,
            )
        grid = column_grid(columns, min_size=options.min_display_size, labels=rows, max_columns=options.grid_columns)
        out.append(
            Image(f"{prefix}/localisation", grid, f"boxes from each map (red), the truth (green) ({when}). {per_row}")
        )
    for label, entries in (history or {}).items():
        titles = [f"ep {epoch}" for epoch, _ in entries]
        strip = filmstrip_grid(images, [m for _, m in entries], titles, **draw, **wrap)
        out.append(
            Image(f"{prefix}/filmstrip/{label}", strip, f"{label} at epochs {', '.join(titles)} ({when}). {per_row}")
        )
    if result.curves:
        panels = [
            curve_plot(
                {lb: c.mean(0) for lb, c in by_label.items()}, f"{mode} (mean over probe)", x_label=_X_LABELS[mode]
            )
            for mode, by_label in result.curves.items()
        ]
        modes = " and ".join(result.curves)
        out.append(Image(f"{prefix}/curves", torch.cat(panels, 1), f"mean {modes} curves of {labels} ({when})"))
    return out


def probe_view(
    prefix: str,
    probe: Probe,
    result: EpochResult,
    rows: list[list[str]],
    alarms: list[str],
    options: RenderOptions,
    epoch: int | None = None,
) -> ProbeView:
    """The epoch as the SALIENCY tab shows it (:class:`~lightning_saliency.monitoring.sinks.ProbeView`)."""
    scores = {
        label: {name: [None if math.isnan(v) else v for v in values.tolist()] for name, values in by_name.items()}
        for label, by_name in result.scores.items()
    }
    return ProbeView(
        prefix=prefix,
        images=to_display(probe.inputs, options.mean, options.std),
        maps=dict(result.maps),
        captions=rows,
        scores=scores,
        alarms=list(alarms),
        colormap=options.colormap,
        alpha=options.alpha,
        epoch=epoch,
    )
