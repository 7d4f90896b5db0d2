"""SaliencyMonitor inside a real Trainer: what is logged, when, and that training is untouched."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _lightning_models import (
    TinyClassifier,
    assert_same_training,
    loaders,
    make_data,
    read_events,
    train_state,
    trainer,
)
from torch.utils.data import DataLoader

from lightning_saliency import Probe, SaliencyMonitor, SaliencyWarning
from lightning_saliency.methods import GradCAM
from lightning_saliency.render import text

ALL_GRADIENT_FAMILY = ["gradient", "gradient_x_input", "smoothgrad", "gradcam", "gradcam++"]


def text_heights(width: int, labels: list[list[str]]) -> tuple[int, list[int]]:
    """Heights of a grid's title strip and of each image's caption, as the renderer draws them at this width."""
    font = text._font(text._font_size(width))
    return text._text_strip([], 1, width, font).shape[1], [text._caption(r, width, font).shape[1] for r in labels]


def test_fit_logs_grids_and_timings_every_epoch(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam", "gradcam++"], num_samples=4)
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(TinyClassifier(), train, val)

    events = read_events(tmp_path)
    for tag in ["saliency/overview", "saliency/gradient", "saliency/gradcam", "saliency/gradcam++"]:
        assert len(events["images"][tag]) == 2, tag  # one per validation epoch
    overview = events["images"]["saliency/overview"][-1]
    # 4 probe rows and 4 columns (input + 3 methods) of 16x16 cells upscaled to >= 96 px, a title strip on top and
    # each image's caption (its label texts) above its row.
    assert overview.width == 4 * 96 + 5 * 2
    title, captions = text_heights(overview.width, monitor.last_row_labels)
    assert len(captions) == 4
    assert overview.height == title + sum(captions) + 4 * 96 + 5 * 2
    assert [e.step for e in events["images"]["saliency/overview"]] == [tr.global_step // 2, tr.global_step]
    assert {"saliency/time/gradient_pass", "saliency/time/total"} <= set(events["scalars"])
    assert all(s.value > 0 for s in events["scalars"]["saliency/time/total"])
    assert set(monitor.last_maps) == {"gradient", "gradcam", "gradcam++"}


def test_every_n_epochs_and_sanity_check_skipped(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, every_n_epochs=2)
    tr = trainer(tmp_path, [monitor], max_epochs=4, num_sanity_val_steps=2)
    tr.fit(TinyClassifier(), train, val)
    steps = [e.step for e in read_events(tmp_path)["images"]["saliency/overview"]]
    per_epoch = tr.global_step // 4
    assert steps == [2 * per_epoch, 4 * per_epoch]


@pytest.mark.parametrize("entry", ["validate", "test"])
def test_validate_and_test_entry_points_produce_maps_under_inference_mode(tmp_path, entry):
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=3)
    tr = trainer(tmp_path, [monitor], inference_mode=True)
    model = TinyClassifier()
    getattr(tr, entry)(model, val)
    prefix = "saliency" if entry == "validate" else "saliency_test"
    events = read_events(tmp_path)
    assert len(events["images"][f"{prefix}/gradcam"]) == 1
    maps = monitor.last_maps["gradient"]
    assert maps.shape == (3, 1, 16, 16)
    assert maps.max() == 1.0  # a real map, not the all-zero fallback of a skipped gradient
    assert not torch.is_inference(maps)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path, precision):
    base = train_state(tmp_path / "a", [], max_epochs=3, precision=precision)
    monitor = SaliencyMonitor(methods=ALL_GRADIENT_FAMILY, num_samples=4, targets="predicted")
    other = train_state(tmp_path / "b", [monitor], max_epochs=3, precision=precision)

    assert monitor.last_maps, "the monitor must actually have run"
    assert_same_training(base, other)


def test_frozen_eval_backbone_stays_in_eval_mode(tmp_path):
    train, val = loaders()
    model = TinyClassifier(frozen_backbone=True)
    tr = trainer(tmp_path, [SaliencyMonitor(methods=["gradcam", "gradient"], num_samples=2)], max_epochs=2)
    tr.fit(model, train, val)
    assert len(model.backbone_modes) == tr.global_step
    assert not any(model.backbone_modes)  # eval in every training step, including after validation epochs
    assert all(not p.requires_grad for p in model.features.parameters())
    assert all(p.grad is None for p in model.features.parameters())


def test_one_channel_non_square_inputs(tmp_path):
    train, val = loaders(channels=1, size=(20, 12))
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=2, mean=[0.5], std=[0.2])
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(TinyClassifier(in_channels=1), train, val)
    assert monitor.last_maps["gradcam"].shape == (2, 1, 20, 12)
    image = read_events(tmp_path)["images"]["saliency/gradcam"][0]
    # rows of 20x12 cells upscaled x8 (shorter side 12 -> 96): 3 columns of 96 px, 2 rows of 160 px
    title, captions = text_heights(image.width, monitor.last_row_labels)
    assert (image.width, image.height) == (3 * 96 + 4 * 2, title + sum(captions) + 2 * 160 + 3 * 2)


def test_probe_is_deterministic_and_class_balanced(tmp_path):
    _, _val = loaders(n=96)
    # a class-sorted validation set: a naive "first 8" probe would hold one class only
    ds = make_data(96)
    order = torch.argsort(ds.tensors[1], stable=True)
    sorted_val = DataLoader(torch.utils.data.TensorDataset(ds.tensors[0][order], ds.tensors[1][order]), batch_size=16)
    picks = []
    for _ in range(2):
        monitor = SaliencyMonitor(methods=["gradient"], num_samples=8)
        tr = trainer(tmp_path, [monitor], logger=False)
        tr.validate(TinyClassifier(), sorted_val, verbose=False)
        picks.append(monitor.state_dict()["probe_indices"])
    assert picks[0] == picks[1]
    labels = ds.tensors[1][order][picks[0]]
    assert torch.bincount(labels, minlength=4).tolist() == [2, 2, 2, 2]


def test_probe_given_as_tensors_indices_and_targets_options(tmp_path):
    _, val = loaders()
    x = torch.randn(3, 3, 16, 16)
    monitor = SaliencyMonitor(methods=["gradcam"], probe=(x, torch.tensor([0, 1, 2])))
    trainer(tmp_path, [monitor], logger=False).validate(TinyClassifier(), val, verbose=False)
    assert monitor.last_maps["gradcam"].shape == (3, 1, 16, 16)

    monitor = SaliencyMonitor(methods=["gradcam"], probe=[0, 5], targets=2)
    trainer(tmp_path, [monitor], logger=False).validate(TinyClassifier(), val, verbose=False)
    assert monitor.state_dict()["probe_indices"] == [0, 5]
    assert monitor.last_maps["gradcam"].shape[0] == 2

    monitor = SaliencyMonitor(methods=["gradient"], probe=x, strict=True)  # no labels, targets='label'
    with pytest.raises(ValueError, match="targets='label' needs labels"):
        trainer(tmp_path, [monitor], logger=False).validate(TinyClassifier(), val, verbose=False)


def test_predicted_and_fixed_targets_change_the_maps():
    model = TinyClassifier().eval()
    probe = Probe(torch.randn(2, 3, 16, 16), torch.tensor([0, 0]))
    maps = {t: SaliencyMonitor(methods=["gradient"], targets=t).compute(model, probe)["gradient"] for t in [0, 3]}
    assert not torch.allclose(maps[0], maps[3])
    predicted = model(probe.inputs).argmax(1)
    pred_maps = SaliencyMonitor(methods=["gradient"], targets="predicted").compute(model, probe)["gradient"]
    fixed = SaliencyMonitor(methods=["gradient"], probe=None, targets=int(predicted[0])).compute(model, probe)
    assert torch.allclose(pred_maps[0], fixed["gradient"][0])


def test_state_dict_round_trip_restores_the_probe_identity(tmp_path):
    _, val = loaders()
    first = SaliencyMonitor(methods=["gradient"], num_samples=3)
    trainer(tmp_path, [first], logger=False).validate(TinyClassifier(), val, verbose=False)
    state = first.state_dict()
    second = SaliencyMonitor(methods=["gradient"], num_samples=3)
    second.load_state_dict(state)
    assert second._restored_indices == state["probe_indices"]
    assert first.state_key == second.state_key
    assert first.state_key != SaliencyMonitor(methods=["gradcam"]).state_key


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ["nope"]}, ValueError, r"Unknown saliency method 'nope'. Available: .*gradcam"),
        ({"methods": []}, ValueError, "methods must be a non-empty list"),
        ({"methods": [3]}, TypeError, "registered name or a SaliencyMethod"),
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs must be an int >= 1, got 0"),
        ({"num_samples": -1}, ValueError, "num_samples must be an int >= 1, got -1"),
        (
            {"targets": "argmax"},
            ValueError,
            r"targets must be 'label', 'predicted', a class index >= 0, a Target.*got 'argmax'",
        ),
        ({"colormap": "jet"}, ValueError, r"colormap must be one of .*'turbo'.*got 'jet'"),
        ({"alpha": 1.5}, ValueError, r"alpha must be a float in \[0, 1\], got 1.5"),
        ({"mean": [0.5, 0.5], "std": [0.2]}, ValueError, "mean and std must have the same length"),
        ({"std": [0.0]}, ValueError, "std must be positive"),
        ({"probe": "images"}, TypeError, "probe must be None, a Tensor"),
        ({"probe": torch.zeros(3, 8, 8)}, ValueError, r"probe inputs must be a Tensor \[B, C, H, W\], got \(3, 8, 8\)"),
        ({"probe": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}, ValueError, "must be floating point"),
        ({"methods": [GradCAM(), GradCAM()]}, ValueError, "Method labels must be unique"),
        ({"target_layer": 3}, TypeError, "target_layer must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SaliencyMonitor(**kwargs)


def test_wrong_target_layer_name_lists_candidates(tmp_path):
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], target_layer="layer4", num_samples=2, strict=True)
    with pytest.raises(ValueError, match=r"target_layer='layer4' is not a module of TinyClassifier.*features"):
        trainer(tmp_path, [monitor], logger=False).validate(TinyClassifier(), val, verbose=False)


def test_hooks_are_removed_after_an_error_in_the_trainer(tmp_path):
    _, val = loaders()
    model = TinyClassifier()
    probe = (torch.randn(2, 3, 16, 16), torch.tensor([0, 9]))
    monitor = SaliencyMonitor(methods=["gradcam"], probe=probe, strict=True)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 3\].*\[9\]"):
        trainer(tmp_path, [monitor], logger=False).validate(model, val, verbose=False)
    assert all(not m._forward_hooks for m in model.modules())

    model.train()  # outside a Trainer: the error path restores every module's mode as found
    monitor = SaliencyMonitor(methods=["gradcam", "gradient"])
    with pytest.raises(ValueError, match="targets must be class indices"):
        monitor.compute(model, Probe(torch.randn(2, 3, 16, 16), torch.tensor([0, 9])))
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_filmstrip_shows_the_last_history_size_epochs(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, history_size=2)
    tr = trainer(tmp_path, [monitor], max_epochs=3)
    tr.fit(TinyClassifier(), train, val)
    strips = read_events(tmp_path)["images"]["saliency/filmstrip/gradcam"]
    assert len(strips) == 3
    # columns: 1, 2, then 2 again (bounded by history_size); 16 px cells upscaled x6 to 96 px
    assert [s.width for s in strips] == [1 * 96 + 2 * 2, 2 * 96 + 3 * 2, 2 * 96 + 3 * 2]
    assert [epoch for epoch, _ in monitor.history["gradcam"]] == [1, 2]
    assert torch.allclose(monitor.history["gradcam"][-1][1], monitor.last_maps["gradcam"])


def test_scores_are_logged_per_method_with_layout_and_curves(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=4, score_steps=4)
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(TinyClassifier(), train, val)  # the note about missing boxes is info (a SaliencyWarning would fail)
    events = read_events(tmp_path)
    for label in ["gradient", "gradcam"]:
        for score in ["deletion", "insertion", "average_drop", "increase_in_confidence"]:
            values = [e.value for e in events["scalars"][f"saliency/{label}/{score}"]]
            assert len(values) == 2, (label, score)
            assert all(np.isfinite(values)), (label, score)
        assert 0 <= monitor.last_scores[label]["deletion"] <= 1
        # stability needs a previous epoch: logged from the second epoch on
        assert len(events["scalars"][f"saliency/{label}/map_stability"]) == 1
        assert f"saliency/{label}/pointing_game" not in events["scalars"]  # no boxes in this probe
    curves = events["images"]["saliency/curves"]
    assert len(curves) == 2
    assert curves[0].width == 300  # deletion above insertion: as wide as TensorBoard's card
    assert curves[0].height > 2 * 190
    layout_files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert any(b"custom_scalars" in f.read_bytes() for f in layout_files)


def _custom_scalar_charts(log_dir) -> dict[str, list[str]]:
    """The custom-scalars layout read back from the event file: chart title -> its tag regexes."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    charts: dict[str, list[str]] = {}
    for f in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"tensors": 0})
        acc.Reload()
        if metadata.CONFIG_SUMMARY_TAG not in acc.Tags()["tensors"]:
            continue
        layout = layout_pb2.Layout()
        layout.ParseFromString(acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0])
        for category in layout.category:
            for chart in category.chart:
                charts[chart.title] = list(chart.multiline.tag)
    return charts


