"""Phase 5, render: the epoch's grids, filmstrips and curve plot, as captioned images for the sinks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

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
from lightning_saliency.render.volumes import PANELS, describe_planes, flatten_volumes, volume_peaks

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
    volume_view: str = "slices"


@dataclass(frozen=True)
class _Planar:
    """The probe as 2-D pictures: images ``[B,3,H,W]``, maps and history ``[B,1,H,W]``, what the cells show."""

    images: Tensor
    maps: dict[str, Tensor]
    history: History
    rows: list[list[str]]
    note: str  # "" for images; for volumes what each cell shows, with a leading space
    panels: int = 1  # images side by side in each cell (volumes: PANELS)


def _planar(
    probe: Probe, result: EpochResult, rows: list[list[str]], history: History | None, options: RenderOptions
) -> _Planar:
    """Images stay as they are; volumes become 2-D cells (:mod:`~lightning_saliency.render.volumes`)."""
    images = to_display(probe.inputs, options.mean, options.std)  # [B,3,*S]
    if images.ndim == 4:
        return _Planar(images, dict(result.maps), dict(history or {}), rows, "")
    view, size = options.volume_view, images.shape[2:]
    peaks = volume_peaks(list(result.maps.values())) if result.maps and view == "slices" else None

    def flat(v: Tensor, fill: float) -> Tensor:
        if v.shape[2:] != size:  # the history keeps shrunk maps: back to the probe's grid, same planes
            v = F.interpolate(v.float(), size=tuple(size), mode="trilinear", align_corners=False)
        return flatten_volumes(v, view, peaks, fill)

    note, per_row = describe_planes(view, tuple(size), peaks)
    return _Planar(
        flat(images, 1.0),
        {label: flat(m, 0.0) for label, m in result.maps.items()},
        {label: [(e, flat(m, 0.0)) for e, m in entries] for label, entries in (history or {}).items()},
        [[*row, extra] for row, extra in zip(rows, per_row, strict=True)] if per_row else rows,
        f" ({note})",
        PANELS,
    )


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
    the epoch and step for the captions. Volumes are drawn as ``options.volume_view`` cells
    (:mod:`~lightning_saliency.render.volumes`), without the localisation grid (its boxes are 2-D).
    """
    planar = _planar(probe, result, rows, history, options)
    images, maps, rows = planar.images, planar.maps, planar.rows  # [B,3,H,W], [B,1,H,W]
    when = f"{when}{planar.note}"
    draw: dict[str, Any] = {
        "alpha": options.alpha,
        "colormap": options.colormap,
        "min_size": options.min_display_size,
        "labels": rows,
    }
    # grid_columns counts square cells: a volume's cell is PANELS wide, so fewer of them fit on a line
    columns = None if options.grid_columns is None else max(1, options.grid_columns // planar.panels)
    wrap: dict[str, Any] = {"max_columns": columns}
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
    if options.localisation and probe.inputs.ndim == 4:
        cells = {"input": images}
        for label, m in maps.items():
            cells[label] = draw_localisation(
                images,
                m,
                saliency_to_box(m, "otsu"),
                probe.boxes,
                true_masks=probe.masks,
                alpha=options.alpha,
                colormap=options.colormap,
            )
        grid = column_grid(cells, min_size=options.min_display_size, labels=rows, max_columns=options.grid_columns)
        out.append(
            Image(
                f"{prefix}/localisation",
                grid,
                f"boxes from each map (red), the truth (green box or outline) ({when}). {per_row}",
            )
        )
    for label, entries in planar.history.items():
        titles = [f"ep {epoch}" for epoch, _ in entries]
        strip = filmstrip_grid(images, [m for _, m in entries], titles, **draw, **wrap)
        out.append(
            Image(f"{prefix}/filmstrip/{label}", strip, f"{label} at epochs {', '.join(titles)} ({when}). {per_row}")
        )
    if result.curves:
        panels = [
            curve_plot(
                {lb: c.nanmean(0) for lb, c in by_label.items()}, f"{mode} (mean over probe)", x_label=_X_LABELS[mode]
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
    """The epoch as the SALIENCY tab shows it (:class:`~lightning_saliency.monitoring.sinks.ProbeView`).

    Volumes are shown as in the grids (``options.volume_view``).
    """
    planar = _planar(probe, result, rows, None, options)
    scores = {
        label: {name: [None if math.isnan(v) else v for v in values.tolist()] for name, values in by_name.items()}
        for label, by_name in result.scores.items()
    }
    return ProbeView(
        prefix=prefix,
        images=planar.images,
        maps=planar.maps,
        captions=planar.rows,
        scores=scores,
        alarms=list(alarms),
        colormap=options.colormap,
        alpha=options.alpha,
        epoch=epoch,
    )
