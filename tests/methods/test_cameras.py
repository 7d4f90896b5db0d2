import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_saliency import Precision
from lightning_saliency.methods import CAMERAS, METHODS
from lightning_saliency.methods.cameras import DEFAULT_CAMERAS_SCALES

SCALES = (1.0, 1.5, 2.0, 2.75)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    with torch.no_grad():  # no bias dominating the logits: the prediction changes with the scale
        net[-1].weight.normal_()
        net[-1].bias.zero_()
    return net.eval()


def _reference(model: nn.Module, image: torch.Tensor, target: int, layer: nn.Module, scales, all_scales: bool):
    """The authors' CAMERAS.py steps for one square image (B=1), with autograd.grad instead of backward hooks."""
    res0 = image.shape[-1]
    feats, grads, classes = [], [], []
    for i, f in enumerate(scales):
        r = round(res0 * f)
        x = image if i == 0 else F.interpolate(image, (r, r), mode="bicubic", align_corners=False)
        store = {}
        handle = layer.register_forward_hook(lambda m, a, o, store=store: store.setdefault("a", o))
        logits = model(x)
        handle.remove()
        (g,) = torch.autograd.grad(logits[0, target], store["a"])
        feats.append(store["a"].detach())
        grads.append(g)
        classes.append(int(logits.argmax(1)))
    mean_a = mean_g = 0
    count = 0
    for a, g, c in zip(feats, grads, classes, strict=True):
        if all_scales or c == target:
            count += 1
            mean_a = mean_a + F.interpolate(a, (res0, res0), mode="bilinear", align_corners=False)
            mean_g = mean_g + F.interpolate(g, (res0, res0), mode="bilinear", align_corners=False)
    sal = F.relu((mean_a / count * mean_g / count).sum(1, keepdim=True))
    sal = sal - sal.min()
    return sal / sal.max(), classes


@pytest.mark.parametrize("all_scales", [False, True])
def test_batched_matches_per_image_authors_steps(all_scales):
    model = _net(1)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = model(x).argmax(1)  # the authors' default: explain the base prediction
    if all_scales:
        targets = torch.tensor([0, 1, 2, 3, 0])  # a class of interest: the authors then count every scale
    method = CAMERAS(scales=SCALES, target_layer="2", batch_size=2, agreeing_scales_only=not all_scales)
    ours = method(model, x, targets)
    disagreements = 0
    for i in range(x.shape[0]):
        ref, classes = _reference(model, x[i : i + 1], int(targets[i]), model[2], SCALES, all_scales)
        disagreements += sum(c != int(targets[i]) for c in classes)
        torch.testing.assert_close(ours[i : i + 1], ref, atol=1e-5, rtol=1e-4)
    assert disagreements > 0  # some scales predict another class, so the filtering is exercised


def test_no_agreeing_scale_counts_all_scales():
    model = _net(1)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = {int(model(F.interpolate(x, (round(16 * f),) * 2, mode="bicubic")).argmax()) for f in SCALES}
    others = sorted(set(range(4)) - predicted)
    assert others, "need a class no scale predicts"
    t = torch.tensor([others[0]])
    a = CAMERAS(scales=SCALES, target_layer="2")(model, x, t)
    b = CAMERAS(scales=SCALES, target_layer="2", agreeing_scales_only=False)(model, x, t)
    torch.testing.assert_close(a, b)
    assert not a.isnan().any()
    assert a.max() == 1


def test_non_square_batches_and_default_scales():
    model = _net(2)
    x = torch.randn(3, 3, 12, 20, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 1, 2])
    one = CAMERAS(target_layer="2", batch_size=1)(model, x, targets)
    three = CAMERAS(target_layer="2", batch_size=3)(model, x, targets)
    assert one.shape == (3, 1, 12, 20)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=1e-4)
    assert len(DEFAULT_CAMERAS_SCALES) == 8
    assert DEFAULT_CAMERAS_SCALES[0] == 1.0
    assert [round(224 * s) for s in DEFAULT_CAMERAS_SCALES] == list(range(224, 1000, 100))


def test_leaves_parameter_grads_alone_and_runs_in_inference_mode_and_bf16():
    model = _net(0)
    x, targets = torch.rand(2, 3, 16, 16), torch.tensor([1, 3])
    with torch.inference_mode():
        maps = CAMERAS(scales=SCALES)(model, x, targets)
    assert all(p.grad is None for p in model.parameters())
    assert maps.shape == (2, 1, 16, 16)
    assert not maps.isnan().any()
    bf16 = Precision(forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    maps16 = CAMERAS(scales=SCALES)(model, x, targets, precision=bf16)
    assert maps16.dtype == torch.float32
    assert not maps16.isnan().any()


def test_registered():
    assert METHODS["cameras"] is CAMERAS


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scales": ()}, ValueError, r"scales must be a non-empty.*got \(\)"),
        ({"scales": (1.0, -2.0)}, ValueError, r"scales must be.*got \(1.0, -2.0\)"),
        ({"scales": "1.0"}, ValueError, "scales must be.*got '1.0'"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1.*got 0"),
        ({"agreeing_scales_only": "yes"}, TypeError, "agreeing_scales_only must be a bool, got 'yes'"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CAMERAS(**kwargs)


@pytest.mark.parametrize("size", [(16, 16), (12, 20), (5, 3)])
def test_fusion_by_matrix_products_equals_resizing_every_channel(size):
    from lightning_saliency.methods.cameras import _FUSE_ELEMENTS, _fuse

    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3), (4, 5), (7, 9), (9, 2)]  # one smaller than the output in a dimension: also a downsampling
    acts = [torch.randn(3, 6, h, w, generator=gen) for h, w in shapes]
    grads = [torch.randn(3, 6, h, w, generator=gen) for h, w in shapes]
    share = torch.tensor([[0.5, 1.0, 0.25], [0.0, 0.0, 0.25], [0.5, 0.0, 0.25], [0.0, 0.0, 0.25]])  # [S,b]
    mean_a = sum(share[s][:, None, None, None] * F.interpolate(acts[s], size, mode="bilinear") for s in range(4))
    mean_g = sum(share[s][:, None, None, None] * F.interpolate(grads[s], size, mode="bilinear") for s in range(4))
    expected = (mean_a * mean_g).sum(1, keepdim=True)
    torch.testing.assert_close(_fuse(acts, grads, share, size), expected, atol=1e-5, rtol=1e-5)
    assert _FUSE_ELEMENTS >= 1 << 20  # channels go in blocks of ~16 MiB: all 6 at once here