def test_custom_scalars_charts_have_exactly_one_line_per_method_whatever_the_labels(tmp_path):
    from lightning_saliency.methods import GradCAMPlusPlus, Gradient

    labels = ["cam", "cam++", "grad.x", "cam(1)", "[cam]*"]
    methods = [
        GradCAM(name="cam"),
        GradCAMPlusPlus(name="cam++"),
        Gradient(name="grad.x"),
        GradCAM(name="cam(1)"),
        GradCAM(name="[cam]*"),
    ]
    train, val = loaders()
    monitor = SaliencyMonitor(methods=methods, num_samples=2, score_steps=2, scores=["deletion", "average_drop"])
    trainer(tmp_path, [monitor], max_epochs=1).fit(TinyClassifier(), train, val)
    logged = set(read_events(tmp_path)["scalars"])
    charts = _custom_scalar_charts(tmp_path)
    assert set(charts) == {"deletion", "average_drop", "time"}
    for score in ("deletion", "average_drop"):
        # TensorBoard's rule (custom_scalars_plugin): a chart shows the logged tags that re.match one of its regexes.
        lines = [tag for tag in sorted(logged) if any(re.compile(rx).match(tag) for rx in charts[score])]
        assert sorted(lines) == sorted(f"saliency/{label}/{score}" for label in labels), score
    timing = [tag for tag in logged if any(re.compile(rx).match(tag) for rx in charts["time"])]
    assert timing
    assert all(tag.startswith("saliency/time/") for tag in timing)


