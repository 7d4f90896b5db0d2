"""Bad inputs (issue 8): each row gives a clear error or a documented warning, never a hang, a NaN map or a hook.

Rows are tested where they happen: on methods and ``compute_saliency`` directly, then through a ``Trainer`` with
``strict=True`` (the error is raised) and ``strict=False`` (one ``SaliencyWarning``, training continues).
"""

from __future__ import annotations

import inspect
import resource
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _lightning_models import TinyClassifier, loaders, make_data, read_events, trainer
from conftest import model_for
from torch import Tensor, nn
from torch.nn.modules import module as module_globals
from torch.utils.data import DataLoader, TensorDataset

from lightning_saliency import Probe, SaliencyMonitor, SaliencyWarning
from lightning_saliency.methods import METHODS, GradCAM, Gradient, SaliencyMethod, compute_saliency, get_method
from lightning_saliency.probe import probe_from_dataloader, probe_from_dataset
from lightning_saliency.render import to_display

NAMES = sorted(METHODS)  # each tested on conftest.model_for(name): the CNN, or a ViT for methods needing attention
CNN_NAMES = sorted(n for n, cls in METHODS.items() if not cls.needs)  # what runs on any model (the CNN-only tests)
CAM_NAMES = sorted(n for n, cls in METHODS.items() if getattr(cls, "uses_layer", False))
FAST_KWARGS: dict[str, dict[str, Any]] = {
    "smoothgrad": {"num_samples": 3, "batch_size": 4},
    "scorecam": {"batch_size": 8},
    "cameras": {"scales": (1.0, 1.5), "batch_size": 2},
    "integrated_gradients": {"steps": 4, "internal_batch_size": 4},
    "ablationcam": {"batch_size": 16},
    "occlusion": {"window": 8, "stride": 4, "batch_size": 32},
    "rise": {"num_masks": 16, "batch_size": 32},
    "gradient_shap": {"num_samples": 3, "batch_size": 4},
    "smoothgrad_sq": {"num_samples": 3, "batch_size": 4},
    "vargrad": {"num_samples": 3, "batch_size": 4},
    "finercam": {"base": "layercam"},  # see tests/methods/test_conformance.py: Grad-CAM's base can be all zero here
}
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")


def build(name: str, **overrides: Any) -> SaliencyMethod:
    """A registered method with small, fast arguments (only those its constructor accepts)."""
    params = inspect.signature(METHODS[name].__init__).parameters
    kwargs = {k: v for k, v in {**FAST_KWARGS.get(name, {}), **overrides}.items() if k in params}
    return METHODS[name](**kwargs)


def assert_no_hooks(model: nn.Module) -> None:
    for mod_name, module in model.named_modules():
        for attr in HOOK_DICTS:
            assert not getattr(module, attr, None), f"{mod_name or 'model'}.{attr} left behind"
    for p_name, param in model.named_parameters():
        assert not param._backward_hooks, f"tensor hook left on {p_name}"
    for attr in GLOBAL_HOOK_DICTS:
        assert not getattr(module_globals, attr, None), f"global {attr} left behind"


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def assert_untouched(before: dict[str, Any], model: nn.Module) -> None:
    after = snapshot(model)
    assert before["training"] == after["training"], "module modes changed"
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), f"{key} changed"
    for key, grad in before["grad"].items():
        assert (grad is None and after["grad"][key] is None) or torch.equal(grad, after["grad"][key]), f"{key}.grad"


def check_maps(maps: Tensor, inputs: Tensor) -> None:
    b, _, h, w = inputs.shape
    assert maps.shape == (b, 1, h, w)
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all(), "NaN/Inf in a map"
    assert maps.min() >= 0
    assert maps.max() <= 1


