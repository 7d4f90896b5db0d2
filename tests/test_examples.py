"""The README's demo runs end to end (shortened) and writes saliency images to TensorBoard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _lightning_models import read_events

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shapes_demo_runs_and_logs_saliency(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import train_shapes

    log_dir = train_shapes.main(["--epochs", "1", "--train-size", "64", "--val-size", "32", "--logdir", str(tmp_path)])
    # the closing message gives the README's TensorBoard command
    assert f"tensorboard --logdir {tmp_path} --samples_per_plugin images=100" in capsys.readouterr().out
    events = read_events(log_dir)
    assert {"saliency/overview", "saliency/gradcam", "saliency/smoothgrad", "saliency/curves"} <= set(events["images"])
    # the shapes dataset yields dict samples with a "box", so the probe carries boxes and localisation is scored
    assert 0 <= events["scalars"]["saliency/gradcam/energy_pointing_game"][0].value <= 1
    assert "saliency/gradcam/pointing_game" in events["scalars"]
    sys.modules.pop("train_shapes", None)


def test_shapes_boxes_contain_the_object():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from shapes import make_shapes
    finally:
        sys.path.remove(str(EXAMPLES))
    images, labels, boxes = make_shapes(30, size=64, seed=3)
    assert images.shape == (30, 3, 64, 64)
    assert images.min() >= 0
    assert images.max() <= 1
    assert labels.bincount().tolist() == [10, 10, 10]
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    assert boxes.min() >= 0
    assert boxes.max() <= 64


def test_shapes_marker_gives_the_class_away_only_when_asked():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from shapes import MARKER_COLOURS, MARKER_SIZE, make_shapes
    finally:
        sys.path.remove(str(EXAMPLES))
    colours = torch.tensor(MARKER_COLOURS)

    def marker_class(images):
        patch = images[:, :, 2:MARKER_SIZE, 2:MARKER_SIZE].mean((2, 3))  # [n,3] (noise averaged out)
        return torch.cdist(patch, colours).argmin(1)

    images, labels, boxes = make_shapes(60, seed=1, marker=1.0)
    assert torch.equal(marker_class(images), labels)
    assert (boxes[:, :2] >= MARKER_SIZE + 2 - 1).any(1).all()  # objects stay clear of the marker corner
    images, labels, _ = make_shapes(300, seed=2, marker=0.0)
    agreement = (marker_class(images) == labels).float().mean().item()
    assert 0.2 < agreement < 0.47  # random colours: about 1/3