def test_localisation_scores_with_probe_boxes_and_costly_scores_every_n(tmp_path):
    _, val = loaders()
    x = torch.randn(2, 3, 16, 16)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 16.0, 16.0]])
    probe = Probe(x, torch.tensor([0, 1]), boxes=boxes)
    monitor = SaliencyMonitor(
        methods=["gradient"],
        probe=probe,
        scores=["pointing_game", "energy_pointing_game", "model_randomisation", "saliency_attack"],
        expensive_every_n_epochs=2,
    )
    train, _ = loaders()
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(TinyClassifier(), train, val)
    events = read_events(tmp_path)["scalars"]
    assert len(events["saliency/gradient/pointing_game"]) == 2
    assert all(0 <= e.value <= 1 for e in events["saliency/gradient/energy_pointing_game"])
    assert len(events["saliency/gradient/model_randomisation"]) == 1  # epoch 1 only (every 2 epochs)
    assert len(events["saliency/gradient/saliency_attack"]) == 1
    assert events["saliency/gradient/model_randomisation"][0].step == tr.global_step


def test_scores_in_validate_under_inference_mode_include_costly_ones(tmp_path):
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, scores=["deletion", "model_randomisation"])
    trainer(tmp_path, [monitor], logger=False, inference_mode=True).validate(TinyClassifier(), val, verbose=False)
    assert set(monitor.last_scores["gradcam"]) == {"deletion", "model_randomisation"}
    assert 0 <= monitor.last_scores["gradcam"]["model_randomisation"] <= 1


