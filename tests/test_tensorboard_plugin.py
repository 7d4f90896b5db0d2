"""The SALIENCY tab: what ``write_probe_view`` stores, and the plugin's routes through TensorBoard's own application.

The writer is checked on the event files it writes (read back with TensorBoard's loader). The routes are called on
``TensorBoardWSGIApp`` built the way ``tensorboard`` builds it (flags from ``program.TensorBoard.configure``, so the
loader's ``fix_flags`` runs; the Python data ingester, loaded once), through a small WSGI client (stdlib
``wsgiref``: werkzeug is not a declared dependency), on the event files of a real ``Trainer`` run. One test runs the
``tensorboard`` command itself with the Rust data server (``--load_fast=true``).
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
import wsgiref.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.compat.proto import summary_pb2

from lightning_saliency._colormaps import COLORMAPS
from lightning_saliency.monitoring.sinks import ProbeView
from lightning_saliency.tensorboard import metadata
from lightning_saliency.tensorboard.plugin import DEFAULT_SAMPLES, SaliencyPlugin, SaliencyPluginLoader
from lightning_saliency.tensorboard.summary import parse_alarm, probe_view_summary, write_probe_view

PLUGIN = "/data/plugin/saliency"


# ---------------------------------------------------------------------- helpers


def make_view(
    prefix: str = "saliency",
    b: int = 3,
    size: tuple[int, int] = (16, 12),
    seed: int = 0,
    methods: tuple[str, ...] = ("gradient", "gradcam++"),
    alarms: tuple[str, ...] = (),
) -> ProbeView:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, *size, generator=g)
    maps = {m: torch.rand(b, 1, *size, generator=g) for m in methods}
    scores = {m: {"deletion": [0.25 + i / 10 for i in range(b)], "map_stability": [None] * b} for m in methods}
    predicted = ["cross"] + ["disc"] * (b - 1)  # image 0 is misclassified
    captions = [[f"#{i} (index {10 + i})", "true: disc", f"pred: {predicted[i]} (0.9{i})"] for i in range(b)]
    return ProbeView(prefix, images, maps, captions, scores, list(alarms), "viridis", 0.4)


def events(logdir: Path) -> list[Any]:
    """Every event with a summary under ``logdir``, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        out += [e for e in EventFileLoader(str(path)).Load() if e.HasField("summary")]
    return out


def saliency_values(event: Any) -> dict[str, Any]:
    return {v.tag: v for v in event.summary.value if v.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME}


def view_content(summary: Any) -> dict[str, Any]:
    """The JSON of a summary's view value."""
    return json.loads(next(v for v in summary.value if v.tag.endswith("/_tab/view")).tensor.string_val[0])


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def quantised(x: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] as the writer stores it: uint8, ``[H, W]`` or ``[H, W, 3]``."""
    q = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return q[0].numpy() if q.shape[0] == 1 else q.permute(1, 2, 0).numpy()


class Client:
    """Calls a WSGI application in-process, as an HTTP server would (``wsgiref`` defaults)."""

    def __init__(self, app: Any, reload: Any = None) -> None:
        self.app = app
        self.reload = reload  # TensorBoard's own reload of the event files

    def get(self, path: str, **params: Any) -> tuple[int, dict[str, str], bytes]:
        path, _, query = path.partition("?")
        query = query or urllib.parse.urlencode(params)
        environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "GET"}
        wsgiref.util.setup_testing_defaults(environ)
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

        body = b"".join(self.app(environ, start_response))
        return answer["status"], answer["headers"], body

    def json(self, path: str, **params: Any) -> Any:
        status, headers, body = self.get(path, **params)
        assert status == 200, (path, params, status, body[:500])
        assert headers["Content-Type"].startswith("application/json")
        return json.loads(body)

    def png(self, path: str, **params: Any) -> Image.Image:
        status, headers, body = self.get(path, **params)
        assert status == 200, (path, params, status, body[:500])
        assert headers["Content-Type"] == "image/png"
        return png(body)


def tensorboard_app(logdir: Path, **flags: Any) -> Client:
    """TensorBoard's WSGI application over ``logdir`` with every installed plugin (entry points included)."""
    from tensorboard import default, program
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_ingester

    tb = program.TensorBoard(plugins=default.get_plugins())
    tb.configure(logdir=str(logdir), load_fast="false", reload_interval=0, reload_task="blocking", **flags)
    ingester = data_ingester.LocalDataIngester(tb.flags)
    ingester.start()  # blocking: loads the event files once
    multiplexer = ingester.deprecated_multiplexer
    app = application.TensorBoardWSGIApp(
        tb.flags, tb.plugin_loaders, ingester.data_provider, tb.assets_zip_provider, multiplexer
    )

    def reload() -> None:
        multiplexer.AddRunsFromDirectory(str(logdir))
        multiplexer.Reload()

    return Client(app, reload)


