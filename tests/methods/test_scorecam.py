import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn
from torchvision.models import resnet18

from lightning_saliency import Precision
from lightning_saliency.methods import METHODS, ScoreCAM, get_method


def _spearman(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return [float(spearmanr(x.ravel(), y.ravel())[0]) for x, y in zip(a, b, strict=True)]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, targets


@pytest.fixture(scope="module")
def pgc_maps(resnet):
    from pytorch_grad_cam import ScoreCAM as PGCScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, targets = resnet
    model = copy.deepcopy(model)
    with PGCScoreCAM(model=model, target_layers=[model.layer3]) as cam:
        cam.batch_size = 64
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])  # [B,H,W]


@pytest.fixture(scope="module")
def paper_maps(resnet):
    model, x, targets = resnet
    return ScoreCAM(target_layer="layer3", batch_size=64)(model, x, targets)[:, 0]


class _DeadChannels(nn.Module):
    """Conv + ReLU where channels 0-2 are dead (constant 0) and channel 3 is constant 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[:4] = 0
            self.conv.bias[:3] = -1.0
            self.conv.bias[3] = 1.0
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)))


def _reference_scorecam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The paper / haofanwang's code, one image and one channel at a time (constant maps: zero mask)."""
    maps = []
    for img, t in zip(x, targets, strict=True):
        acts = {}
        handle = model.act.register_forward_hook(lambda m, i, o, acts=acts: acts.setdefault("a", o.detach()))
        with torch.no_grad():
            model(img[None])
        handle.remove()
        a = acts["a"][0]  # [K,h,w]
        cam = torch.zeros(a.shape[1:])
        for k in range(a.shape[0]):
            up = F.interpolate(a[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            with torch.no_grad():
                prob = model(img[None] * mask).softmax(1)[0, t]
            cam += prob * a[k]
        maps.append(F.relu(cam))
    raw = torch.stack(maps)[:, None]
    up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)
    lo, hi = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
    return (up - lo) / (hi - lo)


def test_registered():
    assert METHODS["scorecam"] is ScoreCAM
    assert isinstance(get_method("scorecam", top_k=4), ScoreCAM)


def test_matches_reference_and_scores_constant_channels_once():
    model = _DeadChannels().eval()
    x = torch.randn(3, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 4, 2])
    rows = []
    handle = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        maps = ScoreCAM(target_layer="act", batch_size=5)(model, x, targets)
    finally:
        handle.remove()
    torch.testing.assert_close(maps, _reference_scorecam(model, x, targets), atol=1e-5, rtol=1e-4)
    # 1 activation forward of the batch, 1 zero input for all 3*4 constant channels, 3*4 masked inputs in chunks of 5
    assert rows == [3, 1, 5, 5, 2]


def test_batch_size_does_not_change_maps():
    model = _DeadChannels().eval()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 1, 3])
    a = ScoreCAM(target_layer="act", batch_size=1)(model, x, targets)
    b = ScoreCAM(target_layer="act", batch_size=64)(model, x, targets)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_pgc_variant_reproduces_pytorch_grad_cam(resnet, pgc_maps):
    model, x, targets = resnet
    ours = ScoreCAM(target_layer="layer3", batch_size=64, weights="softmax_over_channels")(model, x, targets)[:, 0]
    assert min(_spearman(ours, pgc_maps)) >= 0.99


def test_paper_weights_against_pytorch_grad_cam(resnet, pgc_maps, paper_maps):
    # On this random ResNet the target-class probabilities of the masked inputs are nearly flat, as are pgc's
    # softmax-over-channels weights, so both maps are close to ReLU(sum_k A_k) and rank pixels alike.
    assert min(_spearman(paper_maps, pgc_maps)) >= 0.99


def test_top_k_approximates_exact(resnet, paper_maps):
    model, x, targets = resnet
    approx = ScoreCAM(target_layer="layer3", batch_size=64, top_k=64)(model, x, targets)[:, 0]
    rho = _spearman(approx, paper_maps)
    assert min(rho) >= 0.9, rho
    assert not torch.allclose(approx, paper_maps)  # it is an approximation: 64 of 256 channels


def test_top_k_at_least_channel_count_is_exact():
    model = _DeadChannels().eval()
    x, targets = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    torch.testing.assert_close(
        ScoreCAM(target_layer="act", top_k=8)(model, x, targets), ScoreCAM(target_layer="act")(model, x, targets)
    )


def test_inference_mode_and_bf16_autocast():
    model = _DeadChannels().eval()
    x, targets = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    with torch.inference_mode():
        maps = ScoreCAM(target_layer="act", top_k=3)(model, x, targets)
    assert maps.shape == (2, 1, 8, 8)
    assert maps.dtype == torch.float32
    assert not maps.isnan().any()
    bf16 = Precision(forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    maps = ScoreCAM(target_layer="act")(model, x, targets, precision=bf16)
    assert maps.dtype == torch.float32
    assert not maps.isnan().any()
    assert maps.max() == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1.*got 0"),
        ({"weights": "logit"}, "weights must be one of.*got 'logit'"),
        ({"top_k": 0}, "top_k must be None.*got 0"),
        ({"top_k": 2.5}, "top_k must be None.*got 2.5"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScoreCAM(**kwargs)