def test_unknown_score_is_rejected():
    with pytest.raises(ValueError, match=r"Unknown score\(s\) \['auc'\]. Available: deletion"):
        SaliencyMonitor(scores=["auc"])


def test_resume_from_checkpoint_continues_probe_and_history(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    train, val = loaders(n=96)
    first = SaliencyMonitor(methods=["gradcam"], num_samples=4, scores=["map_stability"])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path / "a", [first, ckpt], max_epochs=2, enable_checkpointing=True).fit(TinyClassifier(), train, val)
    assert [e for e, _ in first.history["gradcam"]] == [0, 1]

    resumed = SaliencyMonitor(methods=["gradcam"], num_samples=4, scores=["map_stability"])
    tr = trainer(tmp_path / "b", [resumed], max_epochs=3, enable_checkpointing=True)
    tr.fit(TinyClassifier(), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    assert resumed.state_dict()["probe_indices"] == first.state_dict()["probe_indices"]
    assert torch.equal(resumed._probes["validate"].inputs, first._probes["validate"].inputs)  # the same images
    assert [e for e, _ in resumed.history["gradcam"]] == [0, 1, 2]  # the series continues
    torch.testing.assert_close(resumed.history["gradcam"][1][1], first.history["gradcam"][1][1])
    events = read_events(tmp_path / "b")
    assert len(events["scalars"]["saliency/gradcam/map_stability"]) == 1  # epoch 2 against the restored epoch 1
    strip = events["images"]["saliency/filmstrip/gradcam"][0]
    assert strip.width == 3 * 96 + 4 * 2  # three epochs in the resumed run's first filmstrip
    overview_a = read_events(tmp_path / "a")["images"]["saliency/overview"][0].encoded_image_string
    overview_b = events["images"]["saliency/overview"][0].encoded_image_string
    assert overview_a != overview_b  # different maps (trained further) ...
    assert first.state_key == resumed.state_key  # ... of the same probe, restored through the same key


@pytest.mark.parametrize(
    ("changed", "old", "new"),
    [
        ({"num_samples": 6}, "num_samples=4", "num_samples=6"),
        ({"probe": [1, 2, 5]}, "num_samples=4", r"probe=\[1, 2, 5\]"),
    ],
)
def test_resume_with_another_probe_configuration_takes_the_new_probe_and_drops_the_history(tmp_path, changed, old, new):
    from lightning.pytorch.callbacks import ModelCheckpoint

    train, val = loaders(n=96)
    first = SaliencyMonitor(methods=["gradcam"], num_samples=4, scores=["map_stability"])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path / "a", [first, ckpt], max_epochs=2, enable_checkpointing=True).fit(TinyClassifier(), train, val)

    resumed = SaliencyMonitor(methods=["gradcam"], scores=["map_stability"], **{"num_samples": 4, **changed})
    tr = trainer(tmp_path / "b", [resumed], max_epochs=3, enable_checkpointing=True)
    with pytest.warns(SaliencyWarning, match=rf"another probe.*\({old} in the checkpoint, {new} now\)"):
        tr.fit(TinyClassifier(), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    probe = resumed._probes["validate"]
    if "probe" in changed:
        assert probe.indices == changed["probe"]
    else:
        assert len(probe) == changed["num_samples"]
    assert [e for e, _ in resumed.history["gradcam"]] == [2]  # the old probe's history is gone
    assert "saliency/gradcam/map_stability" not in read_events(tmp_path / "b")["scalars"]
    again = SaliencyMonitor(methods=["gradcam"], scores=["map_stability"], **{"num_samples": 4, **changed})
    again.load_state_dict(resumed.state_dict())  # the same configuration resumes silently, with the history
    assert [e for e, _ in again.history["gradcam"]] == [2]


def test_two_monitors_with_one_prefix_fail_at_setup_naming_both(tmp_path):
    from lightning_saliency import ClassModelMonitor

    train, val = loaders()
    a = SaliencyMonitor(methods=["gradient"], num_samples=2)
    b = SaliencyMonitor(methods=["gradcam"], num_samples=2)
    assert a.state_key != b.state_key  # Lightning's own check lets them through
    match = (
        r"SaliencyMonitor\(methods=\['gradient'\], log_prefix='saliency'\) and "
        r"SaliencyMonitor\(methods=\['gradcam'\], log_prefix='saliency'\) both have log_prefix='saliency'.*"
        r"log_prefix='saliency_2'"
    )
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, [a, b], max_epochs=1).fit(TinyClassifier(), train, val)
    clash = trainer(tmp_path, [a, ClassModelMonitor(classes=[0], log_prefix="saliency")], max_epochs=1)
    with pytest.raises(ValueError, match=r"ClassModelMonitor\(classes=\[0\], log_prefix='saliency'\)"):
        clash.fit(TinyClassifier(), train, val)
    c = SaliencyMonitor(methods=["gradcam"], num_samples=2, log_prefix="saliency_cam")
    trainer(tmp_path / "ok", [a, c], max_epochs=1).fit(TinyClassifier(), train, val)
    assert {"saliency/gradient", "saliency_cam/gradcam"} <= set(read_events(tmp_path / "ok")["images"])


