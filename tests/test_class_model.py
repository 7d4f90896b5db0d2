"""Class model visualisation: the function on a model with a known answer, and ClassModelMonitor in a Trainer."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from _lightning_models import TinyClassifier, assert_same_training, loaders, read_events, train_state, trainer
from torch import Tensor, nn

from lightning_saliency import ClassModelMonitor, get_method
from lightning_saliency.class_model import class_model_visualisation
from lightning_saliency.localisation import box_iou, saliency_to_box

SIZE = (12, 14)
BOXES = [(3, 2, 9, 7), (6, 5, 13, 11), (1, 6, 5, 11)]  # (x1, y1, x2, y2) of class c, read from channel c


class RegionScore(nn.Module):
    """``logit_c = sum of channel c inside BOXES[c]`` for c < 3, plus a constant class 3.

    BatchNorm (identity with its initial statistics in eval mode) and Dropout make modes and RNG matter; the
    BatchNorm affine parameters give the test parameters whose ``.grad`` must stay ``None``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        regions = torch.zeros(3, *SIZE)
        for c, (x1, y1, x2, y2) in enumerate(BOXES):
            regions[c, y1:y2, x1:x2] = 1.0
        self.register_buffer("regions", regions)

    def forward(self, x: Tensor) -> Tensor:
        scores = (self.drop(self.norm(x)) * self.regions).sum((2, 3))  # [B,3]
        return torch.cat([scores, torch.zeros_like(scores[:, :1])], 1)  # [B,4]


def _energy_inside(images: Tensor, model: RegionScore) -> Tensor:
    """Per class image: the fraction of ``|I|^2`` in its own channel and box."""
    energy = images.pow(2)
    return (energy * model.regions).sum((1, 2, 3)) / energy.sum((1, 2, 3))


@pytest.mark.parametrize(
    ("kwargs", "threshold"),
    [({}, 0.999), ({"jitter": 1}, 0.5), ({"jitter": 1, "blur_every": 5, "blur_sigma": 0.7}, 0.5)],
)
def test_class_model_concentrates_energy_in_the_class_region(kwargs, threshold):
    model = RegionScore()
    images = class_model_visualisation(model, [0, 1, 2], (3, *SIZE), steps=60, **kwargs)
    assert images.shape == (3, 3, *SIZE)
    assert images.dtype == torch.float32
    fraction = _energy_inside(images, model)
    assert (fraction > threshold).all(), fraction
    # and the class score went up from 0 (the zero image)
    assert (model.eval()(images).diagonal() > 5).all()


def test_l2_penalty_bounds_the_image_at_the_analytic_optimum():
    # argmax_I  sum_box I - lambda ||I||^2  is I = 1 / (2 lambda) inside the box, 0 elsewhere
    model = RegionScore()
    images = class_model_visualisation(model, [1], (3, *SIZE), steps=300, lr=0.1, weight_decay=0.5)
    x1, y1, x2, y2 = BOXES[1]
    inside = images[0, 1, y1:y2, x1:x2]
    assert torch.allclose(inside, torch.ones_like(inside), atol=0.05)
    assert images.abs().sum() - inside.abs().sum() == 0


def test_mean_std_clamp_to_the_valid_input_range():
    model = RegionScore()
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
    images = class_model_visualisation(model, [0, 1, 2], (3, *SIZE), steps=40, lr=0.2, mean=mean, std=std)
    m, s = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
    pixels = images * s + m
    assert pixels.min() >= -1e-6
    assert pixels.max() <= 1 + 1e-6
    x1, y1, x2, y2 = BOXES[2]
    assert torch.allclose(pixels[2, 2, y1:y2, x1:x2], torch.ones(y2 - y1, x2 - x1), atol=1e-5)  # saturated


def test_gradient_map_of_the_class_model_localises_its_region():
    model = RegionScore()
    images = class_model_visualisation(model, [0, 1, 2], (3, *SIZE), steps=20, jitter=1)
    maps = get_method("gradient")(model, images, torch.tensor([0, 1, 2]))
    boxes = saliency_to_box(maps, "otsu")
    assert (box_iou(boxes, torch.tensor(BOXES, dtype=torch.float32)) > 0.95).all()


