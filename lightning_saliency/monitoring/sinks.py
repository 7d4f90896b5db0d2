"""Phase 6, write: everything the monitors log goes through one small protocol, :class:`Sink`.

A :class:`Record` is what is written at one step: captioned images, scalars, texts, and charts (scalar tags drawn
together). :class:`TensorBoardSink` is the first implementation (its ``SummaryWriter``, and the custom-scalars
layout); every other logger of the trainer gets the scalars through :class:`MetricsSink`. Sinks are written on
rank 0 only and never call a collective.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from lightning_saliency.tensorboard.summary import write_probe_view

__all__ = ["Image", "MetricsSink", "ProbeView", "Record", "Sink", "TensorBoardSink", "sinks_for"]


@dataclass(frozen=True)
class Image:
    """An image to log: ``tag``, ``image [3, H, W]`` float in [0, 1], and a ``caption`` for loggers showing one."""

    tag: str
    image: Tensor
    caption: str = ""


@dataclass(frozen=True)
class ProbeView:
    """One logged epoch as TensorBoard's SALIENCY tab shows it: every probe image's map of every method.

    Attributes:
        prefix: The tag prefix of the monitor and stage (``saliency``, ``saliency_test``).
        images: ``[B, 3, H, W]`` float in [0, 1], the probe as displayed (the same at every epoch).
        maps: Method label -> ``[B, 1, H, W]`` float maps in [0, 1].
        captions: Per image, its caption lines (probe position and index, true and predicted class).
        scores: Method label -> score name -> per-image values (``None`` where unknown).
        alarms: The alarm lines that fired at this epoch.
        colormap: The colormap the grids use.
        alpha: The heat map's opacity over the image in the overlays.
    """

    prefix: str
    images: Tensor
    maps: dict[str, Tensor]
    captions: list[list[str]]
    scores: dict[str, dict[str, list[float | None]]]
    alarms: list[str]
    colormap: str
    alpha: float


@dataclass
class Record:
    """What a monitor writes at one ``step``.

    Attributes:
        step: The trainer's global step.
        images: Captioned images.
        scalars: Tag -> value.
        texts: Tag -> markdown text.
        charts: Category -> chart title -> the scalar tags drawn together in it; a tag ending in ``/`` stands
            for every tag under it (TensorBoard: the custom-scalars layout, written once per writer).
        view: The epoch for TensorBoard's SALIENCY tab (other sinks ignore it).
    """

    step: int
    images: list[Image] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    charts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    view: ProbeView | None = None


class Sink(Protocol):
    """Where a :class:`Record` goes."""

    def write(self, record: Record) -> None:
        """Write the record (a sink ignores what its tool cannot show)."""


class TensorBoardSink:
    """A ``TensorBoardLogger``: images and texts on its ``SummaryWriter``, scalars through ``log_metrics``.

    The custom-scalars layout is written once per writer, from the first record with charts. TensorBoard reads each
    chart's tags as regular expressions and keeps the logged tags they ``re.match``: tags are escaped and anchored,
    so a label such as ``gradcam++`` (a possessive quantifier on Python 3.11, an invalid pattern on 3.10) matches
    exactly its own tag.
    """

    def __init__(self, logger: TensorBoardLogger) -> None:
        self.logger = logger
        self._layout_written = False

    def write(self, record: Record) -> None:
        """Layout (once), images, texts, then scalars."""
        writer = self.logger.experiment
        if record.charts and not self._layout_written:
            self._layout_written = True
            writer.add_custom_scalars(_layout(record.charts))
        for image in record.images:
            writer.add_image(image.tag, image.image, global_step=record.step, dataformats="CHW")
        for tag, text in record.texts.items():
            writer.add_text(tag, text, global_step=record.step)
        if record.view is not None:
            write_probe_view(writer, record.view, record.step)
        if record.scalars:
            self.logger.log_metrics(record.scalars, step=record.step)


def _layout(charts: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[Any]]]:
    r"""TensorBoard's custom-scalars layout (multiline charts) of :attr:`Record.charts`, with escaped, anchored tags.

    Example:
        >>> layout = _layout({"scores": {"deletion": ["saliency/gradcam++/deletion"], "time": ["saliency/time/"]}})
        >>> print(layout["scores"]["deletion"][1], layout["scores"]["time"][1])
        ['saliency/gradcam\\+\\+/deletion$'] ['saliency/time/']
    """

    def pattern(tag: str) -> str:
        return re.escape(tag) + ("" if tag.endswith("/") else "$")

    return {
        category: {title: ["Multiline", [pattern(t) for t in tags]] for title, tags in by_title.items()}
        for category, by_title in charts.items()
    }


class MetricsSink:
    """Any other logger: the scalars, through ``log_metrics`` (images and texts are left out)."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def write(self, record: Record) -> None:
        """Log the scalars."""
        if record.scalars:
            self.logger.log_metrics(record.scalars, step=record.step)


def sinks_for(trainer: pl.Trainer, cache: dict[int, Sink]) -> list[Sink]:
    """A sink per logger of the trainer, kept in ``cache`` (by logger) so each writes its layout once.

    Example:
        >>> from types import SimpleNamespace
        >>> sinks_for(SimpleNamespace(loggers=[]), {})
        []
    """
    sinks = []
    for logger in trainer.loggers:
        if id(logger) not in cache:
            cache[id(logger)] = (
                TensorBoardSink(logger) if isinstance(logger, TensorBoardLogger) else MetricsSink(logger)
            )
        sinks.append(cache[id(logger)])
    return sinks