def test_fast_dev_run_says_that_nothing_is_logged_instead_of_asking_for_a_tensorboard_logger(tmp_path, caplog):
    from lightning.pytorch.loggers import TensorBoardLogger

    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, scores=())
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with caplog.at_level("INFO"):  # a SaliencyWarning (e.g. "found no TensorBoardLogger") would fail the test
        trainer(tmp_path, [monitor], logger=logger, fast_dev_run=True).fit(TinyClassifier(), train, val)
    assert "fast_dev_run is on" in caplog.text
    assert "logs nothing" in caplog.text
    assert set(monitor.last_maps) == {"gradcam"}  # the work ran
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # and, as said, nothing was logged


def test_errors_are_reported_once_and_training_continues_unless_strict(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], target_layer="nope", num_samples=2)
    model = TinyClassifier()
    tr = trainer(tmp_path, [monitor], max_epochs=3)
    match = r"the method 'gradcam' failed at epoch 0 \(validate\).*target_layer='nope'"
    with pytest.warns(SaliencyWarning, match=match) as rec:
        tr.fit(model, train, val)
    assert sum(issubclass(w.category, SaliencyWarning) for w in rec) == 1  # once, not every epoch
    assert tr.current_epoch == 3  # training finished
    assert all(not m._forward_hooks for m in model.modules())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_file,) = tmp_path.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events_file), size_guidance={"tensors": 0})
    acc.Reload()
    assert "saliency/errors/text_summary" in acc.Tags()["tensors"]
    assert len(acc.Tensors("saliency/errors/text_summary")) == 3  # a text entry per failed epoch


