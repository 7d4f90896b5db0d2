"""Every registered method and every score with every kind of target: valid maps and scores, or a clear error
naming the target (never zeros, never a crash deep inside).

The registries parametrise these tests, so a new method, score or target kind is covered by adding it there.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_vit
from test_hardening import NAMES, assert_no_hooks, build, check_maps
from torch import Tensor, nn

from lightning_saliency import CallableTarget, MultiLabelTarget, RegressionTarget, SegmentationTarget
from lightning_saliency.methods import METHODS, compute_saliency
from lightning_saliency.metrics.registry import SCORES, ScoreContext, compute_scores
from lightning_saliency.targets import UndefinedForTarget


class Trunk(nn.Module):
    """Conv trunk (auto layer: ``features``) with a head giving ``[B, 4]`` or per-pixel ``[B, 3, H, W]``."""

    def __init__(self, dense: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.dense = dense
        if dense:
            self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 3, 1), nn.Upsample(scale_factor=2))
        else:
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        with torch.no_grad():  # positive weights: every target's CAMs are non-trivial
            for p in self.head.parameters():
                p.abs_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


INPUTS = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
MASK = torch.zeros(2, 16, 16, dtype=torch.bool)
MASK[:, 4:12, 4:12] = True
TARGETS = {
    "multi_label": (False, lambda: MultiLabelTarget(torch.tensor([3, 1]))),
    "segmentation": (True, lambda: SegmentationTarget(1, MASK)),
    "regression": (False, lambda: RegressionTarget(2)),
    "callable": (False, lambda: CallableTarget(lambda out: out[:, 0] - out[:, 1])),
}
# What a method cannot do for a target, by design: it raises naming why. RISE and the paper's Score-CAM weigh by a
# probability (regression and callable targets have none); Finer-CAM contrasts a class with its most similar
# classes (class targets only).
UNDEFINED = {(m, k) for m in ("rise", "scorecam") for k in ("regression", "callable")}
UNDEFINED |= {("finercam", k) for k in TARGETS}


def model_for(name: str, dense: bool) -> nn.Module:
    """:class:`Trunk`, or for a method that needs attention conftest's ViT (its per-pixel head: ``[B, 3, H, W]``)."""
    if "attention" in METHODS[name].needs:
        return make_tiny_vit(num_classes=3 if dense else 4, dense=dense).eval()
    return Trunk(dense).eval()


@pytest.mark.parametrize("kind", sorted(TARGETS))
@pytest.mark.parametrize("name", NAMES)
def test_every_method_explains_every_target_or_says_why_not(name, kind):
    dense, make_target = TARGETS[kind]
    model = model_for(name, dense)
    target = make_target()
    if (name, kind) in UNDEFINED:
        with pytest.raises((UndefinedForTarget, TypeError, ValueError), match=type(target).__name__):
            compute_saliency(model, INPUTS, target, [build(name)])
    else:
        (maps,) = compute_saliency(model, INPUTS, target, [build(name)])
        check_maps(maps, INPUTS)
    assert_no_hooks(model)


SCORE_NAMES = sorted(n for n, info in SCORES.items() if "previous_maps" not in info.needs)


@pytest.mark.parametrize("kind", sorted(TARGETS))
@pytest.mark.parametrize("name", SCORE_NAMES)
def test_every_score_scores_every_target_or_skips_it_with_the_reason(name, kind):
    dense, make_target = TARGETS[kind]
    model = Trunk(dense).eval()
    target = make_target()
    maps = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    ctx = ScoreContext(
        maps=maps,
        model=model,
        inputs=INPUTS,
        targets=target,
        masks=MASK,
        steps=4,
        batch_size=8,
        method=build("gradcam"),
    )
    scores = compute_scores(ctx, [name])
    if name in scores:
        values = scores[name]
        assert values.shape == (2,)
        assert not values.isnan().all(), f"{name} gave no value for {target!r}"
    else:
        reason = scores.skipped[name]
        assert reason, f"{name} skipped {target!r} without saying why"
        assert not target.has_confidence or "confidence" not in reason


class Trunk3d(nn.Module):
    """A Conv3d classifier ``[B, 1, D, H, W] -> [B, 4]`` (auto layer: ``features``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 6, 3, stride=2, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 4))
        with torch.no_grad():
            self.head[-1].weight.abs_()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@pytest.mark.parametrize("name", NAMES)
def test_every_method_maps_volumes(name):
    attention = "attention" in METHODS[name].needs  # a 3-D ViT: patch tokens of a [B, 16, d, h, w] embedding
    model = make_tiny_vit(in_channels=1, num_classes=4, dims=3).eval() if attention else Trunk3d().eval()
    volumes = torch.rand(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    overrides = {"window": 4, "stride": 2} if name == "occlusion" else {}
    (maps,) = compute_saliency(model, volumes, torch.tensor([1, 3]), [build(name, **overrides)])
    assert maps.shape == (2, 1, 4, 8, 8)
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1
    assert_no_hooks(model)
