"""Volumes and videos [B, C, D, H, W]: drawn as 2-D cells, monitored end to end, training untouched."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import pytest
import torch
from _lightning_models import assert_same_training, read_events, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_saliency import SaliencyMonitor
from lightning_saliency.monitoring.rendering import RenderOptions, probe_view, render_epoch
from lightning_saliency.monitoring.result import EpochResult
from lightning_saliency.monitoring.summary import shrink
from lightning_saliency.probe import Probe
from lightning_saliency.render import to_display
from lightning_saliency.render.volumes import describe_planes, flatten_volumes, volume_peaks


def test_peaks_are_the_argmax_of_the_methods_mean():
    a, b = torch.zeros(2, 1, 3, 4, 5), torch.zeros(2, 1, 3, 4, 5)
    a[0, 0, 2, 1, 3], b[0, 0, 0, 0, 0] = 1.0, 0.9  # the mean peaks where a does
    a[1, 0, 1, 3, 4] = b[1, 0, 1, 3, 4] = 0.5
    b[1, 0, 0, 2, 2] = float("nan")  # NaN counts as 0, never as the peak
    assert volume_peaks([a, b]).tolist() == [[2, 1, 3], [1, 3, 4]]
    with pytest.raises(ValueError, match="at least one map"):
        volume_peaks([])


def test_slices_pass_through_the_peak_voxel_in_every_plane():
    d, h, w = 4, 6, 5
    volume = torch.zeros(1, 1, d, h, w)
    volume[0, 0, 1, 2, 3] = 1.0  # one bright voxel
    cells = flatten_volumes(volume, "slices", torch.tensor([[1, 2, 3]]), fill=0.5)
    gap = max(1, h // 32)
    assert cells.shape == (1, 1, h, w + gap + w + gap + h + gap + w)
    axial = cells[0, 0, :, :w]
    coronal = cells[0, 0, :, w + gap : 2 * w + gap]
    sagittal = cells[0, 0, :, 2 * (w + gap) : 2 * (w + gap) + h]
    mip = cells[0, 0, :, -w:]
    assert axial.argmax().item() == 2 * w + 3  # (h=2, w=3) in the axial plane at d=1
    assert coronal.max() > 0  # the voxel is in the coronal plane at h=2 ...
    assert coronal.argmax().item() % w == 3  # ... at column w=3
    assert sagittal.max() > 0  # and in the sagittal plane at w=3
    assert mip.argmax().item() == 2 * w + 3  # the projection along the depth holds it too
    assert (cells[0, 0, :, w : w + gap] == 0.5).all()  # the gap holds the fill value
    elsewhere = flatten_volumes(volume, "slices", torch.tensor([[0, 0, 0]]))
    assert elsewhere[0, 0, :, :w].max() == 0  # planes through another voxel miss it ...
    assert elsewhere[0, 0, :, -w:].max() == 1  # ... the projection does not


def test_frames_are_evenly_spaced_in_time():
    video = torch.arange(9.0).view(1, 1, 9, 1, 1).expand(1, 1, 9, 2, 2)  # frame t holds the value t
    cells = flatten_volumes(video, "frames")
    assert cells.shape == (1, 1, 2, 4 * 2 + 3)
    assert cells[0, 0, 0, ::3].tolist() == [0.0, 3.0, 5.0, 8.0]  # first pixel of each frame
    assert describe_planes("frames", (9, 2, 2), None)[0] == "each cell: frames 0, 3, 5, 8 of 9"
    short = flatten_volumes(torch.rand(1, 3, 2, 4, 4), "frames")  # fewer frames than FRAMES: all of them
    assert short.shape == (1, 3, 4, 4 + 1 + 4)


def test_flatten_rejects_bad_views_and_shapes():
    with pytest.raises(ValueError, match=r"volume_view must be one of \('slices', 'frames'\), got 'mip'"):
        flatten_volumes(torch.rand(1, 1, 2, 2, 2), "mip")
    with pytest.raises(ValueError, match=r"needs volumes \[B, C, D, H, W\], got shape \(1, 1, 2, 2\)"):
        flatten_volumes(torch.rand(1, 1, 2, 2), "slices")


def test_to_display_and_shrink_take_volumes():
    x = torch.randn(2, 1, 3, 4, 5) * 4  # outside [0, 1]: min-max per sample
    shown = to_display(x)
    assert shown.shape == (2, 3, 3, 4, 5)
    assert torch.allclose(shown.flatten(1).min(1).values, torch.zeros(2))
    assert torch.allclose(shown.flatten(1).max(1).values, torch.ones(2))
    denormalised = to_display(torch.zeros(1, 1, 2, 2, 2), mean=[0.25], std=[2.0])
    assert torch.allclose(denormalised, torch.full((1, 3, 2, 2, 2), 0.25))
    small = shrink(torch.rand(1, 1, 32, 128, 96))
    assert small.shape == (1, 1, 16, 64, 48)
    assert torch.allclose(small.mean(), shrink(small).mean())


def test_volume_view_is_checked():
    with pytest.raises(ValueError, match=r"volume_view must be one of \('slices', 'frames'\), got 'axial'"):
        SaliencyMonitor(volume_view="axial")


class Volumes(L.LightningModule):
    """A 3-D CNN with BatchNorm and Dropout (RNG and statistics matter), 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(4, 8, 3, padding=1)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _volume_loaders():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 1, 4, 16, 16, generator=g), torch.arange(24) % 3)
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=12)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("view", ["slices", "frames"])
def test_monitor_logs_volumes(tmp_path, view):
    L.seed_everything(0)
    train, val = _volume_loaders()
    monitor = SaliencyMonitor(["gradient", "gradcam"], num_samples=3, volume_view=view, history_size=2)
    tr = trainer(tmp_path, [monitor])
    model = Volumes()
    tr.fit(model, train, val)
    tr.validate(model, val)  # validate and test run under torch.inference_mode
    tr.test(model, val)
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())  # every hook removed
    events = read_events(tr.logger.log_dir)
    assert "saliency_test/gradcam" in events["images"]
    images = events["images"]
    assert {"saliency/overview", "saliency/gradcam", "saliency/filmstrip/gradcam"} <= set(images)
    assert "saliency/localisation" not in images  # its boxes are 2-D: not drawn for volumes
    for tag in ("saliency/gradcam/deletion", "saliency/gradcam/insertion", "saliency/gradcam/map_stability"):
        assert tag in events["scalars"]
    maps = monitor.last_maps["gradcam"]
    assert maps.shape == (3, 1, 4, 16, 16)
    assert monitor.history["gradcam"][-1][1].shape == (3, 1, 4, 16, 16)  # under 64 a side: kept as they are
    cell = 6 * (4 * 16 + 3)  # three planes and the projection, or four frames, and the gaps; upscaled to 96 px
    overview = images["saliency/overview"][-1]
    # a volume's cell is four squares wide, so grid_columns=5 squares hold one per line: input, gradient, gradcam
    assert cell <= overview.width < 2 * cell
    assert overview.height > 3 * 3 * 96  # three volumes, three lines each