class SharedActivationNet(nn.Module):
    """One ReLU module used after two convolutions: its activation is ambiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.conv2(self.act(self.conv1(x)))))


def mlp(in_features: int = 3 * 8 * 8, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, classes))


class Wrapped(nn.Module):
    """Wraps a classifier and packs its logits as ``kind`` says."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x: Tensor) -> Any:
        logits = self.inner(x)
        if self.kind == "tuple":
            return logits, x.mean()
        if self.kind == "dict":
            return {"logits": logits, "aux": x.mean()}
        if self.kind == "object":
            return type("Output", (), {"logits": logits})()
        if self.kind == "other_dict":
            return {"scores": logits}
        if self.kind == "string":
            return "not logits"
        if self.kind == "3d":
            return logits[:, :, None]
        if self.kind == "nan":
            return logits * float("nan")
        raise AssertionError(self.kind)


# ---------------------------------------------------------------------------------------------- methods directly


def test_unknown_method_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown saliency method 'gradcamm'\. Available: .*'?gradcam"):
        get_method("gradcamm")
    with pytest.raises(ValueError, match=r"Unknown saliency method 'gradcamm'"):
        SaliencyMonitor(methods=["gradient", "gradcamm"])
    with pytest.raises(TypeError, match="registered name or a SaliencyMethod instance, got 3"):
        SaliencyMonitor(methods=["gradient", 3])


