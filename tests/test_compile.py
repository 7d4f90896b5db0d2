"""Compiled models (``torch.compile``) get the maps of eager mode, and a gradient that autograd leaves undefined
is an error, never a zero map.

A forward hook inside a compiled graph records an activation that the graph's autograd does not use, so
``autograd.grad(..., allow_unused=True)`` returned ``None`` for it and the CAM maps were silently all zeros. The
saliency passes now run the model's own Python code (``torch.compiler.set_stance("force_eager")``).
"""

from __future__ import annotations

import pytest
import torch
from _lightning_models import TinyClassifier, loaders, trainer
from conftest import make_probe, make_tiny_cnn
from test_hardening import CNN_NAMES, assert_no_hooks, build
from torch import Tensor, nn

from lightning_saliency import SaliencyMonitor, compute_saliency
from lightning_saliency.methods.base import Run, run_gradient_pass

pytestmark = pytest.mark.filterwarnings("ignore:.*cpp_extension.*")


@pytest.fixture(scope="module")
def eager_and_compiled() -> tuple[nn.Module, nn.Module, Tensor, Tensor]:
    model = make_tiny_cnn().eval()
    compiled = torch.compile(model)
    inputs, targets = make_probe()
    with torch.no_grad():
        compiled(inputs)  # compiled for real: a graph exists before the saliency passes run
    return model, compiled, inputs, targets


@pytest.mark.slow
@pytest.mark.parametrize("name", CNN_NAMES)
def test_every_method_on_a_compiled_model_equals_eager(eager_and_compiled, name):
    model, compiled, inputs, targets = eager_and_compiled
    (eager_maps,) = compute_saliency(model, inputs, targets, [build(name)])
    (compiled_maps,) = compute_saliency(compiled, inputs, targets, [build(name)])
    assert float(compiled_maps.flatten(1).amax(1).min()) > 0, "a compiled model gave an empty map"
    torch.testing.assert_close(compiled_maps, eager_maps, rtol=0, atol=1e-6)
    assert_no_hooks(model)


@pytest.mark.slow
def test_shared_pass_on_compiled_model_and_compiled_submodule_equal_eager(eager_and_compiled):
    model, compiled, inputs, targets = eager_and_compiled
    methods = [build(n) for n in ("gradient", "gradcam", "gradcam++")]
    eager_maps = compute_saliency(model, inputs, targets, methods)
    for variant in (compiled, _with_compiled_trunk(model)):
        for ours, eager in zip(compute_saliency(variant, inputs, targets, methods), eager_maps, strict=True):
            torch.testing.assert_close(ours, eager, rtol=0, atol=1e-6)


def _with_compiled_trunk(model: nn.Module) -> nn.Module:
    """The same weights with only the conv trunk compiled (as users compile a backbone)."""
    copy = make_tiny_cnn().eval()
    copy.load_state_dict(model.state_dict())
    copy.features = torch.compile(copy.features)
    with torch.no_grad():
        copy(make_probe()[0])
    return copy


class _Bypass(nn.Module):
    """Runs ``side`` but computes the logits without it: a captured output the logits do not depend on."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Conv2d(3, 4, 3, padding=1)
        self.trunk = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

    def forward(self, x: Tensor) -> Tensor:
        self.side(x)
        return self.head(self.trunk(x))


def test_an_undefined_layer_gradient_is_an_error_naming_the_layer_not_a_zero_map():
    model, (inputs, targets) = _Bypass().eval(), make_probe()
    with pytest.raises(RuntimeError, match=r"do not depend through autograd on target layer 'side' \(Conv2d\)"):
        run_gradient_pass(model, inputs, targets, [model.side], Run(), input_grads=True)
    with pytest.raises(RuntimeError, match="target layer 'side'"):
        compute_saliency(model, inputs, targets, [build("gradcam", target_layer="side"), build("gradient")])
    assert_no_hooks(model)


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(5))

    def forward(self, x: Tensor) -> Tensor:
        return self.bias.expand(x.shape[0], 5)


def test_logits_that_ignore_the_input_are_an_error_not_a_zero_gradient():
    inputs, targets = make_probe()
    with pytest.raises(RuntimeError, match="do not depend through autograd on the input"):
        compute_saliency(_Constant(), inputs, targets, [build("gradient")])


@pytest.mark.slow
def test_trainer_validate_on_a_compiled_module_logs_the_eager_maps(tmp_path):
    _, val = loaders()
    methods = ["gradient", "gradcam", "gradcam++"]
    maps = {}
    for kind in ("eager", "compiled"):
        torch.manual_seed(0)
        model = TinyClassifier()
        monitor = SaliencyMonitor(methods=methods, num_samples=3, scores=(), strict=True)
        tr = trainer(tmp_path / kind, [monitor], inference_mode=True)
        tr.validate(torch.compile(model) if kind == "compiled" else model, val, verbose=False)
        maps[kind] = monitor.last_maps
        assert_no_hooks(model)
    for label in methods:
        assert float(maps["compiled"][label].flatten(1).amax(1).min()) > 0, label
        torch.testing.assert_close(maps["compiled"][label], maps["eager"][label], rtol=0, atol=1e-6)
