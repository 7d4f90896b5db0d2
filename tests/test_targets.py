"""Targets beyond one class (multi-label, segmentation, regression, any callable): each target's arithmetic and
errors, how the monitor resolves them on the probe, and Trainer runs with each (training untouched)."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import pytest
import torch
from _lightning_models import assert_same_training, read_events, trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_saliency import SaliencyMonitor
from lightning_saliency._runtime import Precision, Run
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import find_target_layer
from lightning_saliency.monitoring.targeting import explain
from lightning_saliency.probe import Probe, probe_from_dataset
from lightning_saliency.targets import (
    CallableTarget,
    ClassTarget,
    MultiLabelTarget,
    RegressionTarget,
    SegmentationTarget,
    UndefinedForTarget,
    as_target,
    resolved,
)

RUN = Run(Precision())


# --- each target's arithmetic -----------------------------------------------------------------------------------


def test_class_target_reads_logits_and_names_bad_classes():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    target = ClassTarget(torch.tensor([1, 2]))
    assert target.score(logits).tolist() == [2.0, 5.0]
    assert torch.allclose(target.confidence(logits), logits.softmax(1)[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\] for a model with 3 outputs, got \[7\]"):
        ClassTarget(torch.tensor([7, 1])).check(logits)
    with pytest.raises(ValueError, match=r"needs logits of shape \[B=2, num_classes\], got \(2, 3, 4, 4\)"):
        target.check(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="ClassTarget needs an integer Tensor"):
        ClassTarget(torch.tensor([0.5]))


def test_multilabel_positives_from_truth_threshold_and_top_k():
    logits = torch.tensor([[3.0, -2.0, 1.0], [-3.0, -1.0, -2.0]])
    truth = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rows, target = MultiLabelTarget().positives(logits, truth)
    assert (rows.tolist(), target.labels.tolist()) == ([0, 0, 1], [1, 2, 0])  # image-major, the truth's labels
    rows, target = MultiLabelTarget(threshold=0.7).positives(logits)
    assert (rows.tolist(), target.labels.tolist()) == ([0, 0, 1], [0, 2, 1])  # image 1 has none: its highest
    rows, target = MultiLabelTarget(top_k=2).positives(logits)
    assert (rows.tolist(), target.labels.tolist()) == ([0, 0, 1, 1], [0, 2, 1, 2])
    assert torch.allclose(target.confidence(logits[rows]), logits[rows, target.labels].sigmoid())
    assert target.describe(1, ["cat", "dog", "car"]) == "label car"
    with pytest.raises(ValueError, match=r"multi-hot labels of shape \(2, 2\) do not fit the output \(2, 3\)"):
        MultiLabelTarget().positives(logits, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"call `rows, target = target\.positives"):
        MultiLabelTarget().score(logits)
    with pytest.raises(ValueError, match=r"threshold must be a probability in \(0, 1\), got 1.5"):
        MultiLabelTarget(threshold=1.5)
    with pytest.raises(ValueError, match="top_k must be None or an int >= 1, got 0"):
        MultiLabelTarget(top_k=0)


def test_segmentation_target_sums_the_category_over_its_mask():
    out = torch.zeros(2, 3, 2, 2)
    out[0, 1, 0, 0], out[0, 1, 1, 1], out[1, 2] = 4.0, 2.0, 9.0  # image 0: category 1 wins two pixels
    target = SegmentationTarget(1).resolve(out)
    assert target.mask[0].tolist() == [[True, False], [False, True]]
    assert not target.mask[1].any()
    assert target.score(out).tolist() == [6.0, 0.0]
    assert target.confidence(out)[1] == 0  # an empty mask: confidence 0, never NaN
    probs = out.softmax(1)[0, 1]
    assert torch.isclose(target.confidence(out)[0], (probs[0, 0] + probs[1, 1]) / 2)
    fine = SegmentationTarget(1, torch.ones(2, 4, 4, dtype=torch.bool))  # a mask at twice the output's size
    assert fine.score(out).tolist() == [6.0, 0.0]  # resized (nearest) to the output
    volumes = torch.zeros(1, 2, 2, 3, 3)
    volumes[0, 1, 1] = 1.0
    assert SegmentationTarget(1).resolve(volumes).score(volumes).tolist() == [9.0]
    with pytest.raises(ValueError, match=r"needs a per-pixel output \[B, N, H, W\].*got shape \(2, 3\)"):
        SegmentationTarget(1).resolve(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"category 5 is not one of the output's 3 categories"):
        SegmentationTarget(5).resolve(out)
    with pytest.raises(ValueError, match="has no mask yet"):
        SegmentationTarget(1).check(out)
    with pytest.raises(ValueError, match="category must be a class index >= 0, got -1"):
        SegmentationTarget(-1)


def test_regression_and_callable_targets_have_no_confidence():
    out = torch.tensor([[0.5, 2.0], [1.0, -3.0]])
    assert RegressionTarget(1).score(out).tolist() == [2.0, -3.0]
    assert RegressionTarget().score(torch.tensor([1.5, 2.5])).tolist() == [1.5, 2.5]  # a [B] output
    with pytest.raises(UndefinedForTarget, match=r"RegressionTarget has no confidence.*\(2, 2\)"):
        RegressionTarget().confidence(out)
    with pytest.raises(ValueError, match=r"RegressionTarget\(2\) needs an output of shape \[B\] or \[B, K > 2\]"):
        RegressionTarget(2).check(out)
    target = CallableTarget(lambda o: o.sum(1))
    assert target.score(out).tolist() == [2.5, -2.0]
    with pytest.raises(ValueError, match=r"must return a Tensor \[B=2\] for the output, got \(2, 2\)"):
        CallableTarget(lambda o: o).check(out)
    with pytest.raises(TypeError, match="CallableTarget needs a callable"):
        CallableTarget(3)  # type: ignore[arg-type]


def test_as_target_and_resolved():
    assert isinstance(as_target(torch.tensor([1, 0]), 2), ClassTarget)
    assert isinstance(as_target(lambda o: o[:, 0], 2), CallableTarget)
    with pytest.raises(ValueError, match=r"one entry per image \(B=3\), got ClassTarget\(\[1, 0\]\) of 2"):
        as_target(ClassTarget(torch.tensor([1, 0])), 3)
    with pytest.raises(ValueError, match=r"integer Tensor \[B=2\] of class indices.*dtype torch.float32"):
        as_target(torch.tensor([0.0, 1.0]), 2)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Dropout(0.5)).train()
    x = torch.rand(2, 3, 4, 4)
    target = resolved(SegmentationTarget(1), model, x, RUN)
    assert model.training  # modes restored
    assert model[1].training
    with torch.no_grad():
        assert torch.equal(target.mask, model.eval()(x).argmax(1) == 1)  # resolved in eval mode


# --- the monitor's resolution on the probe ----------------------------------------------------------------------


def _segmenter(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))


def test_explain_segmentation_uses_the_categorys_true_mask_and_leaves_out_images_without_it():
    segmentation = torch.zeros(3, 8, 8, dtype=torch.long)
    segmentation[0, :4] = 1
    segmentation[2, 2:5, 2:5] = 1
    segmentation[1, :, :4] = 2  # image 1 shows no category 1
    probe = Probe(torch.rand(3, 3, 8, 8), segmentation=segmentation, masks=segmentation != 0)
    with pytest.warns(SaliencyWarning, match=r"leaves out the probe images at positions \[1\].*category 1"):
        explained = explain(_segmenter(), probe, SegmentationTarget(1), RUN)
    assert explained.rows.tolist() == [0, 2]
    assert torch.equal(explained.target.mask, segmentation[[0, 2]] == 1)
    assert torch.equal(explained.probe.masks, segmentation[[0, 2]] == 1)  # localisation compares with category 1
    assert explained.probe.boxes is None
    assert explained.captions[1][-1].startswith("explains: category 1 (9 px)")
    with pytest.raises(ValueError, match="no probe image has pixels of category 2 in the probe's ground truth"):
        explain(_segmenter(), probe.subset([0, 2]), SegmentationTarget(2), RUN)


def test_explain_multilabel_has_one_row_per_positive_label():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    probe = Probe(torch.rand(2, 3, 4, 4), multi_hot=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    explained = explain(model, probe, MultiLabelTarget(), RUN, ["cat", "dog", "car"])
    assert explained.rows.tolist() == [0, 0, 1]
    assert explained.identity == [[0, 0], [0, 2], [1, 1]]
    assert len(explained.probe) == 3
    assert explained.captions[1][:2] == ["#0", "true: cat, car"]
    assert explained.captions[1][2].startswith("explains: label car (p ")
    with pytest.raises(ValueError, match="targets='label' needs labels, but the probe has none"):
        explain(model, probe, "label", RUN)


def test_auto_layer_of_a_segmentation_model_is_the_end_of_its_trunk():
    from torchvision.models.segmentation import fcn_resnet50, lraspp_mobilenet_v3_large

    x = torch.rand(1, 3, 64, 64)
    assert find_target_layer(fcn_resnet50(weights=None, weights_backbone=None, num_classes=3), x) == "backbone.layer4"
    lraspp = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    assert find_target_layer(lraspp, x) == "backbone.16"
    encoder_decoder = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 3, 1), nn.Upsample(scale_factor=2),
    )  # fmt: skip
    assert find_target_layer(encoder_decoder, x) == "4"  # the bottleneck, not the coarse 3-channel logits


def test_probe_from_dict_samples_keeps_segmentation_and_multi_hot():
    class Masks(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            mask = torch.zeros(6, 6, dtype=torch.long)
            mask[i:, :3] = 1 + i % 2
            return {"image": torch.rand(3, 6, 6), "mask": mask}

    probe = probe_from_dataset(Masks(), 3)
    assert probe.segmentation.shape == (3, 6, 6)
    assert probe.segmentation.unique().tolist() == [0, 1, 2]
    assert torch.equal(probe.masks, probe.segmentation != 0)
    multi = Probe(torch.rand(2, 3, 4, 4), multi_hot=torch.eye(2, 3))
    assert multi.subset([1]).multi_hot.tolist() == [[0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match=r"multi_hot labels must have shape \[B=2, L\], got \(3,\)"):
        Probe(torch.rand(2, 3, 4, 4), multi_hot=torch.ones(3))


def test_history_starts_anew_when_the_rows_change():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    monitor = SaliencyMonitor(["gradient"], targets=MultiLabelTarget(), scores=("map_stability",))
    probe = Probe(torch.rand(2, 3, 8, 8), multi_hot=torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]))
    first = explain(model, probe, monitor.targets, RUN)
    changed = explain(model, Probe(probe.inputs, multi_hot=torch.eye(2, 4)), monitor.targets, RUN)

    class Trainer:  # what _run_summary reads of a trainer
        current_epoch = 0

    from lightning_saliency.monitoring.result import EpochResult

    def summarise(explained, epoch):
        Trainer.current_epoch = epoch
        rows = len(explained.rows)
        result = EpochResult(
            maps={"gradient": torch.rand(rows, 1, 8, 8, generator=torch.Generator().manual_seed(epoch))}
        )
        monitor._run_summary(Trainer(), "validate", explained.probe, explained, result)  # type: ignore[arg-type]
        return result

    summarise(first, 0)
    again = summarise(first, 1)
    assert [e for e, _ in monitor.history["gradient"]] == [0, 1]
    assert again.scores["gradient"]["map_stability"].shape == (3,)  # compared with epoch 0, row by row
    after = summarise(changed, 2)
    assert [e for e, _ in monitor.history["gradient"]] == [2]  # rows changed: the history starts anew
    assert "map_stability" not in after.scores.get("gradient", {})  # nothing comparable to score against


# --- Trainer runs -----------------------------------------------------------------------------------------------


class Dense(L.LightningModule):
    """A segmentation (``[B, 3, H, W]``), multi-label (``[B, 4]``) or regression (``[B, 2]``) model with BatchNorm
    and Dropout, so RNG streams and statistics matter."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1)
        )
        if kind == "segmentation":
            self.head = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(8, 3, 1), nn.Upsample(scale_factor=2))
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 4 if kind == "multilabel" else 2)
            )

    def forward(self, x: torch.Tensor):
        out = self.head(self.features(x))
        return {"out": out} if self.kind == "segmentation" else out  # torchvision's segmentation output

    def loss(self, batch) -> torch.Tensor:
        out = self(batch["image"])
        if self.kind == "segmentation":
            return nn.functional.cross_entropy(out["out"], batch["mask"])
        if self.kind == "multilabel":
            return nn.functional.binary_cross_entropy_with_logits(out, batch["labels"])
        return nn.functional.mse_loss(out, batch["target"])

    def training_step(self, batch, _):
        return self.loss(batch)

    def validation_step(self, batch, _):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class DenseData(Dataset):
    def __init__(self, kind: str, n: int = 24) -> None:
        g = torch.Generator().manual_seed(1)
        self.kind, self.images = kind, torch.rand(n, 3, 16, 16, generator=g)
        self.masks = (self.images[:, 0] > 0.5).long() + (self.images[:, 1] > 0.7).long()  # categories 0..2
        self.masks[:, :4, :4] = 1  # every image shows category 1
        self.labels = (torch.rand(n, 4, generator=g) > 0.5).float()
        self.targets = torch.randn(n, 2, generator=g)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        if self.kind == "segmentation":
            return {"image": self.images[i], "mask": self.masks[i]}
        if self.kind == "multilabel":
            return {"image": self.images[i], "labels": self.labels[i]}
        return {"image": self.images[i], "target": self.targets[i]}


