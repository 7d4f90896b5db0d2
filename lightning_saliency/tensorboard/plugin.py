"""TensorBoard's SALIENCY tab: a dynamic plugin that reads what :func:`.summary.write_probe_view` writes.

TensorBoard finds it through the ``tensorboard_plugins`` entry point (``pyproject.toml``), loads it with
:class:`SaliencyPluginLoader` and shows it at ``http://localhost:6006/#saliency``: an ES module and a stylesheet
(``static/``, no build step, nothing fetched from elsewhere) that call the JSON and image routes below, relative to
``/data/plugin/saliency/``. Every route reads through ``context.data_provider`` (the Python multiplexer or the Rust
data server alike), per experiment and run, and returns only what is on screen:

=============================================== =====================================================================
route                                           returns
=============================================== =====================================================================
``/runs``                                       runs with tab data and their prefixes; runs with the monitor's grids
                                                (``<prefix>/overview`` images) but no tab data, to explain why
``/probe?run&prefix``                           the logged steps (and epochs), methods, sizes, colormap, alpha and the
                                                latest captions of the probe images
``/matrix?run&prefix&image&start&count``        one page of columns (or ``&steps=s1,s2``): each step's caption of the
                                                image, which probe step it shows, and per method whether a map is
                                                stored and which alarms fired on it
``/scores?run&prefix&image``                    the image's scores per method at every step, the alarms marked
``/map?run&prefix&method&image&step``           the stored 8-bit grayscale PNG
``/image?run&prefix&image[&step]``              the probe image's PNG, the latest at or before ``step``
``/colormaps``                                  the 256-entry RGB tables of :mod:`lightning_saliency._colormaps`
=============================================== =====================================================================

Bad requests answer 400, unknown runs, prefixes or steps 404, and a stored image that is not a PNG 500, each with a
plain-text reason that the page shows in the cell concerned.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tensorboard import errors, plugin_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from lightning_saliency._colormaps import COLORMAPS
from lightning_saliency.tensorboard.metadata import (
    FORMAT_VERSION,
    KIND_MAP,
    KIND_VIEW,
    PLUGIN_NAME,
    map_tag,
    parse_content,
    probe_tag,
    view_tag,
)

__all__ = ["DEFAULT_SAMPLES", "SaliencyPlugin", "SaliencyPluginLoader"]

DEFAULT_SAMPLES = 1000
"""Steps TensorBoard keeps per tag of this plugin unless ``--samples_per_plugin saliency=N`` says otherwise (its own
default, 10 for blob sequences, would leave most epochs out of the matrix; ``0`` keeps every step)."""

MAX_COLUMNS = 64
"""The most columns (steps) one ``/matrix`` answer holds."""

_STATIC = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {"index.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_PNG = b"\x89PNG\r\n\x1a\n"
_READ_ALL = 1 << 30  # `downsample` for reads: everything the data provider kept
_LEGACY_SUFFIX = "/overview"  # the monitor's grid of every probe image (IMAGES tab), logged before this tab too

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class CorruptDataError(errors.PublicError):
    """Stored data that cannot be what the format says (for example a map that is not a PNG): HTTP 500."""

    http_code = 500


class SaliencyPluginLoader(base_plugin.TBLoader):
    """Loads :class:`SaliencyPlugin`; keeps :data:`DEFAULT_SAMPLES` steps per tag unless the flags say otherwise."""

    def fix_flags(self, flags: Any) -> None:
        """Add ``saliency=DEFAULT_SAMPLES`` to ``--samples_per_plugin`` when it does not name this plugin."""
        samples = getattr(flags, "samples_per_plugin", None)
        if samples is None:
            samples = {}
        if isinstance(samples, dict) and PLUGIN_NAME not in samples:
            flags.samples_per_plugin = {**samples, PLUGIN_NAME: DEFAULT_SAMPLES}

    def load(self, context: Any) -> SaliencyPlugin:
        """The plugin of this TensorBoard."""
        return SaliencyPlugin(context)


class SaliencyPlugin(base_plugin.TBPlugin):
    """The SALIENCY tab: per run and prefix, each probe image's maps as a matrix of methods x logged epochs."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: Any) -> None:
        self._data = context.data_provider
        self._views = _LRU(4096)  # parsed JSON of one step, by (experiment, run, prefix, step, wall time)
        self._reads = _LRU(64)  # one tag's data by step, by (kind, experiment, run, tag, last step, last wall time)

    def get_plugin_apps(self) -> dict[str, WSGIApp]:
        """The routes, relative to ``/data/plugin/saliency``."""
        apps: dict[str, WSGIApp] = {f"/{name}": _static_app(name) for name in _STATIC_TYPES}
        apps.update(
            {
                "/runs": _json_app(self._runs),
                "/probe": _json_app(self._probe),
                "/matrix": _json_app(self._matrix),
                "/scores": _json_app(self._scores),
                "/colormaps": _json_app(lambda _query, _ctx, _eid: {k: v.hex() for k, v in COLORMAPS.items()}),
                "/map": _png_app(self._map),
                "/image": _png_app(self._image),
            }
        )
        return apps

    def is_active(self) -> bool:
        """``False``: TensorBoard first asks its data provider which plugins have data, and that is enough."""
        return False

    def frontend_metadata(self) -> Any:
        """An iframed ES module (``/index.js``) under the tab name *Saliency*."""
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Saliency")

    # ------------------------------------------------------------------ routes

    def _runs(self, query: dict[str, str], ctx: Any, eid: str) -> dict[str, Any]:
        listing = self._data.list_tensors(ctx, experiment_id=eid, plugin_name=PLUGIN_NAME)
        runs: dict[str, list[dict[str, Any]]] = {}
        for run, tags in listing.items():
            for tag, series in tags.items():
                content = parse_content(series.plugin_content)
                if content is None or content["kind"] != KIND_VIEW or tag != view_tag(str(content["prefix"])):
                    continue
                version = content.get("version")
                runs.setdefault(run, []).append(
                    {
                        "prefix": content["prefix"],
                        "last_step": series.max_step,
                        "version": version,
                        "supported": isinstance(version, int) and version <= FORMAT_VERSION,
                    }
                )
        images = self._data.list_blob_sequences(ctx, experiment_id=eid, plugin_name="images")
        legacy = []
        for run, tags in sorted(images.items()):
            known = {p["prefix"] for p in runs.get(run, [])}
            for tag in sorted(tags):
                prefix = tag[: -len(_LEGACY_SUFFIX)]
                if tag.endswith(_LEGACY_SUFFIX) and prefix and prefix not in known:
                    legacy.append({"run": run, "prefix": prefix})
        return {
            "runs": [
                {"run": run, "prefixes": sorted(prefixes, key=lambda p: (p["prefix"] != "saliency", p["prefix"]))}
                for run, prefixes in sorted(runs.items())
            ],
            "legacy": legacy,
            "format_version": FORMAT_VERSION,
        }

    def _probe(self, query: dict[str, str], ctx: Any, eid: str) -> dict[str, Any]:
        run, prefix = _arg(query, "run"), _arg(query, "prefix")
        steps = self._steps(ctx, eid, run, prefix)
        latest = self._latest(ctx, eid, run, prefix, steps)
        methods = self._probe_methods(ctx, eid, run, prefix, steps)
        probes = sorted(self._blob_steps(ctx, eid, run, probe_tag(prefix)))
        epochs = [self._epoch(ctx, eid, run, prefix, s) for s in steps]
        return {
            "run": run,
            "prefix": prefix,
            "steps": [s.step for s in steps],
            "epochs": epochs,
            "methods": methods,
            "probe_steps": probes,
            "num_images": (latest or {}).get("num_images", 0),
            "captions": (latest or {}).get("captions", []),
            "image_size": (latest or {}).get("image_size"),
            "map_size": (latest or {}).get("map_size"),
            "colormap": (latest or {}).get("colormap", "turbo"),
            "alpha": (latest or {}).get("alpha", 0.5),
            "error": None if latest else "no step's data could be read",
        }

    def _matrix(self, query: dict[str, str], ctx: Any, eid: str) -> dict[str, Any]:
        run, prefix, image = _arg(query, "run"), _arg(query, "prefix"), _int(query, "image", minimum=0)
        steps = self._steps(ctx, eid, run, prefix)
        if "steps" in query:
            wanted = {_parse_int(s, "steps") for s in query["steps"].split(",") if s.strip()}
            page = [s for s in steps if s.step in wanted][:MAX_COLUMNS]
            start = steps.index(page[0]) if page else 0
        else:
            count = min(_int(query, "count", minimum=1, default=8), MAX_COLUMNS)
            start = min(_int(query, "start", minimum=0, default=0), max(len(steps) - count, 0))
            page = steps[start : start + count]
        methods = self._probe_methods(ctx, eid, run, prefix, steps)
        tags = {map_tag(prefix, m): m for m in methods}
        stored = self._blob_lengths(ctx, eid, run, [*tags, probe_tag(prefix)])
        probes = sorted(stored.get(probe_tag(prefix), {}))
        columns: list[dict[str, Any]] = []
        cells: dict[str, list[dict[str, Any] | None]] = {m: [] for m in methods}
        for datum in page:
            view = self._view(ctx, eid, run, prefix, datum)
            shown = [p for p in probes if p <= datum.step] or probes[:1]
            columns.append(
                {
                    "step": datum.step,
                    "epoch": (view or {}).get("epoch"),
                    "caption": _caption(view, image),
                    "probe_step": shown[-1] if shown and stored[probe_tag(prefix)][shown[-1]] > image else None,
                    "error": None if view else "this step's data could not be read",
                }
            )
            alarms = _alarms(view, image)
            for tag, method in tags.items():
                length = stored.get(tag, {}).get(datum.step)
                if length is None or length <= image:
                    cells[method].append(None)
                else:
                    cells[method].append({"alarms": [a["text"] for a in alarms if a["method"] == method]})
        return {
            "total": len(steps),
            "start": start,
            "image": image,
            "columns": columns,
            "methods": methods,
            "cells": cells,
        }

    def _scores(self, query: dict[str, str], ctx: Any, eid: str) -> dict[str, Any]:
        run, prefix, image = _arg(query, "run"), _arg(query, "prefix"), _int(query, "image", minimum=0)
        steps = self._steps(ctx, eid, run, prefix)
        scores: dict[str, dict[str, list[float | None]]] = {}
        alarms, others = [], []
        for i, datum in enumerate(steps):
            view = self._view(ctx, eid, run, prefix, datum) or {}
            for method, by_name in (view.get("scores") or {}).items():
                for name, values in (by_name or {}).items():
                    series = scores.setdefault(method, {}).setdefault(name, [None] * len(steps))
                    if isinstance(values, list) and image < len(values) and isinstance(values[image], int | float):
                        series[i] = float(values[image])
            for alarm in view.get("alarms") or []:
                if alarm.get("method") is None:
                    others.append({"step": datum.step, "text": alarm.get("text", "")})
                elif image in (alarm.get("images") or []):
                    alarms.append(
                        {
                            "step": datum.step,
                            "method": alarm["method"],
                            "score": alarm.get("score"),
                            "text": alarm["text"],
                        }
                    )
        return {
            "steps": [s.step for s in steps],
            "epochs": [self._epoch(ctx, eid, run, prefix, s) for s in steps],
            "image": image,
            "scores": scores,
            "higher_is_better": _directions({name for by_name in scores.values() for name in by_name}),
            "alarms": alarms,
            "other_alarms": others,
        }

    def _map(self, query: dict[str, str], ctx: Any, eid: str) -> bytes:
        run, prefix, method = _arg(query, "run"), _arg(query, "prefix"), _arg(query, "method")
        image, step = _int(query, "image", minimum=0), _int(query, "step")
        return self._blob(ctx, eid, run, map_tag(prefix, method), step, image, f"the map of {method} at step {step}")

    def _image(self, query: dict[str, str], ctx: Any, eid: str) -> bytes:
        run, prefix, image = _arg(query, "run"), _arg(query, "prefix"), _int(query, "image", minimum=0)
        tag = probe_tag(prefix)
        steps = sorted(self._blob_steps(ctx, eid, run, tag))
        if not steps:
            raise errors.NotFoundError(f"no probe images stored for {prefix!r} in run {run!r}")
        if "step" in query:
            step = _int(query, "step")
            steps = [s for s in steps if s <= step] or steps[:1]
        return self._blob(ctx, eid, run, tag, steps[-1], image, f"probe image #{image}")

    # ------------------------------------------------------------------ reading

    def _steps(self, ctx: Any, eid: str, run: str, prefix: str) -> list[Any]:
        """The view data of ``prefix`` in ``run``, one per step (the first where a step repeats), by step."""
        data = self._indexed(ctx, eid, run, [view_tag(prefix)], blobs=False).get(view_tag(prefix))
        if not data:
            raise errors.NotFoundError(f"no Saliency-tab data for prefix {prefix!r} in run {run!r}")
        return list(data.values())

    def _indexed(self, ctx: Any, eid: str, run: str, tags: list[str], *, blobs: bool) -> dict[str, dict[int, Any]]:
        """Tag -> step -> its datum (tensors, or blob sequences: references only), for the ``tags`` of ``run``.

        A tag's data is read once and kept until its metadata (last step, last wall time) says it changed, so a
        request for one cell costs a listing and a lookup, not a read of every step.
        """
        kind = "list_blob_sequences" if blobs else "list_tensors"
        listing = getattr(self._data, kind)(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME, run_tag_filter=provider.RunTagFilter([run], tags)
        ).get(run, {})
        out: dict[str, dict[int, Any]] = {}
        missing = []
        for tag in tags:
            series = listing.get(tag)
            if series is not None:
                key = (blobs, eid, run, tag, series.max_step, series.max_wall_time)
                cached = self._reads.get(key)
                if cached is None:
                    missing.append((tag, key))
                else:
                    out[tag] = cached
        if missing:
            read = self._data.read_blob_sequences if blobs else self._data.read_tensors
            found = read(
                ctx,
                experiment_id=eid,
                plugin_name=PLUGIN_NAME,
                downsample=_READ_ALL,
                run_tag_filter=provider.RunTagFilter([run], [tag for tag, _ in missing]),
            ).get(run, {})
            for tag, key in missing:
                by_step: dict[int, Any] = {}
                for datum in sorted(found.get(tag, []), key=lambda d: d.step):  # stable: a repeated step's first
                    by_step.setdefault(datum.step, datum)
                self._reads.put(key, by_step)
                out[tag] = by_step
        return out

    def _view(self, ctx: Any, eid: str, run: str, prefix: str, datum: Any) -> dict[str, Any] | None:
        """The parsed JSON of one step (cached), or ``None`` when it is not readable JSON of a known version."""
        key = (eid, run, prefix, datum.step, datum.wall_time)
        found = self._views.get(key)
        if found is None:
            found = _parse_view(datum.numpy)
            self._views.put(key, found)
        return found or None

    def _epoch(self, ctx: Any, eid: str, run: str, prefix: str, datum: Any) -> int | None:
        epoch = (self._view(ctx, eid, run, prefix, datum) or {}).get("epoch")
        return epoch if isinstance(epoch, int) else None

    def _stored_methods(self, ctx: Any, eid: str, run: str, prefix: str) -> list[str]:
        """Methods with a map tag of ``prefix`` in ``run``, from the metadata only (by name)."""
        listing = self._data.list_blob_sequences(
            ctx, experiment_id=eid, plugin_name=PLUGIN_NAME, run_tag_filter=provider.RunTagFilter(runs=[run])
        )
        methods = []
        for tag, series in sorted(listing.get(run, {}).items()):
            content = parse_content(series.plugin_content) or {}
            method = content.get("method")
            if content.get("kind") == KIND_MAP and content["prefix"] == prefix and tag == map_tag(prefix, str(method)):
                methods.append(str(method))
        return methods

    def _latest(self, ctx: Any, eid: str, run: str, prefix: str, steps: list[Any]) -> dict[str, Any] | None:
        """The view of the last step whose data is readable (``None`` if none is)."""
        for datum in reversed(steps):
            view = self._view(ctx, eid, run, prefix, datum)
            if view:
                return view
        return None

    def _probe_methods(self, ctx: Any, eid: str, run: str, prefix: str, steps: list[Any]) -> list[str]:
        """The methods of the latest readable step, in the monitor's order, then any other with stored maps."""
        latest = self._latest(ctx, eid, run, prefix, steps) or {}
        methods = [str(m) for m in latest.get("methods", [])]
        return methods + [m for m in self._stored_methods(ctx, eid, run, prefix) if m not in methods]

    def _blob_lengths(self, ctx: Any, eid: str, run: str, tags: list[str]) -> dict[str, dict[int, int]]:
        """Tag -> step -> how many blobs are stored there."""
        indexed = self._indexed(ctx, eid, run, tags, blobs=True)
        return {tag: {step: len(d.values) for step, d in by_step.items()} for tag, by_step in indexed.items()}

    def _blob_steps(self, ctx: Any, eid: str, run: str, tag: str) -> set[int]:
        return set(self._blob_lengths(ctx, eid, run, [tag]).get(tag, {}))

    def _blob(self, ctx: Any, eid: str, run: str, tag: str, step: int, index: int, what: str) -> bytes:
        data = self._indexed(ctx, eid, run, [tag], blobs=True).get(tag)
        if not data:
            raise errors.NotFoundError(f"nothing stored under {tag!r} in run {run!r}")
        datum = data.get(step)
        if datum is None:
            raise errors.NotFoundError(f"{what}: no data at step {step} (not logged, or not kept by TensorBoard)")
        if index >= len(datum.values):
            raise errors.NotFoundError(f"{what}: no image #{index} (the step holds {len(datum.values)})")
        blob = self._data.read_blob(ctx, blob_key=datum.values[index].blob_key)
        blob = bytes(blob)
        if not blob.startswith(_PNG):
            raise CorruptDataError(f"{what}: the stored data is not a PNG image ({len(blob)} bytes)")
        return blob


