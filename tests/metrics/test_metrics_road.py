"""ROAD: the torch imputation equals the authors' scipy solve (via pytorch-grad-cam), and so do the scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_to_peer
from torch import nn
from torchvision.models import resnet18

from lightning_saliency.metrics import ROADCombined, noisy_linear_imputation, road_curves, road_score
from lightning_saliency.metrics.functional import road_masks

pgc_road = pytest.importorskip("pytorch_grad_cam.metrics.road")
pgc_conf = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # inside pgc's numpy calls


def smooth_maps(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    raw = torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed))
    return F.avg_pool2d(raw, 7, 1, 3)


@pytest.mark.parametrize("percentage", [10, 50, 90])
def test_imputation_equals_the_authors_sparse_solve(percentage):
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(1))  # non-square
    maps = smooth_maps(2, 24, 40)
    removed = road_masks(maps, percentage, most_relevant_first=True)
    assert abs(removed.float().mean().item() - percentage / 100) < 0.01
    ours = noisy_linear_imputation(x, removed, noise=0.0)
    theirs = torch.stack([pgc_road.NoisyLinearImputer(noise=0.0)(x[i], (~removed[i, 0]).float()) for i in range(2)])
    # Not only rounding: conjugate gradients in float32 stop at relative residual 1e-6, the authors solve directly in
    # float64 (documented: about 5e-6 = 42 ulps on 64x64 images). Measured 2, 4, 9.5 ulps of 1 (10, 50, 90 %). 128.
    assert_close_to_peer(ours, theirs, ulps=128, why=f"imputation ({percentage} % removed) vs pgc NoisyLinearImputer")
    assert torch.equal(ours[~removed.expand_as(x)], x[~removed.expand_as(x)]), "kept pixels untouched"
    assert not torch.allclose(ours, x, atol=1e-2), "something was refilled"


def test_masks_follow_pytorch_grad_cam_percentiles():
    maps = smooth_maps(1, 16, 16)
    cam = maps[0, 0].numpy()
    for pct in (20, 70):
        keep_morf = cam < np.percentile(cam, 100 - pct)  # RemoveMostRelevantFirst(percentile=100 - pct)
        keep_lerf = (1 - cam) < np.percentile(1 - cam, 100 - pct)  # RemoveLeastRelevantFirst
        assert np.array_equal(~road_masks(maps, pct, most_relevant_first=True)[0, 0].numpy(), keep_morf)
        assert np.array_equal(~road_masks(maps, pct, most_relevant_first=False)[0, 0].numpy(), keep_lerf)


def test_noise_is_seeded_shared_and_only_on_removed_pixels():
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    removed = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    removed[:, :, 2:6, 2:6] = True
    rng = torch.get_rng_state()
    a = noisy_linear_imputation(x, removed, noise=0.01, seed=3)
    assert torch.equal(rng, torch.get_rng_state()), "private generator"
    assert torch.equal(a, noisy_linear_imputation(x, removed, noise=0.01, seed=3))
    assert not torch.equal(a, noisy_linear_imputation(x, removed, noise=0.01, seed=4))
    plain = noisy_linear_imputation(x, removed, noise=0.0)
    delta = a - plain
    assert delta[~removed.expand_as(x)].abs().max() == 0
    assert 0.005 < delta[removed.expand_as(x)].std() < 0.02
    torch.testing.assert_close(a[1:2], noisy_linear_imputation(x[1:2], removed[1:2], noise=0.01, seed=3))
    everything = noisy_linear_imputation(x, torch.ones(3, 1, 8, 8, dtype=torch.bool), noise=0.0)
    assert torch.equal(everything, torch.zeros_like(x)), "no data left: zeros, never NaN"
    with pytest.raises(ValueError, match="removed must be a bool mask"):
        noisy_linear_imputation(x, removed[:, :, :4])


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return resnet18(weights=None, num_classes=10).eval()


def test_road_scores_equal_pytorch_grad_cam(resnet):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([3, 7])
    maps = smooth_maps(2, 32, 32, seed=5)
    levels = (20, 50, 80)
    morf, lerf = road_curves(resnet, x, targets, maps, percentages=levels, noise=0.0)
    # pgc (noise 0 for identical imputations): its curves are differences to the unperturbed softmax score.
    softmax = [pgc_targets.ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    cams = maps[:, 0].numpy()
    for j, pct in enumerate(levels):
        for mode, ours in (("MostRelevantFirst", morf), ("LeastRelevantFirst", lerf)):
            perturb = getattr(pgc_conf, f"Remove{mode}")(100 - pct, pgc_road.NoisyLinearImputer(noise=0.0))
            metric = pgc_conf.PerturbationConfidenceMetric(perturb)
            theirs = metric(x, cams, softmax, resnet, return_diff=False)
            # Softmax scores of images imputed as above (~10 ulps apart), forwarded in other batches (forward only):
            # measured 1.1 ulps of max p. 64.
            assert_close_to_peer(ours[:, j], theirs, ulps=64, why=f"ROAD {mode} at {pct} % vs pytorch-grad-cam")
    combined = road_score(resnet, x, targets, maps, percentages=levels, noise=0.0)
    torch.testing.assert_close(combined, ((lerf - morf) / 2).mean(1))
    # Same with ROAD's noise: ours is seeded, pgc draws from the global RNG; the scores stay close.
    torch.manual_seed(0)
    theirs = pgc_road.ROADCombined(percentiles=[100 - p for p in levels])(x, cams, softmax, resnet)
    np.testing.assert_allclose(road_score(resnet, x, targets, maps, percentages=levels).numpy(), theirs, atol=5e-3)


def test_road_metric_accumulates_and_batches(resnet):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 2, 3, 4])
    maps = smooth_maps(4, 32, 32, seed=1)
    per_image = road_score(resnet, x, targets, maps, percentages=(30, 60), batch_size=3)
    torch.testing.assert_close(per_image[2:], road_score(resnet, x[2:], targets[2:], maps[2:], percentages=(30, 60)))
    metric = ROADCombined(percentages=(30, 60), batch_size=5)
    metric.update(resnet, x[:2], targets[:2], maps[:2])
    metric.update(resnet, x[2:], targets[2:], maps[2:])
    torch.testing.assert_close(metric.compute(), per_image.mean())
    morf, lerf = metric.mean_curves()
    assert morf.shape == lerf.shape == (2,)
    with pytest.raises(ValueError, match="percentages must be"):
        ROADCombined(percentages=(0, 50))
