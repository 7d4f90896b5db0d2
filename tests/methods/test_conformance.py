"""Every registered method obeys the same contract (zennit-style: parametrised over the registry).

The names are read from ``METHODS`` at collection time, so a method registered later is tested automatically.
Heavy methods get small constructor arguments from ``METHOD_KWARGS`` (only those their ``__init__`` accepts). Each
runs on the tiny model of ``conftest.model_for``: the CNN, or a hybrid ViT (same trunk and head) for methods whose
``needs`` name attention.
"""

from __future__ import annotations

import inspect
import random
from typing import Any

import numpy as np
import pytest
import torch
from conftest import model_for
from scipy.stats import spearmanr
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

from lightning_saliency import Precision
from lightning_saliency.methods import METHODS, SaliencyMethod, compute_saliency, get_method

NAMES = sorted(METHODS)

# Keep each case fast; keys a constructor does not accept are dropped (so a renamed option degrades gracefully).
METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "smoothgrad": {"num_samples": 4, "batch_size": 8},
    "scorecam": {"batch_size": 16},
    "cameras": {"scales": (1.0, 1.5), "batch_size": 4},
    "integrated_gradients": {"steps": 4, "internal_batch_size": 8},
    "ablationcam": {"batch_size": 32},
    # Zeroing a window moves the tiny CNN's logits (~0.2) by ~1e-3, one bf16 ulp of them: the bf16 test would compare
    # rounding. A far baseline moves them by ~0.1 (a trained model's logits move that much when zeroed).
    "occlusion": {"window": 16, "stride": 8, "baseline": 20.0, "batch_size": 64},
    "rise": {"num_masks": 32, "batch_size": 64},
    "gradient_shap": {"num_samples": 4, "batch_size": 8},
    "smoothgrad_sq": {"num_samples": 4, "batch_size": 8},
    "vargrad": {"num_samples": 4, "batch_size": 8},
    # Grad-CAM weights of a class's difference with its similar classes can be all negative on the tiny CNN (an
    # all-zero map, which the contract test takes for a failure); LayerCAM's are non-negative. Grad-CAM's base is
    # compared with pytorch-grad-cam in tests/methods/test_peers_round2.py.
    "finercam": {"base": "layercam"},
}

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def build(name: str, **overrides: Any) -> SaliencyMethod:
    cls = METHODS[name]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {**METHOD_KWARGS.get(name, {}), **overrides}.items() if k in params}
    return cls(**kwargs)


def assert_no_hooks(model: nn.Module) -> None:
    for mod_name, module in model.named_modules():
        for attr in HOOK_DICTS:
            assert not getattr(module, attr, None), f"{mod_name or 'model'}.{attr} left: {getattr(module, attr)}"
    for p_name, param in model.named_parameters():
        assert not param._backward_hooks, f"tensor hook left on {p_name}"
    for attr in GLOBAL_HOOK_DICTS:
        assert not getattr(module_globals, attr, None), f"global {attr} left"


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), f"{key} changed"
    for key, grad in before["grad"].items():
        if grad is None:
            assert after["grad"][key] is None, f"{key}.grad was None, now set"
        else:
            assert torch.equal(grad, after["grad"][key]), f"{key}.grad changed"


def rng_states() -> tuple[Tensor, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def assert_same_rng(before: tuple[Tensor, Any, Any], after: tuple[Tensor, Any, Any]) -> None:
    assert torch.equal(before[0], after[0]), "torch RNG advanced"
    assert before[1] == after[1], "python random advanced"
    np_before, np_after = before[2], after[2]
    assert np_before[0] == np_after[0]
    assert np.array_equal(np_before[1], np_after[1]), "numpy RNG advanced"
    assert np_before[2:] == np_after[2:]


def check_contract(maps: Tensor, inputs: Tensor) -> None:
    b, _, h, w = inputs.shape
    assert maps.shape == (b, 1, h, w)
    assert maps.dtype == torch.float32
    assert maps.grad_fn is None
    assert not maps.requires_grad
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


def rank_corr(a: Tensor, b: Tensor) -> float:
    return float(np.mean([spearmanr(x.flatten().numpy(), y.flatten().numpy())[0] for x, y in zip(a, b, strict=True)]))


def test_registry_is_populated_and_consistent():
    assert {"gradient", "gradient_x_input", "smoothgrad", "gradcam", "gradcam++"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name
        assert get_method(name, **{}).label == name


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name, probe_batch):
    model = model_for(name).eval()
    inputs, targets = probe_batch
    maps = build(name)(model, inputs, targets)
    check_contract(maps, inputs)
    assert (maps.flatten(1).amax(1) == 1).all(), "each non-constant map is min-max normalised"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name, probe_batch):
    model = model_for(name).eval()
    inputs, targets = probe_batch
    method = build(name)
    first = method(model, inputs, targets)
    assert torch.equal(first, method(model, inputs, targets))
    assert torch.equal(first, build(name)(model, inputs, targets)), "a fresh instance gives the same maps"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "height", "width"), [(3, 40, 24), (1, 32, 32), (1, 24, 40)])
