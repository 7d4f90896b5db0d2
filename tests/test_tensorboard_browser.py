"""TensorBoard as a person sees it: the saliency grid is displayed in the IMAGES dashboard of a real browser.

Starts ``tensorboard`` on a free loopback port and headless Chromium (Debian's ``chromium``; or
``chromium-browser``, or ``$CHROME_BIN``), drives Chromium over the DevTools protocol (``websocket-client``),
and checks that the ``saliency/overview`` ``<img>`` (inside the dashboard's shadow DOM) loaded with the logged
image's size and is laid out on the page. Skipped when no Chromium is installed.

Run as a script to screenshot any log directory, e.g. the README's pictures after the demo::

    python tests/test_tensorboard_browser.py lightning_logs docs/images/tensorboard.png
    python tests/test_tensorboard_browser.py --saliency lightning_logs docs/images/saliency_tab.png 1

The second opens the SALIENCY tab (``#saliency``, the package's TensorBoard plugin) on probe image #1; its tests
check the matrix of methods x logged epochs is drawn, a corrupt map fails only its cell, and logs without the tab's
data get a message.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

TAG = "saliency/overview"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,900",
)
# Every <img> of the page, through shadow roots and same-origin iframes (TensorBoard's dashboards are Polymer
# elements inside the Angular app): [src, naturalWidth, naturalHeight, complete, rendered width, rendered height].
_ALL_IMAGES_JS = """(() => {
  const found = [];
  const visit = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'IMG') {
        const box = el.getBoundingClientRect();
        found.push([el.src, el.naturalWidth, el.naturalHeight, el.complete, box.width, box.height]);
      }
      if (el.shadowRoot) visit(el.shadowRoot);
      if (el.tagName === 'IFRAME' && el.contentDocument) visit(el.contentDocument);
    }
  };
  visit(document);
  return found;
})()"""


def find_chrome() -> str | None:
    """``$CHROME_BIN``, else ``chromium`` or ``chromium-browser`` on the PATH."""
    env = os.environ.get("CHROME_BIN")
    if env and shutil.which(env):
        return shutil.which(env)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _kill_group(proc: subprocess.Popen) -> None:
    """End ``proc`` and its children (it was started in a new session, so its group is its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def tensorboard(logdir: Path, timeout: float = 90.0, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """``tensorboard --logdir logdir`` on a free loopback port; yields its URL once it answers; always stopped."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--samples_per_plugin", "images=100", *extra_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                _get(url + "/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tensorboard did not answer on {url} within {timeout:.0f} s") from None
                time.sleep(0.25)
        yield url
    finally:
        _kill_group(proc)


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, ws_url: str, timeout: float) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # skip events until our answer
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(chrome: str, profile: Path, timeout: float = 60.0) -> Iterator[DevTools]:
    """Headless Chromium with a new empty profile; yields a DevTools client of its page; always stopped."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [chrome, *CHROME_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = None
    try:
        active = profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.monotonic() + timeout
        while not (active.exists() and active.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"{chrome} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{chrome} did not open its DevTools port within {timeout:.0f} s")
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        targets = json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        client = DevTools(page["webSocketDebuggerUrl"], timeout)
        yield client
    finally:
        if client is not None:
            client.close()
        _kill_group(proc)


def blob_tag(src: str) -> str | None:
    """The tag of an ``individualImage?blob_key=...`` URL (the key is url-safe base64 JSON [exp, run, tag, ...])."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(src).query)
    if "/data/plugin/images/individualImage" not in src or "blob_key" not in query:
        return None
    key = query["blob_key"][0]
    return json.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))[2]


def capture(logdir: Path, screenshot: Path, chrome: str, profile: Path, timeout: float = 90.0) -> dict[str, Any]:
    """Open the IMAGES dashboard filtered to ``saliency/overview``, wait until that image is loaded, screenshot it.

    Returns ``{"images": [[src, naturalW, naturalH, complete, w, h], ...], "url": ..., "http": {...}}``, where
    ``http`` holds what TensorBoard's images API returned for the tag and the PNG it serves.
    """
    with tensorboard(logdir, timeout) as url:
        runs = json.loads(_get(f"{url}/data/plugin/images/tags"))
        run = next(r for r, tags in runs.items() if TAG in tags)
        entries = json.loads(
            _get(f"{url}/data/plugin/images/images?" + urllib.parse.urlencode({"run": run, "tag": TAG}))
        )
        png = _get(f"{url}/data/plugin/images/individualImage?{entries[-1]['query']}")
        with chromium(chrome, profile, timeout) as page:
            page.call("Page.enable")
            page.call("Page.navigate", url=f"{url}/#images&tagFilter={urllib.parse.quote(TAG, safe='')}")
            deadline = time.monotonic() + timeout
            images: list[list[Any]] = []
            while time.monotonic() < deadline:
                images = page.evaluate(_ALL_IMAGES_JS) or []
                if any(blob_tag(i[0]) == TAG and i[3] and i[1] > 0 for i in images):
                    break
                time.sleep(0.5)
            time.sleep(0.5)  # let the layout settle for the picture
            shot = page.call("Page.captureScreenshot", format="png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {"images": images, "url": url, "http": {"run": run, "entries": entries, "png": png}}


# ---------------------------------------------------------------------- the test

needs_chrome = pytest.mark.skipif(
    find_chrome() is None,
    reason="needs Chromium (Debian: apt-get install chromium; or set CHROME_BIN): not installed",
)


@needs_chrome
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_overview_grid_is_displayed_in_tensorboard(tmp_path):
    pytest.importorskip("websocket", reason="needs websocket-client (the `test` extra) to drive Chromium")
    from _lightning_models import TinyClassifier, loaders, read_events, trainer
    from PIL import Image

    from lightning_saliency import SaliencyMonitor

    logdir = tmp_path / "logs"
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=4, scores=())
    train, val = loaders(n=32)
    trainer(logdir, callbacks=[monitor], max_epochs=1).fit(TinyClassifier(), train, val)
    logged = read_events(logdir)["images"][TAG][-1]

    result = capture(logdir, tmp_path / "tensorboard.png", find_chrome(), tmp_path / "chrome-profile")

    # 1. TensorBoard's API serves the grid as the PNG that was logged
    assert len(result["http"]["entries"]) == 1
    served = Image.open(io.BytesIO(result["http"]["png"]))
    assert (served.format, served.size) == ("PNG", (logged.width, logged.height))
    # 2. the browser shows it: the dashboard's <img> for the tag loaded (natural size = logged size), laid out
    shown = [i for i in result["images"] if blob_tag(i[0]) == TAG]
    assert shown, f"no <img> for {TAG} in the IMAGES dashboard; images found: {result['images']}"
    _src, natural_w, natural_h, complete, width, height = shown[0]
    assert complete
    assert (natural_w, natural_h) == (logged.width, logged.height)
    assert width > 0
    assert height > 0
    # 3. the screenshot is a real page, not a blank one
    picture = Image.open(tmp_path / "tensorboard.png").convert("RGB")
    assert picture.size[0] >= 800
    assert len(picture.getcolors(maxcolors=1 << 20) or ()) > 50


# ---------------------------------------------------------------------- the SALIENCY tab

# The plugin's document: TensorBoard loads it in an iframe (found through the Angular app's shadow roots, if any).
_SALIENCY_DOCUMENT_JS = """(() => {
  const visit = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'IFRAME' && el.contentDocument && el.contentDocument.querySelector('.app')) {
        return el.contentDocument;
      }
      if (el.shadowRoot) {
        const found = visit(el.shadowRoot);
        if (found) return found;
      }
    }
    return null;
  };
  return visit(document);
})()"""

# What the tab shows: its message, or each cell of the matrix (state, error text, distinct colours of its canvas),
# the column titles, method rows, thumbnails [complete, naturalWidth, naturalHeight], charts and the enlarged cell.
_SALIENCY_STATE_JS = """
  const colours = (canvas) => {
    if (!canvas || !canvas.width) return 0;
    const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 16) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  };
  const message = doc.querySelector('#message');
  const box = doc.querySelector('.lightbox');
  return {
    message: message && !message.hidden ? message.innerText : null,
    run: doc.querySelector('#run') ? doc.querySelector('#run').value : null,
    cells: [...doc.querySelectorAll('.cell')].map((c) => ({
      method: c.dataset.method,
      step: Number(c.dataset.step),
      state: c.dataset.state,
      status: c.querySelector('.status').textContent,
      colours: c.dataset.state === 'ready' ? colours(c.querySelector('canvas')) : 0,
    })),
    columns: [...doc.querySelectorAll('.colhead b')].map((b) => b.textContent),
    rows: [...doc.querySelectorAll('.rowhead .name')].map((n) => n.textContent),
    thumbs: [...doc.querySelectorAll('.thumb img')].map((i) => [i.complete, i.naturalWidth, i.naturalHeight]),
    charts: doc.querySelectorAll('.side svg.chart').length,
    lightbox: box && !box.hidden ? colours(box.querySelector('canvas')) : null,
  };
