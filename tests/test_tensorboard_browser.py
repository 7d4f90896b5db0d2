"""TensorBoard as a person sees it: the saliency grid is displayed in the IMAGES dashboard of a real browser.

Starts ``tensorboard`` on a free loopback port and headless Chromium (Debian's ``chromium``; or
``chromium-browser``, or ``$CHROME_BIN``), drives Chromium over the DevTools protocol (``websocket-client``),
and checks that the ``saliency/overview`` ``<img>`` (inside the dashboard's shadow DOM) loaded with the logged
image's size and is laid out on the page. Skipped when no Chromium is installed.

Run as a script to screenshot any log directory, e.g. the README's picture after the demo::

    python tests/test_tensorboard_browser.py lightning_logs docs/images/tensorboard.png
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
from collections.abc import Iterator
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
def tensorboard(logdir: Path, timeout: float = 90.0) -> Iterator[str]:
    """``tensorboard --logdir logdir`` on a free loopback port; yields its URL once it answers; always stopped."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--samples_per_plugin", "images=100"]
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


if __name__ == "__main__":  # python tests/test_tensorboard_browser.py LOGDIR OUT.png
    import tempfile

    chrome = find_chrome()
    if chrome is None:
        sys.exit("needs Chromium: apt-get install chromium (or set CHROME_BIN)")
    with tempfile.TemporaryDirectory() as tmp:
        out = capture(Path(sys.argv[1]), Path(sys.argv[2]), chrome, Path(tmp) / "profile")
    print(f"{sys.argv[2]}: {sum(blob_tag(i[0]) == TAG for i in out['images'])} {TAG} image(s) displayed")
