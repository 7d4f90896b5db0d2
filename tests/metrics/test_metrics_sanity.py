import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_saliency.methods import GradCAM, Gradient, SaliencyMethod
from lightning_saliency.metrics import ModelRandomisation, model_randomisation_score, randomisable_layers


class InputEdges(SaliencyMethod):
    """A map that ignores the model entirely: it must survive any weight randomisation."""

    name = "input_edges"

    def compute(self, model, inputs, targets, run):
        gray = inputs.mean(1, keepdim=True)
        dy = F.pad((gray[..., 1:, :] - gray[..., :-1, :]).abs(), (0, 0, 0, 1))
        dx = F.pad((gray[..., :, 1:] - gray[..., :, :-1]).abs(), (0, 1, 0, 0))
        return dx + dy


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
    )


def assert_same(before, after):
    state0, modes0, grads0 = before
    state1, modes1, grads1 = after
    assert state0.keys() == state1.keys()
    for k in state0:
        assert torch.equal(state0[k], state1[k]), k
    assert modes0 == modes1
    for (rg0, g0), (rg1, g1) in zip(grads0, grads1, strict=True):
        assert rg0 == rg1
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)


def test_live_model_untouched_and_edges_insensitive(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    tiny_cnn.features[0].eval()  # a mixture of modes
    tiny_cnn.features[3].weight.requires_grad_(False)
    tiny_cnn.head[2].weight.grad = torch.randn_like(tiny_cnn.head[2].weight)
    before = snapshot(tiny_cnn)
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    with torch.inference_mode():  # as in trainer.validate()/test()
        edges = model_randomisation_score(tiny_cnn, inputs, targets, InputEdges(), num_layers=None, cascading=True)
    assert torch.equal(torch.rand(1), expected_next)
    assert_same(before, snapshot(tiny_cnn))
    assert edges.shape == (len(randomisable_layers(tiny_cnn)), 4)
    torch.testing.assert_close(edges, torch.ones_like(edges))


def test_gradient_decorrelates_more_than_edges(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    grads = model_randomisation_score(tiny_cnn, inputs, targets, Gradient(), num_layers=None, cascading=True)
    assert ((grads >= 0) & (grads <= 1)).all()
    assert grads[-1].mean() < 0.5  # all layers random: the gradient map no longer matches
    one = model_randomisation_score(tiny_cnn, inputs, targets, "gradient", num_layers=None)
    assert one.shape == (1, 4)
    torch.testing.assert_close(one[0], grads[-1])  # cascading's last stage = all layers at once
    signed = model_randomisation_score(tiny_cnn, inputs, targets, Gradient(), num_layers=None, absolute=False)
    torch.testing.assert_close(signed.abs(), one)


def test_deterministic_and_precomputed_maps(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    a = model_randomisation_score(tiny_cnn, inputs, targets, GradCAM(), num_layers=2, seed=3)
    b = model_randomisation_score(tiny_cnn, inputs, targets, GradCAM(), num_layers=2, seed=3)
    assert torch.equal(a, b)
    maps = GradCAM()(tiny_cnn, inputs, targets)
    c = model_randomisation_score(tiny_cnn, inputs, targets, GradCAM(), num_layers=2, seed=3, maps=maps)
    torch.testing.assert_close(a, c)
    assert not torch.isnan(a).any()


def test_layers_and_errors(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    names = randomisable_layers(tiny_cnn)
    assert names[-1] == "head.2"
    assert names[0] == "features.0"
    assert "features.1" in names  # BatchNorm has reset_parameters and affine parameters
    with pytest.raises(ValueError, match="num_layers must be None or an int"):
        model_randomisation_score(tiny_cnn, inputs, targets, Gradient(), num_layers=len(names) + 1)
    with pytest.raises(ValueError, match="num_layers must be None or an int"):
        model_randomisation_score(nn.Sequential(nn.Flatten()), inputs, targets, Gradient())


def test_metric_equals_function(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    metric = ModelRandomisation(num_layers=3)
    metric.update(tiny_cnn, inputs[:2], targets[:2], Gradient())
    metric.update(tiny_cnn, inputs[2:], targets[2:], Gradient())
    expected = torch.cat(
        [
            model_randomisation_score(tiny_cnn, x, t, Gradient(), num_layers=3)[0]
            for x, t in ((inputs[:2], targets[:2]), (inputs[2:], targets[2:]))
        ]
    ).mean()
    torch.testing.assert_close(metric.compute(), expected)
    assert ModelRandomisation.higher_is_better is False