# ---------------------------------------------------------------------- helpers


class _LRU:
    """A small thread-safe least-recently-used cache (TensorBoard serves requests from several threads)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _parse_view(value: Any) -> dict[str, Any]:
    """The JSON of a view tensor's value, or ``{}`` if it is unreadable or of a newer format."""
    raw = value.item() if hasattr(value, "item") else value
    try:
        parsed = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(parsed, dict) or not isinstance(parsed.get("version"), int) or parsed["version"] > FORMAT_VERSION:
        return {}
    return parsed


def _caption(view: dict[str, Any] | None, image: int) -> list[str]:
    captions = (view or {}).get("captions") or []
    return [str(line) for line in captions[image]] if image < len(captions) else []


def _alarms(view: dict[str, Any] | None, image: int) -> list[dict[str, Any]]:
    return [a for a in (view or {}).get("alarms") or [] if image in (a.get("images") or [])]


def _directions(names: set[str]) -> dict[str, bool | None]:
    """Score name -> whether higher is better (the score registry's word; ``None`` when it has none)."""
    from lightning_saliency.metrics.registry import SCORES

    return {name: getattr(SCORES.get(name), "higher_is_better", None) for name in sorted(names)}


def _arg(query: dict[str, str], name: str) -> str:
    if name not in query:
        raise errors.InvalidArgumentError(f"missing parameter {name!r}")
    return query[name]