def test_alarm_warns_and_writes_text_naming_images_and_method(tmp_path):
    from lightning_saliency import Alarm

    _, val = loaders()
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 16.0, 16.0]])  # tiny box: image 0 misses
    probe = Probe(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), boxes=boxes)
    monitor = SaliencyMonitor(
        methods=["gradcam", "gradient"],
        probe=probe,
        scores=["energy_pointing_game"],
        alarms=[Alarm("energy_pointing_game", below=0.5, methods=["gradcam"])],
    )
    with pytest.warns(
        SaliencyWarning, match=r"alarm: epoch 0: energy_pointing_game of gradcam < 0.5 on probe images #0"
    ):
        trainer(tmp_path, [monitor]).validate(TinyClassifier(), val, verbose=False)
    assert len(monitor.alarm_log) == 1
    assert "gradient" not in monitor.alarm_log[0].split(" of ")[1].split(" ")[0]
    assert any(b"saliency/alarms" in f.read_bytes() for f in tmp_path.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"score": "auc", "below": 1.0}, ValueError, "Alarm score must be one of"),
        ({"score": "deletion"}, ValueError, "needs a threshold"),
    ],
)
def test_bad_alarms(kwargs, error, match):
    from lightning_saliency import Alarm

    with pytest.raises(error, match=match):
        Alarm(**kwargs)


def test_alarm_on_a_score_not_computed_is_rejected():
    from lightning_saliency import Alarm

    with pytest.raises(ValueError, match="that score is not computed"):
        SaliencyMonitor(scores=["deletion"], alarms=[Alarm("map_stability", below=0.2)])
    with pytest.raises(
        ValueError, match=r"Alarm on methods \['gradcam'\], but the monitor's methods are \['gradient'\]"
    ):
        SaliencyMonitor(
            methods=["gradient"], scores=["deletion"], alarms=[Alarm("deletion", above=0.9, methods=["gradcam"])]
        )


def test_summary_text_at_the_end_of_fit(tmp_path):
    train, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, scores=["deletion"])
    trainer(tmp_path, [monitor], max_epochs=2).fit(TinyClassifier(), train, val)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_file,) = tmp_path.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events_file), size_guidance={"tensors": 0})
    acc.Reload()
    (entry,) = acc.Tensors("saliency/summary/text_summary")
    text = entry.tensor_proto.string_val[0].decode()
    assert "| gradcam | deletion |" in text


