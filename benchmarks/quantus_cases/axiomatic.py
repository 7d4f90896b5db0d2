"""Quantus axiomatic metrics against ours (see ``bench_quantus.py``).

* Completeness: raw gradient x input attributions (not complete: both sides say 0 for every image; the timing is
  the point), Quantus' defaults.
* NonSensitivity: one forward per input value (Quantus 0.6 supports no other step), so both sides run on the top-left
  16 x 16 crop of the probe (768 values, 768 forwards per image; ours batches them 64 per forward).
* InputInvariance: ResNet-18's first convolution has no bias, which Quantus needs to compensate the shift; its side
  gets a copy with a zero bias added. That convolution pads, so Quantus' compensation is not exact at the border
  (ours subtracts the shift in a forward pre-hook): the agreement column counts the images where both agree.
"""

from __future__ import annotations

import copy

import numpy as np
import quantus
import torch
from torch import Tensor, nn

from lightning_saliency.methods import Gradient
from lightning_saliency.metrics.functional import completeness, input_invariance, non_sensitivity
from quantus_cases import Case, Setup

CROP = 16


def agree(ours: np.ndarray, theirs: np.ndarray) -> str:
    return f"agree on {int((np.asarray(ours) == np.asarray(theirs)).sum())}/{len(ours)}"


def _grad_x_input(setup: Setup) -> Tensor:
    x = setup.inputs.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(setup.model(x).gather(1, setup.targets[:, None]).sum(), x)
    return (g * x).detach()


def _crop(setup: Setup) -> tuple[Tensor, Tensor]:
    return setup.inputs[..., :CROP, :CROP].contiguous(), setup.maps[..., :CROP, :CROP].contiguous()


def _quantus_completeness(setup: Setup) -> np.ndarray:
    a = _grad_x_input(setup).cpu().numpy()
    x, y = setup.inputs.cpu().numpy(), setup.targets.cpu().numpy()
    return np.asarray(quantus.Completeness(disable_warnings=True)(model=setup.model, x_batch=x, y_batch=y, a_batch=a))


def _quantus_non_sensitivity(setup: Setup) -> np.ndarray:
    x, a = (t.cpu().numpy() for t in _crop(setup))
    metric = quantus.NonSensitivity(disable_warnings=True)
    return np.asarray(metric(model=setup.model, x_batch=x, y_batch=setup.targets.cpu().numpy(), a_batch=a))


def _explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: object) -> np.ndarray:
    return Gradient()(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


def _quantus_input_invariance(setup: Setup) -> np.ndarray:
    model = copy.deepcopy(setup.model)
    conv = model.conv1
    conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
    x, y, a, _ = setup.numpy()
    metric = quantus.InputInvariance(disable_warnings=True)
    return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=_explain, device="cpu"))


CASES: list[Case] = [
    Case(
        "axiomatic",
        "Completeness (gradient x input)",
        lambda s: completeness(s.model, s.inputs, s.targets, _grad_x_input(s)),
        _quantus_completeness,
        agree,
    ),
    Case(
        "axiomatic",
        f"NonSensitivity ({CROP} px crop)",
        lambda s: non_sensitivity(s.model, *_crop(s)[:1], s.targets, _crop(s)[1]),
        _quantus_non_sensitivity,
        agree,
    ),
    Case(
        "axiomatic",
        "InputInvariance (Gradient)",
        lambda s: input_invariance(Gradient(), s.model, s.inputs, s.targets, s.maps),
        _quantus_input_invariance,
        agree,
    ),
]
