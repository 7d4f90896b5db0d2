"""What the monitor writes for TensorBoard's SALIENCY tab: one :class:`ProbeView` per logged epoch.

:func:`write_probe_view` turns a view into summaries of the ``saliency`` plugin (the format is described in
:mod:`.metadata`): a small JSON tensor per step, one blob sequence of 8-bit grayscale PNG maps per method and step,
and the probe images as RGB PNGs once per prefix. It only writes: nothing is read back, nothing is kept but a
digest of the probe images already written to each event file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from torch import Tensor

from lightning_saliency.tensorboard.metadata import (
    FORMAT_VERSION,
    IMAGE_SIDE,
    KIND_MAP,
    KIND_PROBE,
    KIND_VIEW,
    MAP_SIDE,
    PLUGIN_NAME,
    map_tag,
    plugin_content,
    probe_tag,
    view_tag,
)

if TYPE_CHECKING:
    from lightning_saliency.monitoring.sinks import ProbeView

__all__ = ["encode_png", "parse_alarm", "probe_view_summary", "to_uint8", "view_json", "write_probe_view"]

# Event file writer -> prefix -> digest of the probe images written to it (written again only if they change).
_PROBES_WRITTEN: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()

# The lines of ``monitoring.summary.alarm_lines``: "epoch 3: energy_pointing_game of gradcam < 0.25 on probe images
# #0 (index 12), #4 (index 40): 0.102, 0.201".
_ALARM = re.compile(
    r"^epoch (?P<epoch>-?\d+): (?P<score>\S+) of (?P<method>.+?) (?P<rule>[<>] \S+(?: or [<>] \S+)?)"
    r" on probe images (?P<where>#\d+.*): [^:]*$"
)


def write_probe_view(writer: Any, view: ProbeView, step: int) -> None:
    """Write ``view`` to a ``SummaryWriter`` (``torch.utils.tensorboard``) at ``step``, as one event.

    The event holds the JSON of the step, each method's maps, and, at the first step of the prefix in this event
    file (or when the probe images changed), the probe images. Errors propagate (the monitor reports them).
    """
    file_writer = writer._get_file_writer()
    written = _PROBES_WRITTEN.setdefault(file_writer, {})
    images = view.images.detach().float().cpu()
    digest = hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    with_probe = written.get(view.prefix) != digest
    file_writer.add_summary(probe_view_summary(view, with_probe=with_probe), global_step=step)
    written[view.prefix] = digest


def probe_view_summary(view: ProbeView, *, with_probe: bool = True) -> summary_pb2.Summary:
    """The summary of one view: its JSON, a PNG blob sequence per method, and (``with_probe``) the probe images."""
    images = view.images.detach().float().cpu()
    maps = {label: shrink(m.detach().float().cpu(), MAP_SIDE) for label, m in view.maps.items()}
    probe = shrink(images, IMAGE_SIDE)
    values = [_tensor_value(view_tag(view.prefix), KIND_VIEW, view.prefix, None, [view_json(view, maps, probe)])]
    for label, m in maps.items():
        pngs = [encode_png(pixels) for pixels in to_uint8(m)]
        values.append(_blob_value(map_tag(view.prefix, label), KIND_MAP, view.prefix, label, pngs))
    if with_probe:
        pngs = [encode_png(pixels) for pixels in to_uint8(probe)]
        values.append(_blob_value(probe_tag(view.prefix), KIND_PROBE, view.prefix, None, pngs))
    return summary_pb2.Summary(value=values)


def view_json(view: ProbeView, maps: dict[str, Tensor] | None = None, probe: Tensor | None = None) -> bytes:
    """The JSON of one step (UTF-8): what the tab shows besides the pictures.

    Keys: ``version``, ``prefix``, ``epoch`` (``null`` when unknown), ``methods`` (in the monitor's order),
    ``num_images``, ``image_size`` / ``map_size`` / ``probe_size`` (``[H, W]``: as computed, as stored),
    ``captions`` (per image, its lines), ``scores`` (method -> score -> per image, ``null`` where unknown),
    ``alarms`` (``{"text", "method", "score", "images"}``; the last three ``null`` / ``[]`` when the line is not
    one the monitor writes), ``colormap``, ``alpha``.
    """
    b, _, h, w = view.images.shape
    map_size = next((list(m.shape[-2:]) for m in (maps or {}).values()), _fit(h, w, MAP_SIDE))
    probe_size = list(probe.shape[-2:]) if probe is not None else _fit(h, w, IMAGE_SIDE)
    alarms = [parse_alarm(line, list(view.maps)) for line in view.alarms]
    epoch = getattr(view, "epoch", None)
    if epoch is None:
        epoch = next((a["epoch"] for a in alarms if a["epoch"] is not None), None)
    content = {
        "version": FORMAT_VERSION,
        "prefix": view.prefix,
        "epoch": epoch,
        "methods": list(view.maps),
        "num_images": int(b),
        "image_size": [int(h), int(w)],
        "map_size": [int(s) for s in map_size],
        "probe_size": [int(s) for s in probe_size],
        "captions": [[str(line) for line in lines] for lines in view.captions],
        "scores": {
            label: {name: [_finite(v) for v in values] for name, values in by_name.items()}
            for label, by_name in view.scores.items()
        },
        "alarms": [{k: v for k, v in a.items() if k != "epoch"} for a in alarms],
        "colormap": view.colormap,
        "alpha": float(view.alpha),
    }
    return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def parse_alarm(line: str, methods: Sequence[str]) -> dict[str, Any]:
    """An alarm line as ``{"text", "epoch", "method", "score", "images"}`` (probe positions).

    Lines not in the monitor's format keep their text, with ``None`` / ``[]`` for the rest.

    Example:
        >>> line = "epoch 3: deletion of gradcam++ > 0.5 on probe images #1 (index 7), #2: 0.6, 0.7"
        >>> alarm = parse_alarm(line, ["gradcam++"])
        >>> alarm["epoch"], alarm["method"], alarm["score"], alarm["images"]
        (3, 'gradcam++', 'deletion', [1, 2])
    """
    match = _ALARM.match(line)
    if match is None or match["method"] not in methods:
        return {"text": line, "epoch": None, "method": None, "score": None, "images": []}
    images = [int(i) for i in re.findall(r"#(\d+)", match["where"])]
    return {
        "text": line,
        "epoch": int(match["epoch"]),
        "method": match["method"],
        "score": match["score"],
        "images": images,
    }


def shrink(x: Tensor, side: int) -> Tensor:
    """``[B, C, H, W]`` area-downsampled so the longer side is at most ``side`` (returned as is when it already is).

    Example:
        >>> shrink(torch.rand(2, 1, 300, 150), 128).shape
        torch.Size([2, 1, 128, 64])
    """
    h, w = x.shape[-2:]
    size = _fit(h, w, side)
    if size == [h, w]:
        return x
    return F.interpolate(x, size=(size[0], size[1]), mode="area")


def to_uint8(x: Tensor) -> np.ndarray:
    """``[B, C, H, W]`` float in [0, 1] (NaN as 0) as ``[B, H, W]`` (one channel) or ``[B, H, W, 3]`` uint8, rounded.

    Example:
        >>> to_uint8(torch.tensor([[[[0.0, 0.5, 1.0]]]])).tolist()
        [[[0, 128, 255]]]
    """
    q = (torch.nan_to_num(x.float(), nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8)
    return q[:, 0].numpy() if q.shape[1] == 1 else q.permute(0, 2, 3, 1).contiguous().numpy()


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG of ``[H, W]`` (grayscale) or ``[H, W, 3]`` (RGB) uint8 pixels."""
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")  # uint8 [H, W]: mode L; [H, W, 3]: RGB
    return buffer.getvalue()


def _fit(h: int, w: int, side: int) -> list[int]:
    scale = min(1.0, side / max(h, w, 1))
    return [int(h), int(w)] if scale == 1.0 else [max(1, round(h * scale)), max(1, round(w * scale))]


def _finite(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), 5)


def _metadata(kind: str, prefix: str, method: str | None, data_class: int) -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=plugin_content(kind, prefix, method)
        ),
        data_class=data_class,
    )


def _strings(values: list[bytes], shape: list[int]) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), string_val=values
    )


def _tensor_value(tag: str, kind: str, prefix: str, method: str | None, values: list[bytes]) -> Any:
    metadata = _metadata(kind, prefix, method, summary_pb2.DATA_CLASS_TENSOR)
    return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=_strings(values, []))


def _blob_value(tag: str, kind: str, prefix: str, method: str | None, blobs: list[bytes]) -> Any:
    metadata = _metadata(kind, prefix, method, summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
    return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=_strings(blobs, [len(blobs)]))