def test_progress_bar_during_heavy_work_when_lightning_shows_one(tmp_path, capsys):
    from lightning.pytorch.callbacks import TQDMProgressBar

    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam", "smoothgrad"], num_samples=2, scores=["deletion"])
    tr = trainer(tmp_path, [monitor, TQDMProgressBar()], enable_progress_bar=True)
    tr.validate(TinyClassifier(), val, verbose=False)
    out = capsys.readouterr().out
    assert "Saliency:   0%|          | 0/5" in out  # 2 map groups (shared gradient pass, smoothgrad) + 3 scorings


def test_progress_under_lightnings_rich_bar(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    pytest.importorskip("rich")
    added, advanced = [], []
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradient", "smoothgrad"], num_samples=2, scores=["deletion"])
    bar = RichProgressBar()
    tr = trainer(tmp_path, [monitor, bar], enable_progress_bar=True)

    real_run = monitor._run

    def spying(trainer, pl_module, stage):  # once Lightning's Rich progress exists, watch our task on it
        progress = bar.progress
        add, update = progress.add_task, progress.update
        monkeypatch.setattr(progress, "add_task", lambda *a, **k: added.append((a, k)) or add(*a, **k))
        monkeypatch.setattr(progress, "update", lambda t, **k: advanced.append(k.get("description")) or update(t, **k))
        return real_run(trainer, pl_module, stage)

    monkeypatch.setattr(monitor, "_run", spying)
    tr.validate(TinyClassifier(), val, verbose=False)
    assert ("Saliency",) in [a for a, _ in added]
    assert [k["total"] for a, k in added if a == ("Saliency",)] == [4]  # 2 map groups + 2 scorings
    assert "Saliency: scores of smoothgrad" in advanced


def test_mean_std_not_matching_the_channels_fails_before_any_work(tmp_path):
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, mean=[0.5, 0.5], std=[0.2, 0.2], strict=True)
    with pytest.raises(ValueError, match=r"mean must have one value per input channel \(3\) or a single value"):
        trainer(tmp_path, [monitor]).validate(TinyClassifier(), val, verbose=False)
    assert monitor.last_maps == {}  # nothing was computed


def test_every_score_name_the_monitor_accepts_is_computed(tmp_path):
    from lightning_saliency.metrics import SCORES

    _, val = loaders()
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 16.0, 16.0]])
    probe = Probe(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), boxes=boxes)
    monitor = SaliencyMonitor(methods=["gradient"], probe=probe, scores=list(SCORES), score_steps=2, strict=True)
    trainer(tmp_path, [monitor], logger=False).validate(TinyClassifier(), val, verbose=False)
    # map_stability needs a previous epoch, focus mosaics (no probe has them) and completeness a method with raw
    # attributions (gradient has none); every other score must have a value (no name silently ignored)
    assert set(monitor.last_scores["gradient"]) == set(SCORES) - {"map_stability", "focus", "completeness"}


class NamedClasses(torch.utils.data.TensorDataset):
    classes = ("ant", "bee", "cat", "dog")  # as torchvision's ImageFolder


def test_grid_rows_are_labelled_with_class_names_from_the_argument_the_dataset_or_indices(tmp_path):
    train, _ = loaders()
    data = make_data(8, seed=1)
    named = DataLoader(NamedClasses(*data.tensors), batch_size=8)
    found = {}
    for kind, loader, names in [
        ("dataset", named, None),
        ("argument", named, ["A", "B", "C", "D"]),
        ("indices", DataLoader(data, batch_size=8), None),
    ]:
        monitor = SaliencyMonitor(methods=["gradcam"], num_samples=2, scores=(), class_names=names)
        trainer(tmp_path / kind, [monitor], max_epochs=1).fit(TinyClassifier(), train, loader)
        found[kind] = monitor.last_row_labels
    probe_labels = [int(data.tensors[1][i]) for i in range(2)]
    for kind, names in (("dataset", NamedClasses.classes), ("argument", "ABCD"), ("indices", "0123")):
        rows = found[kind]
        assert len(rows) == 2
        for row, label in zip(rows, probe_labels, strict=True):
            assert row[0].startswith("#")
            assert row[1] == f"true: {names[label]}", kind
            assert row[2].startswith("pred: ")
            assert row[2].split(" ")[1] in names, kind
    with pytest.raises(TypeError, match="class_names must be a sequence of strings"):
        SaliencyMonitor(class_names="abc")
    with pytest.raises(ValueError, match="grid_columns must be an int >= 1, got 0"):
        SaliencyMonitor(grid_columns=0)
