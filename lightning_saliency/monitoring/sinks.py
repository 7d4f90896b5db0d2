"""Phase 7, write: everything the monitors log goes through one small protocol, :class:`Sink`.

A :class:`Record` is what is written at one step: captioned images, scalars, texts, charts (scalar tags drawn
together) and the view of TensorBoard's SALIENCY tab. Every logger of the trainer gets a sink that serves it in
its own API: :class:`TensorBoardSink` (``TensorBoardLogger``, with the custom-scalars layout and the tab),
:class:`WandbSink` (``WandbLogger``), :class:`MLflowSink` (``MLFlowLogger``), :class:`CometSink` (``CometLogger``),
and :class:`FileSink` for any other logger, or none (PNG files and markdown under its log directory). Sinks are
written on rank 0 only and never call a collective; none of the optional libraries is imported here (each sink
uses its logger's own objects).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from tensorboard.compat.proto import summary_pb2
from torch import Tensor

from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.tensorboard.summary import write_probe_view

__all__ = [
    "CometSink",
    "FileSink",
    "Image",
    "MLflowSink",
    "ProbeView",
    "Record",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "mlflow_key",
    "pixels",
    "sinks_for",
]


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
        epoch: The trainer's epoch, for the tab's column titles.
    """

    prefix: str
    images: Tensor
    maps: dict[str, Tensor]
    captions: list[list[str]]
    scores: dict[str, dict[str, list[float | None]]]
    alarms: list[str]
    colormap: str
    alpha: float
    epoch: int | None = None


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
        file_writer = writer._get_file_writer()  # what add_image writes to, minus its float round trip
        for image in record.images:
            file_writer.add_summary(image_summary(image.tag, pixels(image.image)), global_step=record.step)
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


def pixels(image: Tensor) -> np.ndarray:
    """``image [3, H, W]`` float in [0, 1] as ``uint8 [H, W, 3]``, exactly as TensorBoard's ``add_image`` converts it.

    Every sink logs these pixels, so each logger shows the same picture, pixel for pixel.

    Example:
        >>> import torch
        >>> pixels(torch.tensor([[[0.0, 0.5, 1.0]]]).expand(3, 1, 3))[0].tolist()
        [[0, 0, 0], [127, 127, 127], [255, 255, 255]]
    """
    scaled = (image.detach().float().cpu() * 255).clamp(0, 255).to(torch.uint8)  # truncates, as numpy's astype
    return scaled.permute(1, 2, 0).contiguous().numpy()


def image_summary(tag: str, hwc: np.ndarray) -> summary_pb2.Summary:
    """``hwc`` (``uint8 [H, W, 3]``) as TensorBoard's image summary: what ``SummaryWriter.add_image`` writes.

    Example:
        >>> import numpy as np
        >>> value = image_summary("saliency/overview", np.zeros((2, 3, 3), np.uint8)).value[0]
        >>> value.tag, value.image.height, value.image.width, value.image.encoded_image_string[1:4]
        ('saliency/overview', 2, 3, b'PNG')
    """
    height, width, channels = hwc.shape
    buffer = io.BytesIO()
    PILImage.fromarray(hwc).save(buffer, format="PNG")
    image = summary_pb2.Summary.Image(
        height=height, width=width, colorspace=channels, encoded_image_string=buffer.getvalue()
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])


def _pil(image: Tensor) -> PILImage.Image:
    return PILImage.fromarray(pixels(image))


class WandbSink:
    """A ``WandbLogger``: each image through ``log_image`` with its caption, each text as a one-column table."""

    def __init__(self, logger: Logger) -> None:
        self.logger: Any = logger  # its API is the library's (typed there, not in Lightning's Logger)

    def write(self, record: Record) -> None:
        """Images (with captions), texts (tables), then scalars."""
        for image in record.images:
            self.logger.log_image(key=image.tag, images=[_pil(image.image)], step=record.step, caption=[image.caption])
        for tag, text in record.texts.items():
            self.logger.log_text(key=tag, columns=["text"], data=[[text]], step=record.step)
        if record.scalars:
            self.logger.log_metrics(record.scalars, step=record.step)


def mlflow_key(tag: str) -> str:
    """``tag`` with what MLflow refuses in keys (beyond ``[A-Za-z0-9_./ -]``) escaped as ``_<hex>_``: no collisions.

    Example:
        >>> mlflow_key("saliency/gradcam++/deletion")
        'saliency/gradcam_2b__2b_/deletion'
    """
    return re.sub(r"[^A-Za-z0-9_./ -]", lambda m: f"_{ord(m.group()):x}_", tag)


