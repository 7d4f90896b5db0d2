"""The storage format of the SALIENCY tab, shared by the writer (:mod:`.summary`) and the plugin (:mod:`.plugin`).

Every summary has ``plugin_name = "saliency"`` and a small JSON ``plugin_data.content`` naming its kind, so the
plugin classifies tags by their metadata, never by parsing tag names. Per monitor prefix (``saliency``,
``saliency_test``) and logged step:

========================== ================ ==========================================================
tag                        data class       value
========================== ================ ==========================================================
``<prefix>/_tab/view``     tensor           a scalar string: UTF-8 JSON (methods, captions, per-image
                                            scores, alarms, colormap, alpha, sizes), see :func:`.summary.view_json`
``<prefix>/_tab/map/<m>``  blob sequence    one 8-bit grayscale PNG per probe image: method ``m``'s map,
                                            area-downsampled so the longer side is at most :data:`MAP_SIDE`
``<prefix>/_tab/probe``    blob sequence    one RGB PNG per probe image (at most :data:`IMAGE_SIDE`); written at
                                            the first logged step of the prefix and again only if the probe
                                            changes: a step shows the latest probe at or before it
========================== ================ ==========================================================

Colouring and blending happen in the browser, with the lookup tables of :mod:`lightning_saliency._colormaps`.
"""

from __future__ import annotations

import json

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_SIDE",
    "KIND_MAP",
    "KIND_PROBE",
    "KIND_VIEW",
    "MAP_SIDE",
    "PLUGIN_NAME",
    "map_tag",
    "parse_content",
    "plugin_content",
    "probe_tag",
    "view_tag",
]

PLUGIN_NAME = "saliency"
"""The plugin's name: in the metadata of its summaries, its routes (``/data/plugin/saliency/...``), ``#saliency``."""

FORMAT_VERSION = 1
"""Bumped when the stored format changes in a way an older plugin cannot read."""

MAP_SIDE = 128
"""Stored maps are area-downsampled so that their longer side is at most this many pixels (never upsampled)."""

IMAGE_SIDE = 256
"""Stored probe images: the longer side at most this many pixels."""

KIND_VIEW, KIND_MAP, KIND_PROBE = "view", "map", "probe"


def view_tag(prefix: str) -> str:
    """The JSON tensor's tag of ``prefix``.

    Example:
        >>> view_tag("saliency")
        'saliency/_tab/view'
    """
    return f"{prefix}/_tab/view"


def map_tag(prefix: str, method: str) -> str:
    """The maps' tag of one method.

    Example:
        >>> map_tag("saliency_test", "gradcam++")
        'saliency_test/_tab/map/gradcam++'
    """
    return f"{prefix}/_tab/map/{method}"


def probe_tag(prefix: str) -> str:
    """The probe images' tag of ``prefix``.

    Example:
        >>> probe_tag("saliency")
        'saliency/_tab/probe'
    """
    return f"{prefix}/_tab/probe"


def plugin_content(kind: str, prefix: str, method: str | None = None) -> bytes:
    """The ``plugin_data.content`` of a summary: ``{"version", "kind", "prefix"[, "method"]}`` as compact JSON.

    Example:
        >>> plugin_content("map", "saliency", "gradcam")
        b'{"version":1,"kind":"map","prefix":"saliency","method":"gradcam"}'
    """
    content: dict[str, object] = {"version": FORMAT_VERSION, "kind": kind, "prefix": prefix}
    if method is not None:
        content["method"] = method
    return json.dumps(content, separators=(",", ":")).encode()


def parse_content(content: bytes) -> dict[str, object] | None:
    """The metadata content as a dict, or ``None`` when it is not this format's (empty, not JSON, no kind).

    Example:
        >>> parse_content(plugin_content("view", "saliency"))["kind"]
        'view'
        >>> parse_content(b"") is None
        True
    """
    try:
        parsed = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(parsed, dict) or parsed.get("kind") not in (KIND_VIEW, KIND_MAP, KIND_PROBE):
        return None
    if not isinstance(parsed.get("prefix"), str):
        return None
    return parsed