def write_views(logdir: Path, views: list[tuple[ProbeView, int]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for view, step in views:
        write_probe_view(writer, view, step)
    writer.close()


# ---------------------------------------------------------------------- the writer


def test_each_step_is_one_event_with_its_json_and_maps_and_the_probe_only_at_the_first(tmp_path):
    views = [(make_view(), step) for step in (5, 10, 15)]
    write_views(tmp_path, views)

    found = [(e.step, saliency_values(e)) for e in events(tmp_path)]
    assert [step for step, _ in found] == [5, 10, 15]
    first = {"saliency/_tab/view", "saliency/_tab/map/gradient", "saliency/_tab/map/gradcam++", "saliency/_tab/probe"}
    assert set(found[0][1]) == first
    assert set(found[1][1]) == set(found[2][1]) == first - {"saliency/_tab/probe"}
    values = found[0][1]
    view_value = values["saliency/_tab/view"]
    assert view_value.metadata.data_class == summary_pb2.DATA_CLASS_TENSOR
    assert metadata.parse_content(view_value.metadata.plugin_data.content) == {
        "version": 1,
        "kind": "view",
        "prefix": "saliency",
    }
    content = metadata.parse_content(values["saliency/_tab/map/gradcam++"].metadata.plugin_data.content)
    assert content == {"version": 1, "kind": "map", "prefix": "saliency", "method": "gradcam++"}
    for tag in ("saliency/_tab/map/gradcam++", "saliency/_tab/probe"):
        assert values[tag].metadata.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
        assert [d.size for d in values[tag].tensor.tensor_shape.dim] == [3]  # one PNG per probe image

    view = views[0][0]
    for i, blob in enumerate(values["saliency/_tab/map/gradcam++"].tensor.string_val):
        stored = png(blob)
        assert (stored.mode, stored.size) == ("L", (12, 16))  # small maps are stored as they are
        np.testing.assert_array_equal(np.asarray(stored), quantised(view.maps["gradcam++"][i]))
    for i, blob in enumerate(values["saliency/_tab/probe"].tensor.string_val):
        stored = png(blob)
        assert stored.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(stored), quantised(view.images[i]))

    content = json.loads(view_value.tensor.string_val[0])
    assert content["methods"] == ["gradient", "gradcam++"]
    assert content["captions"] == view.captions
    assert content["scores"]["gradient"]["deletion"] == pytest.approx([0.25, 0.35, 0.45])
    assert content["scores"]["gradient"]["map_stability"] == [None, None, None]
    assert (content["colormap"], content["alpha"], content["num_images"]) == ("viridis", 0.4, 3)
    assert (content["image_size"], content["map_size"], content["probe_size"]) == ([16, 12], [16, 12], [16, 12])


def test_the_probe_is_written_again_when_it_changes_and_once_per_prefix(tmp_path):
    views = [
        (make_view(seed=0), 1),
        (make_view("saliency_test", seed=0), 1),
        (make_view(seed=0), 2),
        (make_view(seed=1), 3),  # other images under the same prefix (e.g. another probe after resuming)
        (make_view(seed=1), 4),
    ]
    write_views(tmp_path, views)
    with_probe = [(e.step, tag) for e in events(tmp_path) for tag in saliency_values(e) if tag.endswith("/probe")]
    assert with_probe == [(1, "saliency/_tab/probe"), (1, "saliency_test/_tab/probe"), (3, "saliency/_tab/probe")]


def test_large_maps_and_images_are_downsampled_keeping_their_aspect(tmp_path):
    view = make_view(b=2, size=(300, 150))
    view.maps["gradient"].fill_(0.5)
    summary = probe_view_summary(view)
    values = {v.tag: v for v in summary.value}
    map_png = png(values["saliency/_tab/map/gradient"].tensor.string_val[0])
    probe_png = png(values["saliency/_tab/probe"].tensor.string_val[0])
    assert map_png.size == (64, 128)  # (W, H): the longer side at most 128
    assert probe_png.size == (128, 256)  # the longer side at most 256
    assert set(np.unique(np.asarray(map_png)).tolist()) == {128}  # round(0.5 * 255)
    content = json.loads(values["saliency/_tab/view"].tensor.string_val[0])
    assert (content["image_size"], content["map_size"], content["probe_size"]) == ([300, 150], [128, 64], [256, 128])


def test_non_finite_scores_become_null_and_the_inputs_are_left_alone():
    view = make_view(b=2)
    view.scores["gradient"]["deletion"] = [float("nan"), float("inf")]
    before = {m: x.clone() for m, x in view.maps.items()}, view.images.clone()
    content = view_content(probe_view_summary(view))
    assert content["scores"]["gradient"]["deletion"] == [None, None]
    assert all(torch.equal(before[0][m], view.maps[m]) for m in view.maps)
    assert torch.equal(before[1], view.images)


def test_half_precision_views_are_written_like_float_ones():
    view = make_view(b=2)
    half = ProbeView(
        view.prefix,
        view.images.half(),
        {m: x.bfloat16() for m, x in view.maps.items()},
        view.captions,
        view.scores,
        view.alarms,
        view.colormap,
        view.alpha,
    )
    values = {v.tag: v for v in probe_view_summary(half).value}
    stored = png(values["saliency/_tab/map/gradient"].tensor.string_val[0])
    expected = quantised(half.maps["gradient"][0].float())
    assert stored.mode == "L"
    np.testing.assert_array_equal(np.asarray(stored), expected)


def test_alarm_lines_of_the_monitor_are_parsed_into_method_score_and_images():
    from lightning_saliency import Alarm
    from lightning_saliency.monitoring.summary import alarm_lines

    scores = {"gradcam++": {"energy_pointing_game": torch.tensor([0.1, 0.5, 0.2])}}
    lines = alarm_lines([Alarm("energy_pointing_game", below=0.25)], ["gradcam++"], scores, 7, [40, 41, 42])
    assert len(lines) == 1
    parsed = parse_alarm(lines[0], ["gradcam++"])
    assert parsed == {
        "text": lines[0],
        "epoch": 7,
        "method": "gradcam++",
        "score": "energy_pointing_game",
        "images": [0, 2],
    }
    assert parse_alarm("something else happened", ["gradcam++"])["method"] is None
    view = make_view(methods=("gradcam++",), alarms=(lines[0],))
    content = view_content(probe_view_summary(view))
    assert content["epoch"] == 7  # ProbeView has no epoch; an alarm line says it
    assert content["alarms"] == [{k: v for k, v in parsed.items() if k != "epoch"}]


# ---------------------------------------------------------------------- discovery


def test_the_plugin_is_found_through_the_tensorboard_plugins_entry_point():
    from tensorboard import default

    found = {e.name: e for e in importlib.metadata.entry_points(group="tensorboard_plugins")}
    assert "saliency" in found, f"entry points: {sorted(found)}"
    assert found["saliency"].load() is SaliencyPluginLoader
    assert SaliencyPluginLoader in default.get_dynamic_plugins()
    assert SaliencyPlugin.plugin_name == "saliency"


def test_the_loader_keeps_many_steps_unless_told_otherwise():
    from types import SimpleNamespace

    flags = SimpleNamespace(samples_per_plugin={"images": 100})
    SaliencyPluginLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 100, "saliency": DEFAULT_SAMPLES}
    flags = SimpleNamespace(samples_per_plugin={"saliency": 5})
    SaliencyPluginLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"saliency": 5}


