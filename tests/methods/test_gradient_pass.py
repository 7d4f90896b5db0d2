"""The shared gradient pass: a one-layer pass records autograd only from the layer on, with equal gradients."""

import pytest
import torch
from torch import nn

from lightning_saliency.methods.base import Run, run_gradient_pass


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_one_layer_pass_equals_full_graph_and_records_nothing_below_the_layer():
    net = _net()
    x, targets = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 2])
    seen = {}
    hooks = [net[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.requires_grad)) for i in (0, 3)]
    try:
        short = run_gradient_pass(net, x, targets, [net[2]], Run(), input_grads=False)
        below, above = seen[0], seen[3]
        full = run_gradient_pass(net, x, targets, [net[2]], Run(), input_grads=True)  # input grads: whole graph
    finally:
        for h in hooks:
            h.remove()
    assert not below  # no autograd graph (nor saved activations) for the layers before the target
    assert above
    assert seen[0]  # the full pass did record them
    torch.testing.assert_close(short.layer_grads[net[2]], full.layer_grads[net[2]])
    torch.testing.assert_close(short.activations[net[2]], full.activations[net[2]])
    assert torch.is_grad_enabled()


def test_one_layer_pass_restores_grad_mode_and_hooks_after_an_error():
    net = _net()

    def boom(*_):
        raise ValueError("downstream failure")

    handle = net[4].register_forward_hook(boom)
    try:
        with torch.no_grad():
            with pytest.raises(ValueError, match="downstream failure"):
                run_gradient_pass(net, torch.randn(1, 3, 8, 8), torch.tensor([0]), [net[2]], Run(), input_grads=False)
            assert not torch.is_grad_enabled()  # the hook switched it on mid-forward; the caller's mode is back
        with pytest.raises(ValueError, match="downstream failure"):
            run_gradient_pass(net, torch.randn(1, 3, 8, 8), torch.tensor([0]), [net[2]], Run(), input_grads=False)
        assert torch.is_grad_enabled()
    finally:
        handle.remove()
    assert not net[2]._forward_hooks


def test_layer_off_the_path_to_the_logits_is_named():
    class SideBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 2, 1)
            self.body = _net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.body(x)
            self.side(x)  # runs after the logits, which cannot depend on it
            return logits

    model = SideBranch().eval()
    with pytest.raises(RuntimeError, match="logits do not depend on target layer Conv2d"):
        run_gradient_pass(model, torch.randn(1, 3, 8, 8), torch.tensor([0]), [model.side], Run(), input_grads=False)
