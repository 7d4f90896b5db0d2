import pytest
import torch
from torch import nn

from lightning_saliency.metrics import SaliencyAttack, masked_attack_norm, saliency_attack_score


class Linear2(nn.Module):
    """logits = [w . x, 0] on 1x8x8 images."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def four_pixel_model() -> Linear2:
    w = torch.zeros(1, 8, 8)
    w[0, 2, 3] = w[0, 5, 5] = w[0, 1, 6] = w[0, 6, 1] = 1.0
    return Linear2(w)


X = torch.ones(2, 1, 8, 8)
T = torch.tensor([0, 0])


def test_focused_attack_analytic_and_ratio_below_one():
    model = four_pixel_model()
    maps = model.weight.detach().expand(2, 1, 8, 8)
    # masked gradient is along w (norm 2 on the 4 pixels): the margin 4 falls by 0.3 per step, flips at step 14
    norms = masked_attack_norm(model, X, T, maps != 0, step_size=0.15, max_steps=50)
    torch.testing.assert_close(norms, torch.full((2,), 14 * 0.15))
    ratio = saliency_attack_score(model, X, T, maps, fraction=4 / 64, step_size=0.1, max_steps=50, seed=0)
    assert (ratio < 1).all()


def test_caps_and_already_flipped():
    model = four_pixel_model()
    # gradient zero outside the 4 pixels: never flips, scores the cap max_steps * step_size
    outside = (model.weight.detach() == 0).expand(2, 1, 8, 8)
    torch.testing.assert_close(
        masked_attack_norm(model, X, T, outside, step_size=0.1, max_steps=10), torch.full((2,), 1.0)
    )
    # clamped to the input itself: nothing can change
    pixels = (model.weight.detach() != 0).expand(2, 1, 8, 8)
    torch.testing.assert_close(
        masked_attack_norm(model, X, T, pixels, max_steps=10, bounds=(1.0, 1.0)), torch.full((2,), 1.0)
    )
    # already misclassified: norm 0 for both attacks, ratio 1
    ratio = saliency_attack_score(model, X, torch.tensor([1, 1]), torch.rand(2, 1, 8, 8))
    torch.testing.assert_close(ratio, torch.ones(2))


def test_deterministic_under_seed_and_leaves_model_alone(tiny_cnn, probe_batch):
    inputs, _ = probe_batch
    with torch.no_grad():
        preds = tiny_cnn.eval()(inputs).argmax(1)
    tiny_cnn.train()
    maps = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    with torch.inference_mode():
        a = saliency_attack_score(tiny_cnn, inputs, preds, maps, step_size=0.5, max_steps=8, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    b = saliency_attack_score(tiny_cnn, inputs, preds, maps, step_size=0.5, max_steps=8, seed=1)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    assert (a > 0).all()
    assert all(p.grad is None for p in tiny_cnn.parameters())
    assert all(m.training for m in tiny_cnn.modules())
    assert all(torch.equal(v, state[k]) for k, v in tiny_cnn.state_dict().items())


def test_metric_and_errors():
    model = four_pixel_model()
    maps = torch.rand(2, 1, 8, 8)
    metric = SaliencyAttack(fraction=0.25, max_steps=20)
    metric.update(model, X, T, maps)
    torch.testing.assert_close(
        metric.compute(), saliency_attack_score(model, X, T, maps, fraction=0.25, max_steps=20).mean()
    )
    with pytest.raises(ValueError, match="fraction must be in"):
        saliency_attack_score(model, X, T, maps, fraction=0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 1.5"):
        SaliencyAttack(fraction=1.5)
    with pytest.raises(ValueError, match="step_size must be"):
        SaliencyAttack(step_size=0)
    with pytest.raises(ValueError, match="max_steps must be"):
        masked_attack_norm(model, X, T, maps > 0.5, max_steps=0)
