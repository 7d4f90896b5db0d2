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


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_segmentation_demo_explains_the_disc_against_its_mask(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import segment_shapes

    log_dir = segment_shapes.main(
        ["--epochs", "1", "--train-size", "32", "--val-size", "16", "--logdir", str(tmp_path)]
    )
    assert f"tensorboard --logdir {tmp_path} --samples_per_plugin images=100" in capsys.readouterr().out
    events = read_events(log_dir)
    assert {"segment/overview", "segment/gradcam", "segment/localisation"} <= set(events["images"])
    assert 0 <= events["scalars"]["segment/gradcam/pointing_game"][0].value <= 1
    sys.modules.pop("segment_shapes", None)


def test_scenes_hold_one_of_each_shape():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from shapes import make_scenes
    finally:
        sys.path.remove(str(EXAMPLES))
    images, segmentation = make_scenes(12, size=64, seed=2)
    assert images.shape == (12, 3, 64, 64)
    assert segmentation.shape == (12, 64, 64)
    for category in (1, 2, 3):  # disc, square, cross: in every scene, each a sizeable region
        assert (segmentation == category).flatten(1).sum(1).min() > 50


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("view", ["slices", "frames"])
def test_volumes_demo_logs_3d_maps(tmp_path, monkeypatch, view):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import volumes

    argv = ["--epochs", "1", "--train-size", "24", "--val-size", "12", "--view", view, "--logdir", str(tmp_path)]
    events = read_events(volumes.main(argv))
    assert {"volumes/overview", "volumes/gradcam"} <= set(events["images"])
    assert 0 <= events["scalars"]["volumes/gradcam/energy_pointing_game"][0].value <= 1  # 3-D boxes
    images, _, boxes = volumes.make_volumes(6, seed=1)
    assert images.shape == (6, 1, 16, 32, 32)
    for i in range(6):  # the box holds the object: the brightest voxels lie inside it
        x1, y1, z1, x2, y2, z2 = boxes[i].int().tolist()
        inside = images[i, 0, z1:z2, y1:y2, x1:x2]
        assert inside.mean() > images[i, 0].mean() + 0.1
    sys.modules.pop("volumes", None)