def test_seeded_determinism_and_jitter_depends_on_the_seed():
    model = RegionScore()
    kwargs = {"steps": 15, "jitter": 2, "blur_every": 3}
    a = class_model_visualisation(model, [0, 2], (3, *SIZE), seed=1, **kwargs)
    b = class_model_visualisation(model, [0, 2], (3, *SIZE), seed=1, **kwargs)
    c = class_model_visualisation(model, [0, 2], (3, *SIZE), seed=2, **kwargs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # without jitter nothing is random
    assert torch.equal(
        class_model_visualisation(model, [1], (3, *SIZE), steps=5, seed=1),
        class_model_visualisation(model, [1], (3, *SIZE), steps=5, seed=2),
    )


def test_classes_are_batched_and_independent():
    model = RegionScore()
    together = class_model_visualisation(model, [2, 0, 3], (3, *SIZE), steps=10, jitter=1)
    alone = class_model_visualisation(model, [0], (3, *SIZE), steps=10, jitter=1)
    assert torch.allclose(together[1], alone[0])
    assert together[2].abs().max() == 0  # the constant class has no gradient: stays at the zero image


def test_no_effect_on_the_model_or_the_rng():
    model = RegionScore().train()
    model.norm.eval()  # a submodule in its own mode
    params = copy.deepcopy(model.state_dict())
    torch.manual_seed(0)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    class_model_visualisation(model, [0, 1], (3, *SIZE), steps=5, jitter=2, blur_every=2)
    assert torch.equal(rng[0], torch.get_rng_state())
    assert np.array_equal(rng[1], np.random.get_state()[1])
    assert rng[2] == random.getstate()
    assert [m.training for m in model.modules()] == [True, False, True]
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key


def test_works_under_inference_mode_and_init_tensor():
    model = RegionScore()
    expected = class_model_visualisation(model, [0, 1], (3, *SIZE), steps=5)
    with torch.inference_mode():
        got = class_model_visualisation(model, [0, 1], (3, *SIZE), steps=5)
    assert torch.equal(got, expected)
    assert not torch.is_inference(got)
    start = torch.full((3, *SIZE), 0.5)
    from_half = class_model_visualisation(model, [0], (3, *SIZE), steps=1, lr=0.1, init=start)
    # one Adam step moves every pixel by lr along its gradient's sign: up in the box, down (L2 decay) elsewhere
    x1, y1, x2, y2 = BOXES[0]
    assert torch.allclose(from_half[0, 0, y1:y2, x1:x2], torch.full((y2 - y1, x2 - x1), 0.6))
    assert torch.allclose(from_half[0, 2], torch.full(SIZE, 0.4))


def test_bf16_precision_runs_forwards_in_autocast():
    from lightning_saliency import Precision
    from lightning_saliency.methods.base import Run

    model = RegionScore()
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    bf16 = Precision(forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    images = class_model_visualisation(model, [0], (3, *SIZE), steps=3, run=Run(bf16))
    assert images.dtype == torch.float32
    assert seen
    assert all(d == torch.float32 for d in seen)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 14, 4))
    dtypes: list[torch.dtype] = []
    linear.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    class_model_visualisation(linear, [0], (3, *SIZE), steps=2, run=Run(bf16))
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # ... while a Linear runs in bf16 under autocast


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": []}, ValueError, "classes must be a non-empty list of class indices >= 0, got"),
        ({"classes": [0, -1]}, ValueError, "classes must be a non-empty list"),
        ({"classes": [7]}, ValueError, r"targets must be class indices in \[0, 3\].*\[7\]"),
        ({"input_shape": (12, 14)}, ValueError, r"input_shape must be \(C, H, W\) with positive ints, got \(12, 14\)"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
        ({"lr": -1.0}, ValueError, "lr must be a float > 0, got -1.0"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be a float >= 0"),
        ({"jitter": 1.5}, ValueError, "jitter must be an int >= 0, got 1.5"),
        ({"blur_every": -1}, ValueError, "blur_every must be an int >= 0"),
        ({"blur_sigma": 0}, ValueError, "blur_sigma must be a float > 0, got 0"),
        ({"init": "noise"}, ValueError, "init must be 'zero', 'mean' or a Tensor"),
        ({"init": "mean"}, ValueError, "init='mean' needs `mean=`"),
        ({"init": torch.zeros(3, 5, 5)}, ValueError, r"init must be a float Tensor .* got shape \(3, 5, 5\)"),
        ({"mean": [0.5, 0.5]}, ValueError, r"mean must have one value per input channel \(3\)"),
        ({"std": [0.0]}, ValueError, "std must be positive"),
        ({"seed": "a"}, TypeError, "seed must be an int, got 'a'"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    args = {"classes": [0], "input_shape": (3, *SIZE), **kwargs}
    with pytest.raises(error, match=match):
        class_model_visualisation(RegionScore(), args.pop("classes"), args.pop("input_shape"), **args)


# ---------------------------------------------------------------------- the callback


def test_monitor_logs_one_grid_per_epoch_and_skips_the_sanity_check(tmp_path):
    train, val = loaders()
    monitor = ClassModelMonitor(classes=[0, 1, 3], steps=5, jitter=1, mean=[0.5], std=[0.5])
    tr = trainer(tmp_path, [monitor], max_epochs=2, num_sanity_val_steps=1)
    tr.fit(TinyClassifier(), train, val)
    events = read_events(tmp_path)["images"]["class_model/grid"]
    assert [e.step for e in events] == [tr.global_step // 2, tr.global_step]
    # 3 tiles of 16 x 16 upscaled x6 to 96 px in one row
    assert (events[0].width, events[0].height) == (3 * 96 + 4 * 2, 96 + 2 * 2)
    assert monitor.last_images is not None
    assert monitor.last_images.shape == (3, 3, 16, 16)
    assert monitor.last_classes == [0, 1, 3]


def test_monitor_every_n_epochs_default_classes_and_given_shape(tmp_path):
    train, val = loaders(channels=1, size=(20, 12))
    monitor = ClassModelMonitor(steps=3, every_n_epochs=2, input_shape=(1, 20, 12), nrow=2, min_display_size=12)
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(TinyClassifier(in_channels=1), train, val)
    events = read_events(tmp_path)["images"]["class_model/grid"]
    assert [e.step for e in events] == [tr.global_step]
    assert (events[0].width, events[0].height) == (2 * 12 + 3 * 2, 2 * 20 + 3 * 2)  # 4 classes, 2 per row
    assert monitor.last_classes == [0, 1, 2, 3]


@pytest.mark.parametrize("entry", ["validate", "test"])
def test_monitor_in_validate_and_test_under_inference_mode(tmp_path, entry):
    _, val = loaders()
    monitor = ClassModelMonitor(classes=[2], steps=4)
    getattr(trainer(tmp_path, [monitor], inference_mode=True), entry)(TinyClassifier(), val, verbose=False)
    tag = "class_model/grid" if entry == "validate" else "class_model_test/grid"
    assert len(read_events(tmp_path)["images"][tag]) == 1
    assert monitor.last_images is not None
    assert monitor.last_images.abs().max() > 0
    assert not torch.is_inference(monitor.last_images)


def test_training_is_bit_identical_with_and_without_the_monitor(tmp_path):
    base = train_state(tmp_path / "a", [], max_epochs=2)
    monitor = ClassModelMonitor(classes=[0, 1, 2, 3], steps=4, jitter=2, blur_every=2)
    other = train_state(tmp_path / "b", [monitor], max_epochs=2)

    assert monitor.last_images is not None, "the monitor must actually have run"
    assert_same_training(base, other)


def test_monitor_compute_outside_a_trainer_and_missing_shape():
    monitor = ClassModelMonitor(classes=[1], steps=2)
    with pytest.raises(ValueError, match="does not know the input shape"):
        monitor.compute(RegionScore())
    images = monitor.compute(RegionScore(), (3, *SIZE))
    assert images.shape == (1, 3, *SIZE)
    assert monitor.grid(images).shape == (3, 96, 112)  # 12 x 14 upscaled x8 (make_grid: no border for one tile)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": []}, ValueError, "classes must be None or a non-empty list of class indices >= 0, got"),
        ({"classes": "all"}, ValueError, "classes must be None or a non-empty list"),
        ({"input_shape": (3, 0, 4)}, ValueError, r"input_shape must be None or \(C, H, W\)"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1, got 0"),
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs must be an int >= 1, got 0"),
        ({"lr": 0}, ValueError, "lr must be a float > 0, got 0"),
        ({"weight_decay": -1}, ValueError, "weight_decay must be a float >= 0"),
        ({"jitter": -1}, ValueError, "jitter must be an int >= 0, got -1"),
        ({"nrow": 0}, ValueError, "nrow must be an int >= 1, got 0"),
        ({"init": "random"}, ValueError, "init must be 'zero', 'mean' or a Tensor"),
        ({"init": "mean"}, ValueError, "init='mean' needs `mean=`"),
        ({"mean": [0.5, 0.5], "std": [0.2]}, ValueError, "mean and std must have the same length"),
        ({"std": [-1.0]}, ValueError, "std must be positive"),
        ({"input_shape": (3, 8, 8), "mean": [0.5, 0.5]}, ValueError, r"one value per input channel \(3\)"),
        ({"mean": ["a"]}, TypeError, "mean must be a sequence of floats"),
        ({"seed": 1.0}, TypeError, "seed must be an int, got 1.0"),
        ({"output_adapter": 3}, TypeError, "output_adapter must be callable"),
        ({"log_prefix": ""}, ValueError, "log_prefix must be a non-empty string"),
    ],
)
def test_monitor_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClassModelMonitor(**kwargs)