TARGETS = {
    "segmentation": lambda: SegmentationTarget(1),
    "multilabel": lambda: MultiLabelTarget(),
    "regression": lambda: RegressionTarget(1),
}


def _fit(tmp_path, kind: str, callbacks, logger=False):
    L.seed_everything(5)
    data = DenseData(kind)
    model = Dense(kind)
    tr = trainer(tmp_path, callbacks, logger=logger, max_epochs=2)
    tr.fit(model, DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=12))
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = (weights, copy.deepcopy(tr.optimizers[0].state_dict()), rng, [p.grad for p in model.parameters()])
    return tr, model, state


def no_hooks(model: nn.Module) -> bool:
    """No forward or backward hook is left on any submodule."""
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_monitor_runs_each_target_and_training_is_untouched(tmp_path, kind):
    _, _, base = _fit(tmp_path / "base", kind, [])
    monitor = SaliencyMonitor(["gradient", "gradcam"], targets=TARGETS[kind](), num_samples=3)
    tr, model, monitored = _fit(tmp_path / "monitored", kind, [monitor], logger=True)
    assert_same_training(base, monitored)
    assert no_hooks(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr.validate(model, DataLoader(DenseData(kind), batch_size=12))  # both under torch.inference_mode
    tr.test(model, DataLoader(DenseData(kind), batch_size=12))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert no_hooks(model)
    events = read_events(tr.logger.log_dir)
    assert "saliency_test/gradcam" in events["images"]
    assert len(events["images"]["saliency/gradcam"]) == 3  # two fit epochs and the validate run
    assert {"saliency/overview", "saliency/gradcam", "saliency/filmstrip/gradcam"} <= set(events["images"])
    scalars = set(events["scalars"])
    assert "saliency/gradcam/map_stability" in scalars
    rows = 3 if kind != "multilabel" else int(DenseData(kind).labels[monitor._probe_indices].sum())
    assert monitor.last_maps["gradcam"].shape == (rows, 1, 16, 16)
    if kind == "regression":  # no probability: the scores comparing probabilities are skipped, not zeros
        assert "saliency/gradcam/deletion" not in scalars
    else:
        assert "saliency/gradcam/deletion" in scalars
    if kind == "segmentation":  # localisation against the category's true mask
        assert "saliency/gradcam/pointing_game" in scalars
        assert "saliency/localisation" in events["images"]


def test_a_non_finite_per_pixel_output_names_the_images_not_the_pixels():
    from lightning_saliency.methods import Gradient, compute_saliency

    class NaNInImage1(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = x[:, :3] * 2  # [B,3,H,W] per-pixel logits
            return torch.where(torch.arange(x.shape[0]).view(-1, 1, 1, 1) == 1, out + float("nan"), out)

    x = torch.rand(4, 3, 4, 4)
    with pytest.warns(SaliencyWarning, match=r"output is non-finite \(NaN/Inf\) for images \[1\];"):
        (maps,) = compute_saliency(
            NaNInImage1(), x, SegmentationTarget(1, torch.ones(4, 4, 4, dtype=torch.bool)), [Gradient()]
        )
    assert not maps.isnan().any()
    assert maps[1].abs().max() == 0  # set to 0, never NaN
