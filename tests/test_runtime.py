"""Runtime helpers: autograd under inference mode, mode restoration, RNG forking, logits, input checks."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from lightning_saliency import eval_mode, gradients_enabled, preserved_rng
from lightning_saliency._runtime import to_logits
from lightning_saliency.methods import GradCAM, Gradient, compute_saliency


def test_gradients_enabled_inside_inference_mode_and_no_grad():
    for outer in (torch.inference_mode, torch.no_grad):
        with outer():
            with gradients_enabled():
                assert torch.is_grad_enabled()
                assert not torch.is_inference_mode_enabled()
                x = torch.ones(3, requires_grad=True)
                (grad,) = torch.autograd.grad((x * x).sum(), x)
            assert not torch.is_grad_enabled()
        assert torch.equal(grad, torch.full((3,), 2.0))
    assert torch.is_grad_enabled()


def test_gradients_enabled_restores_inference_mode_after_error():
    with torch.inference_mode():
        with pytest.raises(KeyError), gradients_enabled():
            raise KeyError
        assert torch.is_inference_mode_enabled()
        assert not torch.is_grad_enabled()


def mixed_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Dropout(), nn.ReLU())).train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    model[2][1].eval()
    return model


def test_eval_mode_restores_each_submodule():
    model = mixed_model()
    before = [m.training for m in model.modules()]
    with eval_mode(model) as same:
        assert same is model
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


def test_eval_mode_restores_after_error():
    model = mixed_model()
    before = [m.training for m in model.modules()]
    with pytest.raises(ValueError, match="inside"), eval_mode(model):
        raise ValueError("inside")
    assert [m.training for m in model.modules()] == before


def test_preserved_rng_restores_torch_numpy_random():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    with preserved_rng():
        torch.rand(100), np.random.rand(100), random.random()
        torch.manual_seed(99)
    assert torch.equal(torch.rand(2), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])
    assert random.random() == expected[2]


def test_preserved_rng_restores_after_error():
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()

    def draw_then_fail() -> None:
        with preserved_rng([torch.device("cpu")]):
            torch.rand(5), random.random(), np.random.rand()
            raise KeyError

    with pytest.raises(KeyError):
        draw_then_fail()
    assert torch.equal(torch.get_rng_state(), state[0])
    assert random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])


@pytest.mark.parametrize(
    "output",
    [
        torch.ones(2, 5),
        (torch.ones(2, 5), torch.zeros(7)),
        [torch.ones(2, 5)],
        ((torch.ones(2, 5),), "aux"),
        {"logits": torch.ones(2, 5), "loss": torch.zeros(())},
        SimpleNamespace(logits=torch.ones(2, 5)),
    ],
    ids=["tensor", "tuple", "list", "nested", "dict", "attribute"],
)
def test_to_logits_accepts_common_outputs(output):
    assert torch.equal(to_logits(output, batch_size=2), torch.ones(2, 5))


def test_to_logits_adapter_and_errors():
    assert to_logits({"out": torch.ones(2, 3)}, 2, adapter=lambda o: o["out"]).shape == (2, 3)
    for bad in ({"scores": torch.ones(2, 3)}, "text", (), None):
        with pytest.raises(TypeError, match=r"could not be turned into logits.*output_adapter"):
            to_logits(bad, 2)
    with pytest.raises(ValueError, match=r"shape \[B=2, num_classes\], got \(2, 3, 4\)"):
        to_logits(torch.ones(2, 3, 4), 2)
    with pytest.raises(ValueError, match=r"got \(3, 5\)"):
        to_logits(torch.ones(3, 5), 2)


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(self.conv(x).relu().mean((2, 3))), "features": x}


def test_methods_read_dict_outputs_and_adapters():
    x, t = torch.rand(2, 3, 8, 8), torch.tensor([0, 4])
    maps = compute_saliency(DictNet(), x, t, [Gradient(), GradCAM()])
    assert all(m.shape == (2, 1, 8, 8) for m in maps)
    with pytest.raises(TypeError, match="could not be turned into logits"):
        Gradient()(DictNet(), x, t, output_adapter=lambda o: o.get("missing"))


def test_targets_out_of_range_name_the_values(tiny_cnn, probe_batch):
    inputs, _ = probe_batch
    with pytest.raises(ValueError, match=r"\[0, 4\] for a model with 5 outputs, got \[5, -1\]"):
        Gradient()(tiny_cnn, inputs, torch.tensor([0, 5, -1, 2]))
    with pytest.raises(ValueError, match=r"got \[7\]"):
        GradCAM()(tiny_cnn, inputs, torch.tensor([0, 1, 7, 2]))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (torch.rand(3, 32, 32), r"shape \(3, 32, 32\)"),
        (torch.rand(1, 4, 2, 3, 32, 32), r"shape \(1, 4, 2, 3, 32, 32\)"),  # 5-D volumes are inputs; 6-D is not
        (torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), "torch.uint8"),
    ],
    ids=["rank3", "rank6", "uint8"],
)
def test_bad_inputs_raise(inputs, message, tiny_cnn):
    with pytest.raises(ValueError, match=f"floating-point Tensor \\[B, C, H, W\\], got .*{message}"):
        Gradient()(tiny_cnn, inputs, torch.zeros(inputs.shape[0], dtype=torch.long))


def test_bad_targets_raise(tiny_cnn, probe_batch):
    inputs, _ = probe_batch
    with pytest.raises(ValueError, match=r"integer Tensor \[B=4\].*shape \(3,\)"):
        Gradient()(tiny_cnn, inputs, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"dtype torch\.float32"):
        Gradient()(tiny_cnn, inputs, torch.zeros(4))
    with pytest.raises(ValueError, match="integer Tensor"):
        Gradient()(tiny_cnn, inputs, [0, 1, 2, 3])  # type: ignore[arg-type]