@pytest.mark.parametrize("name", CAM_NAMES)
def test_missing_target_layer_names_the_candidates(name, tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    kwargs = {"layers": ["features.9"]} if name == "fused_cam" else {"target_layer": "features.9"}
    with pytest.raises(ValueError, match=r"'features\.9' is not a module of TinyCNN\..*Did you mean.*features"):
        build(name, **kwargs)(tiny_cnn, inputs, targets)
    assert_no_hooks(tiny_cnn)
    assert tiny_cnn.training


@pytest.mark.parametrize("name", CAM_NAMES)
def test_non_spatial_target_layer_is_a_clear_error(name, tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    before = snapshot(tiny_cnn)
    kwargs = {"layers": ["head.2"]} if name == "fused_cam" else {"target_layer": "head.2"}  # the Linear layer
    with pytest.raises(ValueError, match=r"Linear outputs shape \(\d, 5\); CAM methods need a 4-D feature map"):
        build(name, **kwargs)(tiny_cnn, inputs, targets)
    assert_no_hooks(tiny_cnn)
    assert_untouched(before, tiny_cnn)


def test_ambiguous_target_layer_that_runs_twice(probe_batch):
    model = SharedActivationNet()
    inputs, targets = probe_batch
    for method in (GradCAM(target_layer="act"), build("scorecam", target_layer="act")):
        with pytest.raises(RuntimeError, match=r"ReLU ran more than once in one forward.*ambiguous"):
            method(model, inputs, targets)
        assert_no_hooks(model)
    # "auto" skips the shared module and picks a layer that runs once
    assert GradCAM().layer_name(model, inputs) == "conv2"


class RecurrentBlockNet(nn.Module):
    """Every spatial module runs twice: one block (conv + shared activation) applied repeatedly."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.SiLU())
        self.head = nn.Linear(3, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.block(x)).mean((2, 3)))


def test_auto_layer_on_a_model_whose_spatial_modules_all_run_twice_names_what_it_excluded(probe_batch):
    inputs, targets = probe_batch
    model = RecurrentBlockNet()
    match = (
        r"found no module of RecurrentBlockNet with a 4-D .* that runs once per forward.*name a layer.*"
        r"Left out because they run more than once per forward.*'block.0' \(2 times\), 'block.1' \(2 times\), "
        r"'block' \(2 times\).*give each call its own module instance"
    )
    with pytest.raises(ValueError, match=match):
        GradCAM()(model, inputs, targets)
    with pytest.raises(ValueError, match=r"target_layer='blok' is not a module.*'block'.*Left out because"):
        GradCAM(target_layer="blok")(model, inputs, targets)
    assert_no_hooks(model)


@pytest.mark.parametrize("name", CAM_NAMES)
def test_cam_method_on_a_model_without_spatial_layer(name):
    model, inputs, targets = mlp(), torch.rand(2, 3, 8, 8), torch.tensor([0, 4])
    with pytest.raises(ValueError, match=r"found no module of Sequential with a 4-D \[B, K, h, w\] output.*'gradient'"):
        build(name)(model, inputs, targets)
    assert_no_hooks(model)
    check_maps(Gradient()(model, inputs, targets), inputs)  # the gradient family works on it


@pytest.mark.parametrize("kind", ["tuple", "dict", "object"])
def test_supported_model_outputs_give_the_same_maps(kind, tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    model = tiny_cnn.eval()
    for name in ("gradient", "gradcam", "scorecam"):
        expected = build(name)(model, inputs, targets)
        assert torch.equal(build(name)(Wrapped(model, kind), inputs, targets), expected), name


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("other_dict", TypeError, r"could not be turned into logits: got dict.*pass `output_adapter=`"),
        ("string", TypeError, r"could not be turned into logits: got str"),
        ("3d", ValueError, r"shape \[B=(\d), num_classes\], got \(\1, 5, 1\)"),
    ],
)
@pytest.mark.parametrize("name", ["gradient", "gradcam", "scorecam", "smoothgrad", "cameras"])
def test_unsupported_model_output_is_a_clear_error_and_output_adapter_fixes_it(
    name, kind, error, match, tiny_cnn, probe_batch
):
    inputs, targets = probe_batch
    model = Wrapped(tiny_cnn.eval(), kind)
    with pytest.raises(error, match=match):
        build(name)(model, inputs, targets)
    assert_no_hooks(model)
    if kind == "other_dict":
        adapted = build(name)(model, inputs, targets, output_adapter=lambda out: out["scores"])
        assert torch.equal(adapted, build(name)(tiny_cnn, inputs, targets))


def test_probe_larger_than_the_dataset_warns_and_uses_all():
    with pytest.warns(SaliencyWarning, match=r"num_samples=8 images, but the validation dataset has only 5; using all"):
        probe = probe_from_dataset(make_data(5), 8)
    assert len(probe) == 5
    assert sorted(probe.indices) == [0, 1, 2, 3, 4]
    with pytest.warns(SaliencyWarning, match=r"the validation dataloader has only 3; using all 3"):
        probe = probe_from_dataloader(DataLoader(make_data(3), batch_size=2), 8)
    assert len(probe) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(probe_from_dataset(make_data(5), 5)) == 5  # exactly enough: no warning


def test_empty_validation_data_is_a_clear_error():
    empty = TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty validation dataset"):
        probe_from_dataset(empty, 4)
    with pytest.raises(ValueError, match="dataloader yielded no samples"):
        probe_from_dataloader(DataLoader(empty, batch_size=2), 4)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (torch.zeros(3, 8, 8), r"got \(3, 8, 8\)"),
        (torch.zeros(1, 2, 3, 4, 8, 8), r"got \(1, 2, 3, 4, 8, 8\)"),  # volumes [B, C, D, H, W] are probes
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floating point"),
        ([[0.0]], "got list"),
    ],
)
def test_probe_of_wrong_rank_or_dtype(inputs, match):
    with pytest.raises(ValueError, match=match):
        Probe(inputs)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (torch.zeros(3, 8, 8), r"floating-point Tensor \[B, C, H, W\], got Tensor of shape \(3, 8, 8\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), r"got Tensor of shape \(2, 3, 8, 8\) and dtype torch\.uint8"),
    ],
)
def test_methods_reject_wrong_rank_or_dtype(inputs, match, tiny_cnn):
    with pytest.raises(ValueError, match=match):
        compute_saliency(tiny_cnn, inputs, torch.zeros(inputs.shape[0], dtype=torch.long), [Gradient(), GradCAM()])
    assert_no_hooks(tiny_cnn)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_inputs_give_the_same_maps(name, probe_batch):
    inputs, targets = probe_batch
    model = model_for(name).eval()
    expected = build(name)(model, inputs, targets)
    maps = build(name)(model, inputs.to(memory_format=torch.channels_last), targets)
    check_maps(maps, inputs)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)
    probe = Probe(inputs.to(memory_format=torch.channels_last))
    assert probe.inputs.is_contiguous()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "size"), [(1, (12, 20)), (3, (9, 31)), (1, (40, 9))])
def test_one_channel_and_non_square_inputs(name, channels, size, make_batch):
    model = model_for(name, in_channels=channels).eval()
    inputs, targets = make_batch(batch=2, channels=channels, height=size[0], width=size[1])
    check_maps(build(name)(model, inputs, targets), inputs)


@pytest.mark.filterwarnings("ignore:.*feature map is 1x1.*:lightning_saliency.SaliencyWarning")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [1, 2, 5, 8])
def test_tiny_inputs_do_not_crash(name, side, make_batch):
    inputs, targets = make_batch(batch=2, height=side, width=side)
    model = model_for(name)
    before = snapshot(model)
    maps = build(name)(model, inputs, targets)
    check_maps(maps, inputs)
    assert_untouched(before, model)
    if side == 1:
        assert (maps == 0).all()  # a 1x1 map carries no spatial information: flat


def test_cam_on_a_1x1_feature_map_warns_once(tiny_cnn, make_batch):
    inputs, targets = make_batch(batch=2, height=4, width=4)  # TinyCNN's trunk ends at 1x1
    method = GradCAM()
    with pytest.warns(SaliencyWarning, match="1x1") as record:
        [method(tiny_cnn, inputs, targets) for _ in range(2)]
    assert sum(issubclass(w.category, SaliencyWarning) for w in record) == 1


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


@pytest.mark.slow
def test_huge_input_with_the_gradient_method_works_in_bounded_memory(tiny_cnn):
    inputs = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    before = _max_rss_mb()
    maps = Gradient()(tiny_cnn, inputs, torch.tensor([1]))
    check_maps(maps, inputs)
    assert maps.max() == 1.0
    # input 12 MiB; activations of the tiny trunk ~0.1 GiB; the graph is freed after the one autograd.grad call
    assert _max_rss_mb() - before < 1500


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [5, -1])
def test_targets_out_of_range(name, bad, probe_batch):
    inputs, _ = probe_batch
    targets = torch.tensor([0, 1, bad, 2])
    tiny_cnn = model_for(name)  # the CNN, or the ViT of a method that needs attention
    before = snapshot(tiny_cnn)
    match = rf"targets must be class indices in \[0, 4\] .*5 outputs, got \[{bad}(, {bad})*\]"  # IG repeats per step
    with pytest.raises(ValueError, match=match):
        build(name)(tiny_cnn, inputs, targets)
    assert_no_hooks(tiny_cnn)
    assert_untouched(before, tiny_cnn)


@pytest.mark.filterwarnings("ignore:The model's output is non-finite:lightning_saliency.SaliencyWarning")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_inputs_give_nan_free_maps_and_leave_other_images_alone(name, value, probe_batch):
    inputs, targets = probe_batch
    model = model_for(name).eval()
    bad = inputs.clone()
    bad[1, :, 3:9, 4:10] = value
    maps = build(name)(model, bad, targets)
    check_maps(maps, inputs)
    clean = build(name)(model, inputs[[0, 2, 3]], targets[[0, 2, 3]])
    torch.testing.assert_close(maps[[0, 2, 3]], clean, atol=1e-5, rtol=1e-4)


def test_non_finite_probe_warns_naming_the_images():
    x = torch.rand(3, 3, 8, 8)
    x[2, 0, 0, 0] = float("nan")
    with pytest.warns(SaliencyWarning, match=r"probe images \[2\] contain NaN or Inf"):
        probe = Probe(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe.subset([0, 2])  # already reported when the probe was made


@pytest.mark.parametrize("name", NAMES)
def test_constant_image(name):
    inputs = torch.full((2, 3, 16, 16), 0.5)
    inputs[1] = 0.0
    check_maps(build(name)(model_for(name), inputs, torch.tensor([0, 3])), inputs)


@pytest.mark.filterwarnings("ignore:The model's output is non-finite:lightning_saliency.SaliencyWarning")
@pytest.mark.parametrize("name", NAMES)
def test_model_returning_nan_gives_nan_free_maps(name, probe_batch):
    inputs, targets = probe_batch
    model = Wrapped(model_for(name), "nan")
    maps = build(name)(model, inputs, targets)
    check_maps(maps, inputs)
    assert_no_hooks(model)


def test_model_returning_nan_warns(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    with pytest.warns(SaliencyWarning, match="non-finite"):
        Gradient()(Wrapped(tiny_cnn, "nan"), inputs, targets)


def test_targets_on_another_device_are_a_clear_error(tiny_cnn, probe_batch):
    """Documented behaviour: functional calls raise (no silent copy); the callback itself moves labels."""
    inputs, targets = probe_batch
    with pytest.raises(ValueError, match="targets are on meta but inputs on cpu; put both on one device"):
        compute_saliency(tiny_cnn, inputs, targets.to("meta"), [Gradient(), GradCAM()])
    assert_no_hooks(tiny_cnn)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5, 0.5, 0.5], None, r"mean must have one value per input channel \(1\) or a single value"),
        (None, [0.2, 0.2], r"std must have one value per input channel \(1\)"),
    ],
)
def test_mean_std_of_the_wrong_length(mean, std, match):
    with pytest.raises(ValueError, match=match):
        to_display(torch.rand(2, 1, 4, 4), mean, std)
    with pytest.raises(ValueError, match="mean and std must have the same length"):
        SaliencyMonitor(mean=[0.5, 0.5], std=[0.2])


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_every_n_epochs_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match=rf"every_n_epochs must be an int >= 1, got {value!r}"):
        SaliencyMonitor(every_n_epochs=value)


def test_two_monitors_with_the_same_state_key_raise_and_distinct_prefixes_work(tmp_path):
    with pytest.raises(RuntimeError, match="state_key` must be unique"):
        trainer(tmp_path, [SaliencyMonitor(methods=["gradient"]), SaliencyMonitor(methods=["gradient"])])
    train, val = loaders()
    first = SaliencyMonitor(methods=["gradient"], num_samples=2, scores=())
    second = SaliencyMonitor(methods=["gradient"], num_samples=2, scores=(), log_prefix="saliency2")
    assert first.state_key != second.state_key
    tr = trainer(tmp_path, [first, second], max_epochs=1)
    tr.fit(TinyClassifier(), train, val)
    images = read_events(tmp_path)["images"]
    assert "saliency/gradient" in images
    assert "saliency2/gradient" in images
    assert torch.equal(first.last_maps["gradient"], second.last_maps["gradient"])


# ---------------------------------------------------------------------------------------------- through a Trainer


class DictOutputClassifier(TinyClassifier):
    """Returns ``{"scores": logits}``: not a supported output without ``output_adapter``."""

    def forward(self, x: Tensor) -> Any:  # type: ignore[override]
        return {"scores": super().forward(x)}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x)["scores"], y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        pass


class MLPClassifier(TinyClassifier):
    """No spatial layer: CAM methods cannot run on it."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Flatten()
        self.head = nn.Linear(3 * 16 * 16, 4)


BadCase = tuple[Callable[[], Any], dict[str, Any], type[Exception], str]
TRAINER_CASES: dict[str, BadCase] = {
    "labels_out_of_range": (
        TinyClassifier,
        {"probe": (torch.randn(2, 3, 16, 16), torch.tensor([0, 7]))},
        ValueError,
        r"targets must be class indices in \[0, 3\]",
    ),
    "unsupported_output": (DictOutputClassifier, {}, TypeError, "could not be turned into logits: got dict"),
    "non_spatial_layer": (TinyClassifier, {"target_layer": "head.3"}, ValueError, "CAM methods need a 4-D"),
    "no_spatial_layer": (MLPClassifier, {}, ValueError, "found no module of MLPClassifier with a 4-D"),
    "mean_std_wrong_length": (TinyClassifier, {"mean": [0.5, 0.5], "std": [0.2, 0.2]}, ValueError, r"\(3\)"),
    "valid_control": (TinyClassifier, {"target_layer": "features"}, None, ""),
}


@pytest.mark.parametrize("case", sorted(TRAINER_CASES))
def test_bad_setups_through_the_trainer_strict_raises(case, tmp_path):
    make_model, kwargs, error, match = TRAINER_CASES[case]
    train, val = loaders()
    model = make_model()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=2, scores=(), strict=True, **kwargs)
    tr = trainer(tmp_path, [monitor], max_epochs=1, logger=False)
    if error is None:
        tr.fit(model, train, val)
        assert monitor.last_maps
    else:
        with pytest.raises(error, match=match):
            tr.fit(model, train, val)
    assert_no_hooks(model)


@pytest.mark.parametrize("case", sorted(c for c, v in TRAINER_CASES.items() if v[2] is not None))
def test_bad_setups_through_the_trainer_warn_once_and_training_continues(case, tmp_path):
    make_model, kwargs, error, match = TRAINER_CASES[case]
    assert error is not None
    train, val = loaders()
    model = make_model()
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=2, scores=(), **kwargs)
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    layer_case = case in ("non_spatial_layer", "no_spatial_layer")  # only the CAM method fails; the gradient is drawn
    where = r"the method 'gradcam' failed" if layer_case else r"skipped its work"
    with pytest.warns(SaliencyWarning, match=rf"{where} at epoch 0 \(validate\).*{error.__name__}: .*{match}") as rec:
        tr.fit(model, train, val)
    assert sum(issubclass(w.category, SaliencyWarning) for w in rec) == 1
    assert tr.current_epoch == 2
    assert tr.global_step == 2 * len(train)
    assert_no_hooks(model)
    assert set(monitor.last_maps) == ({"gradient"} if layer_case else set())