def _parse_int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidArgumentError(f"{name} must be an integer, got {value!r}") from None


def _int(query: dict[str, str], name: str, *, minimum: int | None = None, default: int | None = None) -> int:
    if name not in query and default is not None:
        return default
    value = _parse_int(_arg(query, name), name)
    if minimum is not None and value < minimum:
        raise errors.InvalidArgumentError(f"{name} must be at least {minimum}, got {value}")
    return value


def _query(environ: Environ) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def _respond(start_response: StartResponse, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache, must-revalidate"),
        ],
    )
    return [body]


Handler = Callable[[dict[str, str], Any, str], Any]


def _json_app(handler: Handler) -> WSGIApp:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        ctx, eid = plugin_util.context(environ), plugin_util.experiment_id(environ)
        body = json.dumps(handler(_query(environ), ctx, eid), separators=(",", ":")).encode()
        return _respond(start_response, body, "application/json")

    return app


def _png_app(handler: Handler) -> WSGIApp:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        ctx, eid = plugin_util.context(environ), plugin_util.experiment_id(environ)
        return _respond(start_response, handler(_query(environ), ctx, eid), "image/png")

    return app


def _static_app(name: str) -> WSGIApp:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return _respond(start_response, (_STATIC / name).read_bytes(), _STATIC_TYPES[name])

    return app