def test_the_static_files_ship_in_the_package_and_fetch_nothing_from_elsewhere():
    import tomllib

    static = Path(metadata.__file__).parent / "static"
    assert sorted(p.name for p in static.iterdir()) == ["index.js", "style.css"]
    script = (static / "index.js").read_text()
    assert "export async function render()" in script
    for text in (script, (static / "style.css").read_text()):
        urls = set(re.findall(r"https?://[^\s'\"`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
        assert "@import" not in text
    root = Path(__file__).resolve().parents[1]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"tensorboard/static/*.js", "tensorboard/static/*.css"} <= set(package_data["lightning_saliency"])


# ---------------------------------------------------------------------- routes on a real Trainer run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch ``fit`` and a ``test`` of TinyClassifier, 2 methods, an alarm that fires on every image of gradcam;
    every ``(view, step)`` the sink handed to ``write_probe_view``."""
    from _lightning_models import TinyClassifier, loaders, trainer

    import lightning_saliency.monitoring.sinks as sinks
    from lightning_saliency import Alarm, SaliencyMonitor

    logdir = tmp_path_factory.mktemp("trained")
    seen: list[tuple[ProbeView, int]] = []

    def spy(writer: Any, view: ProbeView, step: int) -> None:
        seen.append((view, step))
        write_probe_view(writer, view, step)

    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam"],
        num_samples=4,
        scores=("deletion", "map_stability"),
        alarms=[Alarm("deletion", above=0.0, methods=["gradcam"])],
    )
    train, val = loaders(n=32)
    model = TinyClassifier()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setattr(sinks, "write_probe_view", spy)
        tr = trainer(logdir, callbacks=[monitor], max_epochs=3)
        tr.fit(model, train, val)
        tr.test(model, dataloaders=val)
    assert any("SaliencyMonitor alarm" in str(w.message) for w in caught)
    return {"logdir": logdir, "seen": seen, "app": tensorboard_app(logdir), "run": "tb/version_0"}


def views_of(trained: dict, prefix: str) -> list[tuple[ProbeView, int]]:
    return [(v, s) for v, s in trained["seen"] if v.prefix == prefix]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_plugins_listing_shows_saliency_active_with_data_and_inactive_without(trained, tmp_path):
    listing = trained["app"].json("/data/plugins_listing")
    entry = listing["saliency"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Saliency"
    assert entry["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{PLUGIN}/index.js"}

    empty = tmp_path / "empty"
    empty.mkdir()
    assert tensorboard_app(empty).json("/data/plugins_listing")["saliency"]["enabled"] is False
    legacy = tmp_path / "legacy"
    write_legacy_run(legacy / "old")
    assert tensorboard_app(legacy).json("/data/plugins_listing")["saliency"]["enabled"] is False


def write_legacy_run(logdir: Path) -> None:
    """What the monitor wrote before the tab: the grids only (IMAGES), no saliency-plugin summaries."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(logdir))
    writer.add_image("saliency/overview", torch.rand(3, 20, 30), global_step=4)
    writer.add_scalar("saliency/gradcam/deletion", 0.3, global_step=4)
    writer.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_entry_page_module_and_stylesheet_are_served(trained):
    app = trained["app"]
    status, headers, body = app.get("/data/plugin_entry.html", name="saliency")
    assert status == 200
    assert b'import("./index.js")' in body
    status, headers, body = app.get(f"{PLUGIN}/index.js")
    assert (status, headers["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    assert b"export async function render()" in body
    status, headers, _ = app.get(f"{PLUGIN}/style.css")
    assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_runs_lists_the_run_with_both_prefixes(trained):
    answer = trained["app"].json(f"{PLUGIN}/runs")
    assert answer["legacy"] == []
    assert [r["run"] for r in answer["runs"]] == [trained["run"]]
    prefixes = answer["runs"][0]["prefixes"]
    assert [p["prefix"] for p in prefixes] == ["saliency", "saliency_test"]
    assert all(p["supported"] and p["version"] == 1 for p in prefixes)
    assert prefixes[0]["last_step"] == views_of(trained, "saliency")[-1][1]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_probe_lists_every_logged_step_and_the_latest_captions(trained):
    views = views_of(trained, "saliency")
    assert len(views) == 3
    answer = trained["app"].json(f"{PLUGIN}/probe", run=trained["run"], prefix="saliency")
    assert answer["steps"] == [s for _, s in views]
    assert answer["methods"] == ["gradient", "gradcam"]
    assert answer["probe_steps"] == [views[0][1]]  # written once
    assert answer["num_images"] == 4
    assert answer["captions"] == views[-1][0].captions
    assert answer["epochs"] == [0, 1, 2]  # from the alarm lines, which fire at every epoch here
    assert (answer["colormap"], answer["alpha"], answer["image_size"]) == ("turbo", 0.5, [16, 16])
    test = trained["app"].json(f"{PLUGIN}/probe", run=trained["run"], prefix="saliency_test")
    assert test["steps"] == [s for _, s in views_of(trained, "saliency_test")]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_matrix_returns_one_page_of_columns_with_the_alarms_of_each_cell(trained):
    app, run = trained["app"], trained["run"]
    views = views_of(trained, "saliency")
    steps = [s for _, s in views]
    page = app.json(f"{PLUGIN}/matrix", run=run, prefix="saliency", image=2, start=1, count=2)
    assert (page["total"], page["start"], page["methods"]) == (3, 1, ["gradient", "gradcam"])
    assert [c["step"] for c in page["columns"]] == steps[1:3]
    assert [c["caption"] for c in page["columns"]] == [v.captions[2] for v, _ in views[1:3]]
    assert all(c["probe_step"] == steps[0] for c in page["columns"])
    assert page["cells"]["gradient"] == [{"alarms": []}, {"alarms": []}]
    for (view, _), cell in zip(views[1:3], page["cells"]["gradcam"], strict=True):
        assert cell["alarms"] == [line for line in view.alarms if "#2 " in line] != []
    last = app.json(f"{PLUGIN}/matrix", run=run, prefix="saliency", image=0, start=99, count=2)
    assert [c["step"] for c in last["columns"]] == steps[1:]  # a start past the end shows the last page
    chosen = app.json(f"{PLUGIN}/matrix", run=run, prefix="saliency", image=0, steps=f"{steps[0]},{steps[2]},12345")
    assert [c["step"] for c in chosen["columns"]] == [steps[0], steps[2]]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_map_and_image_serve_the_pixels_that_were_written(trained):
    app, run = trained["app"], trained["run"]
    for prefix in ("saliency", "saliency_test"):
        for view, step in views_of(trained, prefix):
            for method, maps in view.maps.items():
                for i in range(maps.shape[0]):
                    served = app.png(f"{PLUGIN}/map", run=run, prefix=prefix, method=method, image=i, step=step)
                    assert served.mode == "L"
                    np.testing.assert_array_equal(np.asarray(served), quantised(maps[i].cpu()))
    view, step = views_of(trained, "saliency")[-1]
    for i in range(4):
        served = app.png(f"{PLUGIN}/image", run=run, prefix="saliency", image=i, step=step)
        assert served.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(served), quantised(view.images[i]))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_scores_follow_one_image_across_epochs_with_its_alarms(trained):
    from _lightning_models import read_events

    views = views_of(trained, "saliency")
    answer = trained["app"].json(f"{PLUGIN}/scores", run=trained["run"], prefix="saliency", image=1)
    assert answer["steps"] == [s for _, s in views]
    for method in ("gradient", "gradcam"):
        expected = [view.scores[method]["deletion"][1] for view, _ in views]
        assert answer["scores"][method]["deletion"] == pytest.approx(expected, abs=1e-5)
        assert answer["scores"][method]["map_stability"][0] is None  # no previous epoch at the first
    assert answer["higher_is_better"] == {"deletion": False, "map_stability": None}
    # the per-image values average to the logged scalar
    scalars = read_events(trained["logdir"])["scalars"]["saliency/gradcam/deletion"]
    per_image = [
        trained["app"].json(f"{PLUGIN}/scores", run=trained["run"], prefix="saliency", image=i)["scores"]["gradcam"]
        for i in range(4)
    ]
    assert float(np.mean([s["deletion"][-1] for s in per_image])) == pytest.approx(scalars[2].value, abs=1e-4)
    assert [(a["step"], a["method"], a["score"]) for a in answer["alarms"]] == [
        (s, "gradcam", "deletion") for _, s in views
    ]
    assert answer["other_alarms"] == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_colormaps_are_the_packages_lookup_tables(trained):
    answer = trained["app"].json(f"{PLUGIN}/colormaps")
    assert {name: bytes.fromhex(hexed) for name, hexed in answer.items()} == COLORMAPS


_RUN = {"run": "RUN", "prefix": "saliency"}  # RUN: the trained run


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("route", "params", "status", "says"),
    [
        ("probe", {"prefix": "saliency"}, 400, "missing parameter 'run'"),
        ("matrix", {**_RUN, "image": "one"}, 400, "image must be an integer"),
        ("matrix", {**_RUN, "image": "-1"}, 400, "image must be at least 0"),
        ("probe", {**_RUN, "prefix": "nope"}, 404, "no Saliency-tab data for prefix 'nope'"),
        ("probe", {**_RUN, "run": "other"}, 404, "in run 'other'"),
        ("map", {**_RUN, "method": "gradient", "image": 0, "step": 123}, 404, "no data at step 123"),
        ("map", {**_RUN, "method": "scorecam", "image": 0, "step": 2}, 404, "nothing stored"),
        ("image", {**_RUN, "image": 9}, 404, "no image #9"),
    ],
)
def test_bad_requests_get_a_reason(trained, route, params, status, says):
    params = {k: trained["run"] if v == "RUN" else v for k, v in params.items()}
    got, headers, body = trained["app"].get(f"{PLUGIN}/{route}", **params)
    assert got == status
    assert headers["Content-Type"].startswith("text/plain")
    assert says in body.decode()


# ---------------------------------------------------------------------- data the tab cannot show


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_logs_without_tab_data_are_listed_as_such(tmp_path):
    write_legacy_run(tmp_path / "old")
    write_views(tmp_path / "new", [(make_view(), 1)])
    answer = tensorboard_app(tmp_path).json(f"{PLUGIN}/runs")
    assert [r["run"] for r in answer["runs"]] == ["new"]
    assert answer["legacy"] == [{"run": "old", "prefix": "saliency"}]
    only_old = tensorboard_app(tmp_path / "old").json(f"{PLUGIN}/runs")
    assert only_old["runs"] == []
    assert only_old["legacy"] == [{"run": ".", "prefix": "saliency"}]


def write_corrupt_run(logdir: Path) -> ProbeView:
    """Two steps; at the second, gradcam++'s map of image 1 is not a PNG and the JSON is cut short."""
    from torch.utils.tensorboard import SummaryWriter

    view = make_view()
    writer = SummaryWriter(str(logdir))
    write_probe_view(writer, view, 1)
    summary = probe_view_summary(view, with_probe=False)
    for value in summary.value:
        if value.tag.endswith("/map/gradcam++"):
            value.tensor.string_val[1] = b"definitely not a PNG"
        if value.tag.endswith("/view"):
            value.tensor.string_val[0] = value.tensor.string_val[0][:40]
    writer._get_file_writer().add_summary(summary, 2)
    writer.close()
    return view


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_corrupt_payload_fails_only_its_own_cell(tmp_path):
    view = write_corrupt_run(tmp_path / "corrupt")
    app = tensorboard_app(tmp_path)
    query = {"run": "corrupt", "prefix": "saliency"}
    status, _, body = app.get(f"{PLUGIN}/map", **query, method="gradcam++", image=1, step=2)
    assert status == 500
    assert "not a PNG image" in body.decode()
    for method, image, step in [("gradcam++", 0, 2), ("gradcam++", 1, 1), ("gradient", 1, 2)]:
        assert app.png(f"{PLUGIN}/map", **query, method=method, image=image, step=step).mode == "L"
    probe = app.json(f"{PLUGIN}/probe", **query)
    assert probe["steps"] == [1, 2]
    assert (probe["captions"], probe["methods"]) == (view.captions, ["gradient", "gradcam++"])  # the readable step's
    matrix = app.json(f"{PLUGIN}/matrix", **query, image=1)
    assert [c["error"] is None for c in matrix["columns"]] == [True, False]  # the cut JSON, said so
    assert matrix["cells"]["gradcam++"] == [{"alarms": []}, {"alarms": []}]  # the map exists; the page decodes it
    scores = app.json(f"{PLUGIN}/scores", **query, image=1)
    assert scores["scores"]["gradient"]["deletion"] == [pytest.approx(0.35), None]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_many_steps_are_kept_and_paged(tmp_path):
    write_views(tmp_path / "long", [(make_view(), step) for step in range(25)])  # TensorBoard keeps 10 by default
    app = tensorboard_app(tmp_path)
    assert app.json(f"{PLUGIN}/probe", run="long", prefix="saliency")["steps"] == list(range(25))
    page = app.json(f"{PLUGIN}/matrix", run="long", prefix="saliency", image=0, start=20, count=8)
    assert [c["step"] for c in page["columns"]] == list(range(17, 25))  # the last full page
    assert len(page["cells"]["gradient"]) == 8


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_steps_logged_after_a_first_look_are_seen_after_tensorboard_reloads(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    view, later = make_view(), make_view(seed=5)
    writer = SummaryWriter(str(tmp_path / "growing"))  # a run still training while TensorBoard reads it
    write_probe_view(writer, view, 0)
    write_probe_view(writer, view, 1)
    writer.flush()
    app = tensorboard_app(tmp_path)
    query = {"run": "growing", "prefix": "saliency"}
    assert app.json(f"{PLUGIN}/probe", **query)["steps"] == [0, 1]
    assert app.get(f"{PLUGIN}/map", **query, method="gradient", image=0, step=2)[0] == 404
    write_probe_view(writer, later, 2)
    writer.close()
    app.reload()
    assert app.json(f"{PLUGIN}/probe", **query)["steps"] == [0, 1, 2]
    served = app.png(f"{PLUGIN}/map", **query, method="gradient", image=0, step=2)
    np.testing.assert_array_equal(np.asarray(served), quantised(later.maps["gradient"][0]))
    assert app.json(f"{PLUGIN}/matrix", **query, image=0)["columns"][-1]["step"] == 2


# ---------------------------------------------------------------------- the tensorboard command (Rust data server)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_tensorboard_command_serves_the_tab_with_its_rust_data_server(tmp_path):
    from test_tensorboard_browser import tensorboard

    view = make_view()
    write_views(tmp_path / "long", [(view, step) for step in range(15)])

    def get(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    with tensorboard(tmp_path, extra_args=["--load_fast=true"]) as url:
        listing = json.loads(get(f"{url}/data/plugins_listing"))
        assert listing["saliency"]["enabled"] is True
        probe = json.loads(get(f"{url}{PLUGIN}/probe?run=long&prefix=saliency"))
        assert probe["steps"] == list(range(15))  # fix_flags: more than the 10 blob sequences kept by default
        query = urllib.parse.urlencode({"run": "long", "prefix": "saliency", "method": "gradcam++", "image": 2})
        served = png(get(f"{url}{PLUGIN}/map?{query}&step=14"))
        np.testing.assert_array_equal(np.asarray(served), quantised(view.maps["gradcam++"][2]))
        with pytest.raises(urllib.error.HTTPError) as error:
            get(f"{url}{PLUGIN}/map?{query}&step=99")
        assert error.value.code == 404