class MLflowSink:
    """An ``MLFlowLogger``: images through its client's ``log_image`` (key and step), texts as markdown artifacts.

    MLflow allows only ``[A-Za-z0-9_./ -]`` in keys: other characters (``gradcam++``) are escaped by
    :func:`mlflow_key`, in the scalars' names too (Lightning would drop them, merging ``gradcam++`` into
    ``gradcam``). MLflow shows no captions.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger: Any = logger  # its API is the library's (typed there, not in Lightning's Logger)

    def write(self, record: Record) -> None:
        """Images, texts (``<tag>/step_<N>.md`` artifacts), then scalars."""
        client, run_id = self.logger.experiment, self.logger.run_id  # an MlflowClient, the run's id
        for image in record.images:
            client.log_image(run_id, _pil(image.image), key=mlflow_key(image.tag), step=record.step)
        for tag, text in record.texts.items():
            client.log_text(run_id, text, f"{tag}/step_{record.step}.md")
        if record.scalars:
            self.logger.log_metrics({mlflow_key(k): v for k, v in record.scalars.items()}, step=record.step)


class CometSink:
    """A ``CometLogger``: its experiment's ``log_image`` (the caption in the metadata) and ``log_text``.

    Lightning 2.6's ``CometLogger(online=False)`` makes a *disabled* experiment that records nothing; one warning
    says so and how to log offline instead (``COMET_START_ONLINE=0`` with ``offline_directory=``).
    """

    def __init__(self, logger: Logger) -> None:
        self.logger: Any = logger  # its API is the library's (typed there, not in Lightning's Logger)
        self._warned_disabled = False

    def write(self, record: Record) -> None:
        """Images, texts, then scalars."""
        experiment = self.logger.experiment
        if getattr(experiment, "disabled", False) and not self._warned_disabled:
            self._warned_disabled = True
            rank_zero_warn(
                "SaliencyMonitor: the CometLogger's experiment is disabled, so Comet records nothing, neither the "
                "saliency images nor any metric (Lightning's CometLogger(online=False) disables it). To log "
                "offline, set the environment variable COMET_START_ONLINE=0 and pass "
                "CometLogger(offline_directory=...) without online=False.",
                category=SaliencyWarning,
            )
        for image in record.images:
            experiment.log_image(
                _pil(image.image), name=image.tag, step=record.step, metadata={"caption": image.caption}
            )
        for tag, text in record.texts.items():
            experiment.log_text(text, step=record.step, metadata={"tag": tag})
        if record.scalars:
            self.logger.log_metrics(record.scalars, step=record.step)


class FileSink:
    """Any other logger, or none: images as PNG files, texts as markdown, under a directory.

    ``<root>/<tag>/step_<N>.png`` (its caption in the PNG's ``Description`` text chunk) and
    ``<root>/<tag>/step_<N>.md``; ``root`` is the logger's log directory (the trainer's, without a logger), so
    the overview of ``saliency`` lands in ``<log_dir>/saliency/overview/``. Scalars go to the logger, if any. The
    first write says once where the files are.
    """

    def __init__(self, root: str | Path, logger: Logger | None = None) -> None:
        self.root = Path(root)
        self.logger = logger
        self._said_where = False

    def write(self, record: Record) -> None:
        """Files for the images and texts, then the scalars."""
        if (record.images or record.texts) and not self._said_where:
            self._said_where = True
            who = f"{type(self.logger).__name__} shows no images" if self.logger is not None else "there is no logger"
            rank_zero_info(
                f"SaliencyMonitor: {who}, so its images are written as PNG files (texts as markdown) under "
                f"{self.root}/<tag>/step_<N>.png."
            )
        for image in record.images:
            folder = self.root / image.tag
            folder.mkdir(parents=True, exist_ok=True)
            info = PngInfo()
            info.add_text("Description", image.caption)
            _pil(image.image).save(folder / f"step_{record.step}.png", pnginfo=info)
        for tag, text in record.texts.items():
            folder = self.root / tag
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"step_{record.step}.md").write_text(text, encoding="utf-8")
        if record.scalars and self.logger is not None:
            self.logger.log_metrics(record.scalars, step=record.step)


def _sink(trainer: pl.Trainer, logger: Logger) -> Sink:
    """The sink that serves ``logger`` in its own API (by class name, so no optional library is imported)."""
    kinds = {cls.__name__ for cls in type(logger).__mro__}
    if isinstance(logger, TensorBoardLogger):
        return TensorBoardSink(logger)
    if "WandbLogger" in kinds:
        return WandbSink(logger)
    if "MLFlowLogger" in kinds:
        return MLflowSink(logger)
    if "CometLogger" in kinds:
        return CometSink(logger)
    root = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or trainer.default_root_dir
    return FileSink(root, logger)


def sinks_for(trainer: pl.Trainer, cache: dict[int, Sink]) -> list[Sink]:
    """A sink per logger of the trainer (a :class:`FileSink` without any), kept in ``cache`` by logger.

    Lightning's ``DummyLogger`` (``fast_dev_run``) gets none: nothing is logged in that mode.

    Example:
        >>> from types import SimpleNamespace
        >>> [type(s).__name__ for s in sinks_for(SimpleNamespace(loggers=[], default_root_dir="logs"), {})]
        ['FileSink']
    """
    loggers = [lg for lg in trainer.loggers if not isinstance(lg, DummyLogger)]
    if not trainer.loggers:
        key = id(trainer)
        if key not in cache:
            cache[key] = FileSink(trainer.default_root_dir)
        return [cache[key]]
    for logger in loggers:
        if id(logger) not in cache:
            cache[id(logger)] = _sink(trainer, logger)
    return [cache[id(logger)] for logger in loggers]
