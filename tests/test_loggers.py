"""Every logger gets the pictures, with the real libraries, offline: W&B, MLflow, Comet, plain files.

Each run trains a tiny model with a TensorBoardLogger beside the logger under test, so the images the other logger
received can be compared with TensorBoard's, pixel for pixel.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _lightning_models import TinyClassifier, loaders, read_events, trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image

from lightning_saliency import Alarm, SaliencyMonitor, SaliencyWarning
from lightning_saliency.monitoring.sinks import mlflow_key

METHODS = ["gradient", "gradcam++"]  # a label MLflow refuses as it is
EPOCHS = 2


def fit(tmp_path: Path, loggers: list[Logger], **kwargs) -> SaliencyMonitor:
    train, val = loaders()
    monitor = SaliencyMonitor(methods=METHODS, num_samples=2, score_steps=2, **kwargs)
    trainer(tmp_path, [monitor], logger=loggers, max_epochs=EPOCHS).fit(TinyClassifier(), train, val)
    return monitor


def tensorboard_pixels(log_dir: Path, tag: str) -> list[np.ndarray]:
    """The images TensorBoard logged for ``tag``, decoded, in step order."""
    events = sorted(read_events(log_dir)["images"][tag], key=lambda e: e.step)
    return [np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")) for e in events]


def png(data: bytes) -> np.ndarray | None:
    """``data`` decoded if it is a PNG file (Comet's archive names its entries without extensions)."""
    return decoded(data) if data.startswith(b"\x89PNG\r\n\x1a\n") else None


def decoded(path: Path | bytes) -> np.ndarray:
    return np.asarray(Image.open(path if isinstance(path, Path) else io.BytesIO(path)).convert("RGB"))


def test_any_other_logger_gets_png_files_and_markdown_equal_to_tensorboards(tmp_path, caplog):
    csv = CSVLogger(str(tmp_path), name="csv")
    with caplog.at_level("INFO"):  # a SaliencyWarning (such as "no TensorBoardLogger") would fail the test
        monitor = fit(tmp_path, [TensorBoardLogger(str(tmp_path), name="tb"), csv], alarms=[])
    root = Path(csv.log_dir)
    assert caplog.text.count("CSVLogger shows no images, so its images are written as PNG files") == 1
    overview = sorted((root / "saliency" / "overview").glob("step_*.png"), key=lambda p: int(p.stem[5:]))
    assert len(overview) == EPOCHS
    for png, tb in zip(overview, tensorboard_pixels(tmp_path / "tb", "saliency/overview"), strict=True):
        assert np.array_equal(decoded(png), tb)  # the same picture, pixel for pixel
    caption = Image.open(overview[-1]).text["Description"]
    assert "input, then gradient, gradcam++" in caption
    assert f"epoch {EPOCHS - 1}" in caption
    assert monitor.last_row_labels[0][0] in caption  # each row's caption, as in the grid
    for tag in ["gradient", "gradcam++", "localisation", "curves", "filmstrip/gradcam++"]:
        assert len(list((root / "saliency" / tag).glob("step_*.png"))) == EPOCHS, tag
    metrics = (root / "metrics.csv").read_text()  # scalars still go to the logger itself
    assert "saliency/time/total" in metrics
    assert "saliency/gradcam++/deletion" in metrics


def test_without_any_logger_the_files_go_under_the_trainers_directory(tmp_path):
    fit(tmp_path, [], scores=())
    files = sorted((tmp_path / "saliency" / "overview").glob("step_*.png"))
    assert len(files) == EPOCHS
    assert decoded(files[0]).shape[2] == 3


def test_weights_and_biases_offline_gets_each_image_with_its_caption_and_the_texts(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="saliency-test")
    captions: dict[str, list[str]] = {}
    real = logger.log_image

    def recording(key, images, step=None, **kwargs):  # W&B's own call, with what we pass to it recorded
        captions.setdefault(key, []).extend(kwargs["caption"])
        return real(key=key, images=images, step=step, **kwargs)

    monkeypatch.setattr(logger, "log_image", recording)
    with pytest.warns(SaliencyWarning, match="alarm"):  # fires at every epoch: a text to log
        fit(tmp_path, [TensorBoardLogger(str(tmp_path), name="tb"), logger], alarms=[Alarm("deletion", above=-1)])
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    overview = sorted(
        (run_dir / "files" / "media" / "images" / "saliency").glob("overview_*.png"),
        key=lambda p: int(p.stem.split("_")[1]),
    )
    assert len(overview) == EPOCHS
    for png, tb in zip(overview, tensorboard_pixels(tmp_path / "tb", "saliency/overview"), strict=True):
        assert np.array_equal(decoded(png), tb)  # the same picture as TensorBoard's, pixel for pixel
    assert len(captions["saliency/overview"]) == EPOCHS
    assert "input, then gradient, gradcam++" in captions["saliency/overview"][0]
    assert "epoch 0" in captions["saliency/overview"][0]
    (table,) = sorted((run_dir / "files" / "media" / "table" / "saliency").glob("alarms_*.table.json"))[-1:]
    assert "deletion of gradient > -1" in json.loads(table.read_text())["data"][0][0]  # the alarm text, a table


def test_mlflow_with_a_local_sqlite_store_gets_the_images_and_texts_as_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(
        experiment_name="saliency",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
    )
    fit(tmp_path, [TensorBoardLogger(str(tmp_path), name="tb"), logger])
    client, run_id = logger.experiment, logger.run_id
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    key = mlflow_key("saliency/gradcam++").replace("/", "~")
    for tag in ("saliency~overview", key):
        pngs = sorted(
            (p for p in images if p.startswith(f"images/{tag}+step+") and p.endswith(".png")),
            key=lambda p: int(re.search(r"\+step\+(\d+)\+", p).group(1)),
        )
        assert len(pngs) == EPOCHS, (tag, images)
    overview = [
        decoded(Path(client.download_artifacts(run_id, p, str(tmp_path / "dl"))))
        for p in sorted(
            (p for p in images if p.startswith("images/saliency~overview+step+") and p.endswith(".png")),
            key=lambda p: int(re.search(r"\+step\+(\d+)\+", p).group(1)),
        )
    ]
    for mine, tb in zip(overview, tensorboard_pixels(tmp_path / "tb", "saliency/overview"), strict=True):
        assert np.array_equal(mine, tb)
    run = client.get_run(run_id)
    assert mlflow_key("saliency/gradcam++/deletion") in run.data.metrics  # escaped, not merged into gradcam's
    assert "saliency/gradient/deletion" in run.data.metrics


def test_comet_offline_archive_holds_the_images_and_a_disabled_experiment_is_named(tmp_path, monkeypatch):
    pytest.importorskip("comet_ml")
    from lightning.pytorch.loggers import CometLogger

    monkeypatch.setenv("COMET_START_ONLINE", "0")  # offline; CometLogger(online=False) disables the experiment
    monkeypatch.setenv("COMET_DISABLE_AUTO_LOGGING", "1")
    logger = CometLogger(offline_directory=str(tmp_path / "comet"), project="saliency-test")
    fit(tmp_path, [TensorBoardLogger(str(tmp_path), name="tb"), logger], scores=())
    logger.experiment.end()  # Lightning only flushes at the end of fit; the archive is written here
    (archive,) = (tmp_path / "comet").glob("*.zip")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        messages = "\n".join(z.read(n).decode("utf-8", "replace") for n in names if n.endswith(".json"))
        pictures = [picture for n in names if not n.endswith(".json") and (picture := png(z.read(n))) is not None]
    assert "saliency/overview" in messages
    assert "input, then gradient, gradcam++" in messages  # the caption, in the image's metadata
    tb = tensorboard_pixels(tmp_path / "tb", "saliency/overview")
    assert any(p.shape == tb[-1].shape and np.array_equal(p, tb[-1]) for p in pictures)

    disabled = CometLogger(online=False, offline_directory=str(tmp_path / "off"), project="saliency-test")
    with pytest.warns(SaliencyWarning, match=r"experiment is disabled.*COMET_START_ONLINE=0"):
        fit(tmp_path / "disabled", [disabled], scores=())


class Exploding(CSVLogger):
    """A logger that fails on the monitor's calls (Lightning's own metrics still go through)."""

    def log_metrics(self, metrics, step=None) -> None:
        if any(k.startswith("saliency") for k in metrics):
            raise RuntimeError("the logging service is down")
        super().log_metrics(metrics, step)


def test_a_failing_logger_warns_once_naming_it_and_the_others_get_everything(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient"], num_samples=2, scores=())
    loggers = [Exploding(str(tmp_path), name="x"), TensorBoardLogger(str(tmp_path), name="tb")]
    tr = trainer(tmp_path, [monitor], logger=loggers, max_epochs=2)
    match = r"could not write to Exploding at step \d+: RuntimeError: the logging service is down"
    with pytest.warns(SaliencyWarning, match=match) as rec:
        tr.fit(TinyClassifier(), train, val)
    assert sum("could not write to Exploding" in str(w.message) for w in rec) == 1  # once, not every epoch
    assert tr.current_epoch == 2  # training went on
    assert len(read_events(tmp_path / "tb")["images"]["saliency/overview"]) == 2  # the others got everything
    assert torch.is_tensor(monitor.last_maps["gradient"])