def test_probe_larger_than_the_validation_set_through_the_trainer(tmp_path):
    train, val = loaders(n=12)  # 6 validation images
    monitor = SaliencyMonitor(methods=["gradient"], num_samples=50, scores=(), strict=True)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(SaliencyWarning, match="has only 6; using all 6"):
        tr.fit(TinyClassifier(), train, val)
    assert monitor.last_maps["gradient"].shape == (6, 1, 16, 16)


@pytest.mark.filterwarnings("ignore:The model's output is non-finite:lightning_saliency.SaliencyWarning")
def test_non_finite_validation_images_warn_and_maps_stay_clean(tmp_path):
    train, _ = loaders()
    data = make_data(8, seed=1)
    data.tensors[0][1, :, 2:5, 2:5] = float("nan")
    monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=4, scores=("deletion",), score_steps=2)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    with pytest.warns(SaliencyWarning, match=r"probe images \[\d\] contain NaN or Inf"):
        tr.fit(TinyClassifier(), train, DataLoader(data, batch_size=4))
    for maps in monitor.last_maps.values():
        assert torch.isfinite(maps).all()


def test_empty_validation_set_through_the_trainer(tmp_path):
    """Lightning runs no validation epoch on an empty loader, so the monitor is never asked for a probe."""
    train, _ = loaders()
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), batch_size=2)
    monitor = SaliencyMonitor(methods=["gradient"], num_samples=2, strict=True)
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.fit(TinyClassifier(), train, empty)
    assert tr.current_epoch == 1
    assert not monitor.last_maps


@pytest.mark.parametrize("side", [4, 8])
def test_tiny_images_through_the_trainer(side, tmp_path):
    train, val = loaders(size=(side, side))
    monitor = SaliencyMonitor(methods=["gradient", "gradcam", "scorecam"], num_samples=2, strict=True, score_steps=2)
    trainer(tmp_path, [monitor], max_epochs=1).fit(TinyClassifier(), train, val)
    for maps in monitor.last_maps.values():
        check_maps(maps, torch.zeros(2, 3, side, side))