def test_non_square_and_single_channel(name, channels, height, width, make_batch):
    model = model_for(name, in_channels=channels).eval()
    inputs, targets = make_batch(batch=2, channels=channels, height=height, width=width)
    maps = build(name)(model, inputs, targets)
    check_contract(maps, inputs)


@pytest.mark.parametrize("name", NAMES)
def test_model_and_global_state_untouched(name, probe_batch):
    model = model_for(name)  # train mode: BatchNorm would update its running stats, Dropout would draw
    model.features.eval()  # mixed modes: a frozen, eval-mode backbone under a training head ...
    model.features[1].train()  # ... with one submodule in train mode inside it
    for param in model.features[0].parameters():
        param.requires_grad_(False)
    model.head[2].weight.grad = torch.full_like(model.head[2].weight, 0.5)  # accumulated grads must survive
    model.features[3].weight.grad = torch.randn_like(model.features[3].weight)
    inputs, targets = probe_batch
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before, rng_before = snapshot(model), rng_states()
    assert model.head[2].bias.grad is None

    maps = build(name)(model, inputs, targets)

    check_contract(maps, inputs)
    assert_same_snapshot(before, snapshot(model))
    assert_same_rng(rng_before, rng_states())
    assert_no_hooks(model)
    assert model.training
    assert not model.features.training
    assert model.features[1].training


class Bomb(nn.Module):
    """Raises on its ``(after + 1)``-th forward."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom inside forward")
        return x


@pytest.mark.parametrize("name", NAMES)
def test_hooks_removed_and_state_restored(name, probe_batch):
    inputs, targets = probe_batch
    raised = []
    for after in (0, 1, 2):
        model = model_for(name)
        model.head = nn.Sequential(model.head[0], Bomb(after), *list(model.head)[1:])  # after the conv trunk
        method = build(name)
        before, rng_before = snapshot(model), rng_states()
        try:
            method(model, inputs, targets)
        except RuntimeError as err:
            if "boom" not in str(err):
                raise
            raised.append(after)
        assert_no_hooks(model)
        assert_same_snapshot(before, snapshot(model))
        assert_same_rng(rng_before, rng_states())
    assert 0 in raised, "the first forward must have raised"
    model = model_for(name).eval()
    build(name)(model, inputs, targets)
    assert_no_hooks(model)


@pytest.mark.parametrize("name", NAMES)
def test_inference_mode_and_no_grad(name, probe_batch):
    model = model_for(name).eval()
    inputs, targets = probe_batch
    expected = build(name)(model, inputs, targets)
    with torch.inference_mode():  # Lightning's validate()/test(): even the probe batch is an inference tensor
        inf_inputs, inf_targets = inputs.clone(), targets.clone()
        assert inf_inputs.is_inference()
        maps = build(name)(model, inf_inputs, inf_targets)
    check_contract(maps, inputs)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    with torch.no_grad():  # the validation loop during fit()
        maps = build(name)(model, inputs, targets)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["bf16-mixed", "bf16-true"])
def test_bf16_close_to_fp32(name, kind, probe_batch):
    model = model_for(name).eval()
    inputs, targets = probe_batch
    expected = build(name)(model, inputs, targets)
    if kind == "bf16-mixed":  # what Lightning's MixedPrecision plugin gives
        bf16 = Precision(forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    else:  # HalfPrecision plugin: bf16 weights, inputs cast before forward
        model = model.to(torch.bfloat16)
        bf16 = Precision(convert_input=lambda x: x.to(torch.bfloat16))
    maps = build(name)(model, inputs, targets, precision=bf16)
    check_contract(maps, inputs)
    assert not torch.equal(maps, expected), "autocast had no effect: the forward context was not used"
    corr = rank_corr(maps, expected)
    assert corr > 0.95, f"bf16 maps disagree with fp32 maps (mean Spearman {corr:.3f})"
    assert (maps - expected).abs().mean() < 0.05


@pytest.mark.parametrize("name", NAMES)
def test_batch_independence(name, probe_batch):
    model = model_for(name).eval()
    inputs, targets = probe_batch
    method = build(name)
    batched = method(model, inputs, targets)
    for i in range(inputs.shape[0]):
        alone = method(model, inputs[i : i + 1], targets[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=1e-4, msg=f"image {i}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_input_gives_no_nan(name, value):
    model = model_for(name).eval()
    inputs = torch.full((2, 3, 32, 32), value)
    maps = build(name)(model, inputs, torch.tensor([0, 3]))
    check_contract(maps, inputs)


def test_engine_shared_pass_equals_separate_calls(make_cnn, probe_batch):
    model = make_cnn().eval()
    inputs, targets = probe_batch
    names = [
        name for name in NAMES if not METHODS[name].needs
    ]  # the attention methods: tests/methods/test_attention.py
    methods = [build(name) for name in names]
    together = compute_saliency(model, inputs, targets, methods)
    assert len(together) == len(methods)
    for name, maps in zip(names, together, strict=True):
        torch.testing.assert_close(maps, build(name)(model, inputs, targets), rtol=0, atol=1e-5, msg=name)
