import pytest
import torch
from scipy.stats import spearmanr

from lightning_saliency.metrics import MapStability, map_stability, spearman


def test_spearman_matches_scipy_with_ties():
    torch.manual_seed(0)
    a = torch.randint(0, 4, (5, 1, 6, 6)).float()  # many ties
    b = torch.randn(5, 1, 6, 6)
    b[0] = a[0] * 2 + 1
    ours = spearman(a, b)
    ref = torch.tensor([spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(5)], dtype=torch.float32)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert ours[0].item() == pytest.approx(1.0)
    assert spearman(a, -b)[0].item() == pytest.approx(-1.0)


def test_constant_rows_give_zero_not_nan():
    x = torch.rand(3, 10)
    const = torch.zeros(3, 10)
    assert torch.equal(spearman(x, const), torch.zeros(3))
    assert torch.equal(spearman(const, const), torch.zeros(3))


def test_map_stability_and_metric():
    torch.manual_seed(0)
    prev, now = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    torch.testing.assert_close(map_stability(prev, prev**2), torch.ones(4))
    torch.testing.assert_close(map_stability(prev, now), spearman(prev, now))
    metric = MapStability()
    metric.update(prev[:2], now[:2])
    metric.update(prev[2:], now[2:])
    torch.testing.assert_close(metric.compute(), spearman(prev, now).mean())
    with pytest.raises(ValueError, match="same shape"):
        map_stability(prev, torch.rand(4, 1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.rand(2, 3), torch.rand(2, 4))