"""


def in_tab(body: str) -> str:
    """A JavaScript expression running ``body`` (which sees the plugin's ``doc``); ``null`` before the tab exists."""
    return f"(() => {{ const doc = {_SALIENCY_DOCUMENT_JS}; if (!doc) return null; {body} }})()"


def settled(state: dict[str, Any] | None) -> bool:
    """The tab shows a message, or every cell and thumbnail has finished loading (well or not)."""
    if not state:
        return False
    if state["message"]:
        return True
    cells_done = bool(state["cells"]) and all(c["state"] in ("ready", "error") for c in state["cells"])
    return cells_done and bool(state["thumbs"]) and all(t[0] for t in state["thumbs"])


def wait_for(page: DevTools, until: Any, timeout: float) -> dict[str, Any]:
    """The tab's state once ``until(state)`` holds (or, past ``timeout``, the last state seen)."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = page.evaluate(in_tab(_SALIENCY_STATE_JS)) or {}
        if until(state):
            break
        time.sleep(0.25)
    return state


@contextlib.contextmanager
def saliency_tab(logdir: Path, chrome: str, profile: Path, timeout: float = 90.0) -> Iterator[tuple[DevTools, str]]:
    """TensorBoard on ``logdir``, Chromium (1400 x 900) showing ``#saliency``; yields the page and TensorBoard's URL."""
    with tensorboard(logdir, timeout) as url, chromium(chrome, profile, timeout) as page:
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{url}/#saliency")
        wait_for(page, settled, timeout)
        yield page, url


def screenshot_to(page: DevTools, path: Path) -> None:
    time.sleep(0.5)  # let the layout settle for the picture
    shot = page.call("Page.captureScreenshot", format="png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def _select_run(run: str) -> str:
    return in_tab(
        f"const s = doc.querySelector('#run'); s.value = {json.dumps(run)}; s.dispatchEvent(new Event('change'));"
        " return s.value;"
    )


def _click(selector: str) -> str:
    return in_tab(f"doc.querySelector({json.dumps(selector)}).click(); return true;")


@needs_chrome
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_saliency_tab_shows_every_method_and_epoch_of_a_probe_image(tmp_path):
    pytest.importorskip("websocket", reason="needs websocket-client (the `test` extra) to drive Chromium")
    from _lightning_models import read_events
    from PIL import Image
    from test_tensorboard_plugin import write_corrupt_run

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from train_shapes import main

    logs = tmp_path / "logs"
    main(["--epochs", "3", "--train-size", "192", "--val-size", "64", "--logdir", str(logs)])
    write_corrupt_run(logs / "corrupt")
    logged = len(read_events(logs)["images"]["saliency/overview"])  # epochs the monitor logged, as IMAGES sees them
    methods = ["gradient", "smoothgrad", "gradcam", "gradcam++"]  # the demo's
    assert logged == 3

    with saliency_tab(logs, find_chrome(), tmp_path / "profile") as (page, url):
        page.evaluate(_select_run("shapes/version_0"))
        state = wait_for(
            page,
            lambda s: s.get("run") == "shapes/version_0" and settled(s) and len(s["cells"]) > 4 and s["charts"] >= 4,
            60,
        )  # the side's charts are drawn after the cells: wait for them too (the assertion below says what came)
        screenshot_to(page, tmp_path / "saliency.png")
        probe = json.loads(_get(f"{url}/data/plugin/saliency/probe?run=shapes/version_0&prefix=saliency"))

        # 1. the matrix: one row per method, one column per logged epoch, every cell drawn from its images
        assert state["message"] is None
        assert state["rows"] == methods
        assert len(state["columns"]) == logged
        assert len(state["cells"]) == len(methods) * logged
        assert {(c["method"], c["step"]) for c in state["cells"]} == {(m, s) for m in methods for s in probe["steps"]}
        assert all(c["state"] == "ready" for c in state["cells"]), state["cells"]
        assert all(c["colours"] > 20 for c in state["cells"]), state["cells"]  # an overlay, not a flat fill
        # 2. the probe images' thumbnails loaded (the demo's images are 64 x 64), the scores are charted
        assert len(state["thumbs"]) == 6
        assert all(t == [True, 64, 64] for t in state["thumbs"]), state["thumbs"]
        assert state["charts"] >= 4
        # 3. the toggle redraws every cell; a click enlarges one
        page.evaluate(_click('[data-mode="heat"]'))
        heat = wait_for(page, lambda s: settled(s) and all(c["state"] == "ready" for c in s["cells"]), 30)
        assert len(heat["cells"]) == len(methods) * logged
        page.evaluate(_click(".cell"))
        enlarged = wait_for(page, lambda s: (s.get("lightbox") or 0) > 20, 30)
        assert enlarged["lightbox"] > 20
        page.evaluate(_click(".lightbox .close"))

        # 4. a corrupt map fails its own cell only; the page keeps working
        page.evaluate(_select_run("corrupt"))
        wait_for(page, lambda s: s.get("run") == "corrupt" and settled(s), 30)
        page.evaluate(_click('.thumb[data-index="1"]'))
        broken = wait_for(page, lambda s: settled(s) and any(c["state"] == "error" for c in s["cells"]), 30)
        errors = [c for c in broken["cells"] if c["state"] == "error"]
        assert [(c["method"], c["step"]) for c in errors] == [("gradcam++", 2)]
        assert "not a PNG" in errors[0]["status"]
        assert sum(c["state"] == "ready" for c in broken["cells"]) == 3
        page.evaluate(_click('.thumb[data-index="0"]'))
        fine = wait_for(page, lambda s: settled(s) and all(c["state"] == "ready" for c in s["cells"]), 30)
        assert len(fine["cells"]) == 4

    picture = Image.open(tmp_path / "saliency.png").convert("RGB")
    assert picture.size == (1400, 900)
    assert len(picture.getcolors(maxcolors=1 << 20) or ()) > 500


@needs_chrome
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_saliency_tab_explains_logs_without_its_data(tmp_path):
    pytest.importorskip("websocket", reason="needs websocket-client (the `test` extra) to drive Chromium")
    from test_tensorboard_plugin import write_legacy_run

    write_legacy_run(tmp_path / "logs" / "old_run")
    with saliency_tab(tmp_path / "logs", find_chrome(), tmp_path / "profile") as (page, _):
        state = wait_for(page, lambda s: bool(s.get("message")), 30)
    assert "No Saliency data" in state["message"]
    assert "old_run (saliency)" in state["message"]
    assert "saliency/overview" in state["message"]


def capture_saliency(logdir: Path, screenshot: Path, chrome: str, profile: Path, image: int = 0) -> dict[str, Any]:
    """Screenshot the SALIENCY tab (its first run, probe image ``image``) at 1400 x 900 once every cell is drawn."""
    with saliency_tab(logdir, chrome, profile) as (page, _):
        if image:
            page.evaluate(_click(f'.thumb[data-index="{image}"]'))
            time.sleep(0.5)
        state = wait_for(page, settled, 60)
        screenshot_to(page, screenshot)
    return state


if __name__ == "__main__":  # python tests/test_tensorboard_browser.py [--saliency] LOGDIR OUT.png [IMAGE]
    import tempfile

    chrome = find_chrome()
    if chrome is None:
        sys.exit("needs Chromium: apt-get install chromium (or set CHROME_BIN)")
    args = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        if args[0] == "--saliency":
            image = int(args[3]) if len(args) > 3 else 0
            state = capture_saliency(Path(args[1]), Path(args[2]), chrome, Path(tmp) / "profile", image)
            ready = sum(c["state"] == "ready" for c in state["cells"])
            print(f"{args[2]}: SALIENCY tab, {ready} of {len(state['cells'])} cells drawn; {state['message'] or ''}")
        else:
            out = capture(Path(args[0]), Path(args[1]), chrome, Path(tmp) / "profile")
            print(f"{args[1]}: {sum(blob_tag(i[0]) == TAG for i in out['images'])} {TAG} image(s) displayed")
