import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tolerance import assert_close_to_peer
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


def _with_forward_rows(model: nn.Module, method: ScoreCAM, x: torch.Tensor, targets: torch.Tensor):
    """``method(model, x, targets)`` and the batch size of every forward the model ran meanwhile."""
    rows = []
    handle = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        return method(model, x, targets), rows
    finally:
        handle.remove()


def test_registered():
    assert METHODS["scorecam"] is ScoreCAM
    assert isinstance(get_method("scorecam", top_k=4), ScoreCAM)


def test_matches_reference_and_scores_constant_channels_once():
    model = _DeadChannels().eval()
    x = torch.randn(3, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 4, 2])
    maps, rows = _with_forward_rows(model, ScoreCAM(target_layer="act", batch_size=5), x, targets)
    # The reference forwards one masked image at a time (forward only: other batch sizes round the last bits, nothing
    # amplifies them), a 4-channel weighted sum, bilinear resize, min-max: measured 1.5 ulps of 1. 32.
    reference = _reference_scorecam(model, x, targets)
    assert_close_to_peer(maps, reference, ulps=32, why="Score-CAM vs the one-image-at-a-time reference")
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
    # The same masked forwards in other batches and layouts (ours channels-last), a 256-channel weighted sum, pgc's
    # min-max (eps 1e-7) and cv2 resize: measured 5 ulps of 1. 128.
    assert_close_to_peer(ours, torch.from_numpy(pgc_maps), ulps=128, why="Score-CAM vs pytorch-grad-cam ScoreCAM")


def test_paper_weights_against_pytorch_grad_cam(resnet, pgc_maps, paper_maps):
    # On this random ResNet the target-class probabilities of the masked inputs are nearly flat, as are pgc's
    # softmax-over-channels weights, so both maps are close to ReLU(sum_k A_k) and rank pixels alike.
    assert min(_spearman(paper_maps, pgc_maps)) >= 0.99


def test_top_k_approximates_exact(resnet, paper_maps):
    model, x, targets = resnet
    approx = ScoreCAM(target_layer="layer3", batch_size=64, top_k=16)(model, x, targets)[:, 0]
    rho = _spearman(approx, paper_maps)
    assert min(rho) >= 0.99, rho
    assert not torch.allclose(approx, paper_maps)  # it is an approximation: 16 of 256 channels scored


class _TwoKindsOfMaps(nn.Module):
    """Conv + ReLU whose 16 channels are positive multiples of 2 filters: only 2 distinct normalised maps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        with torch.no_grad():
            base = torch.randn(2, 3, 3, 3)
            self.conv.weight.copy_(torch.stack([(1 + j) * base[j % 2] for j in range(16)]))
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)))


def test_top_k_channels_borrow_the_score_of_an_equal_map():
    # Every channel's map equals (after min-max normalisation) the map of one of the 4 scored channels: the
    # k-means half of the budget puts a medoid in each of the 2 kinds, so borrowing reproduces exact mode.
    model = _TwoKindsOfMaps().eval()
    x, targets = torch.randn(3, 3, 10, 10, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2, 4])
    approx, rows = _with_forward_rows(model, ScoreCAM(target_layer="act", top_k=4, batch_size=64), x, targets)
    torch.testing.assert_close(approx, ScoreCAM(target_layer="act")(model, x, targets), atol=1e-5, rtol=1e-4)
    assert rows[0] == 3  # the Grad-CAM criterion pass
    assert sum(rows[1:]) <= 3 * 4  # then at most top_k masked inputs per image


def test_choose_channels_rules():
    from lightning_saliency.methods.scorecam import _choose_channels

    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(2, 40, 4, 5, generator=gen)  # [B,K,h,w]
    acts[0, :7] = 0.5  # constant channels
    acts[1, 10] = acts[1, 11] * 3 + 1  # equal maps after normalisation
    constant = acts.flatten(2).amax(2) == acts.flatten(2).amin(2)
    criterion = torch.randn(2, 40, generator=gen)
    selected, proxy = _choose_channels(acts, criterion, constant, 7)
    flat = acts.flatten(2)
    unit = (flat - flat.amin(2, keepdim=True)) / (flat.amax(2, keepdim=True) - flat.amin(2, keepdim=True))
    for b in range(2):
        assert int(selected[b].sum()) == 7
        assert not (selected[b] & constant[b]).any()
        top4 = criterion[b].masked_fill(constant[b], float("-inf")).topk(4).indices
        assert selected[b, top4].all()  # ceil(7 / 2) by the criterion
        chosen = selected[b].nonzero()[:, 0]
        for c in range(40):
            if constant[b, c] or selected[b, c]:
                assert int(proxy[b, c]) == c
            else:
                dist = (unit[b, chosen] - unit[b, c]).norm(dim=1)
                assert bool(selected[b, proxy[b, c]])
                assert torch.isclose((unit[b, proxy[b, c]] - unit[b, c]).norm(), dist.min())
    if selected[1, 11] and not selected[1, 10]:
        assert int(proxy[1, 10]) == 11


def test_kmeans_medoids_seeds_distinct_maps():
    from lightning_saliency.methods.scorecam import _kmeans_medoids

    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.1], [1.0, 0.9]])
    medoids = sorted(_kmeans_medoids(points, 2).tolist())
    assert medoids[0] in (0, 1)  # one medoid per cluster, each the member nearest its centre
    assert medoids[1] in (2, 4)
    assert len(_kmeans_medoids(points[:2], 2)) == 1  # two equal points: one cluster, one medoid
    assert len(_kmeans_medoids(points, 0)) == 0  # top_k=1 leaves no medoid to choose


def test_top_k_of_one_scores_one_channel_per_image():
    model = _TwoKindsOfMaps().eval()
    x, targets = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])
    maps, rows = _with_forward_rows(model, ScoreCAM(target_layer="act", top_k=1), x, targets)
    assert rows == [2, 2]  # the criterion pass, then one masked input per image
    assert not maps.isnan().any()


class _Flattening(nn.Module):
    """Conv + ReLU + a head that flattens the 4x4 feature map with ``.view`` or with ``flatten``."""

    def __init__(self, use_view: bool) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv, self.act, self.pool, self.fc = (
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Linear(96, 3),
        )
        self.use_view = use_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.pool(self.act(self.conv(x)))  # [B,6,4,4]
        return self.fc(a.view(a.shape[0], -1) if self.use_view else a.flatten(1))


def test_masked_inputs_go_channels_last_on_cpu_unless_the_model_rejects_it():
    x, targets = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])
    seen = []  # (rows, channels-last?) per forward
    flat = _Flattening(use_view=False).eval()
    handle = flat.register_forward_pre_hook(
        lambda m, a: seen.append((a[0].shape[0], a[0].is_contiguous(memory_format=torch.channels_last)))
    )
    try:
        expected = ScoreCAM(target_layer="act", batch_size=8)(flat, x, targets)
    finally:
        handle.remove()
    assert seen[0] == (2, False)  # the activation forward: the input as given
    masked = [cl for rows, cl in seen[1:] if rows > 1]  # (a 1-row batch is both layouts at once)
    assert masked
    assert all(masked)
    viewing = _Flattening(use_view=True).eval()
    with pytest.raises(RuntimeError, match="view"):  # the layout this model cannot take
        viewing(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(ScoreCAM(target_layer="act", batch_size=8)(viewing, x, targets), expected)


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