def test_render_epoch_says_what_the_cells_show():
    probe = Probe(torch.rand(2, 1, 4, 8, 8))
    maps = torch.zeros(2, 1, 4, 8, 8)
    maps[0, 0, 3, 1, 2] = maps[1, 0, 0, 7, 7] = 1.0
    result = EpochResult(maps={"gradcam": maps})
    rows = [["#0"], ["#1"]]
    images = render_epoch("s", probe, result, rows, None, RenderOptions(min_display_size=8), "epoch 0")
    overview = next(i for i in images if i.tag == "s/overview")
    assert "axial, coronal, sagittal slices through the methods' consensus peak, then the MIP" in overview.caption
    assert "#0 · slices d=3 h=1 w=2; #1 · slices d=0 h=7 w=7" in overview.caption
    assert {i.tag for i in images} == {"s/overview", "s/gradcam"}  # no localisation grid for volumes
    frames = render_epoch("s", probe, result, rows, None, RenderOptions(volume_view="frames"), "epoch 0")
    assert "each cell: frames 0, 1, 2, 3 of 4" in frames[0].caption
    view = probe_view("s", probe, result, rows, [], RenderOptions(), epoch=0)  # the SALIENCY tab: the same cells
    assert view.images.shape == (2, 3, 8, 8 + 1 + 8 + 1 + 8 + 1 + 8)
    assert view.maps["gradcam"].shape == (2, 1, 8, 35)
    assert view.captions[0] == ["#0", "slices d=3 h=1 w=2"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_training_a_3d_model_is_untouched(tmp_path):
    def state(callbacks):
        L.seed_everything(3)
        train, val = _volume_loaders()
        model = Volumes()
        tr = trainer(tmp_path, callbacks, logger=False, max_epochs=2)
        tr.fit(model, train, val)
        rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        return weights, copy.deepcopy(tr.optimizers[0].state_dict()), rng, [p.grad for p in model.parameters()]

    base = state([])
    monitor = SaliencyMonitor(["gradient", "gradcam++"], num_samples=3, scores=("deletion",))
    assert_same_training(base, state([monitor]))
    assert monitor.last_maps["gradcam++"].shape == (3, 1, 4, 16, 16)  # it did run
