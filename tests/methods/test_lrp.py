"""LRP through zennit: equal to zennit called directly, and the model left exactly as found.

zennit's canonizers rewrite the model during a pass (BatchNorm merged into the convolution before it, the residual
sum of torchvision ResNets a module) and its rules are hooks; these tests prove nothing stays: parameters (the same
tensors, bit for bit), buffers, ``.grad``, modes, ``requires_grad``, module types and hook dicts, also when an
exception interrupts a pass in the forward, the backward or half-way through a canonizer.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import zennit.attribution
import zennit.canonizers
import zennit.composites
import zennit.torchvision
from _lightning_models import assert_same_training, loaders, train_state, trainer
from test_conformance import HOOK_DICTS, assert_no_hooks
from torch import Tensor, nn
from torchvision.models import VGG, resnet18
from torchvision.models.vgg import cfgs, make_layers

from lightning_saliency import CallableTarget, RegressionTarget, SaliencyMonitor, SegmentationTarget
from lightning_saliency.methods import LRPAlphaBeta, LRPEpsilonPlusFlat, get_method, normalize_maps
from lightning_saliency.methods.lrp import auto_canonizers

SIZE = 64


def _random_bn_stats(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # the merge then changes every convolution's weights (the init's stats are 0 and 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


def vgg11_bn() -> nn.Module:
    """torchvision's VGG-11 with BatchNorm (its ``features`` as in ``vgg11_bn``), with a small classifier."""
    torch.manual_seed(0)
    model = VGG(make_layers(cfgs["A"], batch_norm=True), num_classes=10, init_weights=False)
    model.classifier = nn.Sequential(  # 25088 -> 4096 -> 4096 would be 120M parameters; the same kinds of layers
        nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True), nn.Linear(64, 10)
    )
    return _random_bn_stats(model).eval()


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return _random_bn_stats(resnet18(weights=None, num_classes=10)).eval()


MODELS = {
    "vgg11_bn": (vgg11_bn, zennit.torchvision.VGGCanonizer),
    "resnet18": (resnet, zennit.torchvision.ResNetCanonizer),
}
COMPOSITES = {
    "lrp_epsilon_plus_flat": zennit.composites.EpsilonPlusFlat,
    "lrp_alpha_beta": zennit.composites.EpsilonAlpha2Beta1Flat,
}


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, SIZE, SIZE, generator=generator), torch.tensor([3, 7])


def zennit_relevance(model: nn.Module, composite: Any, inputs: Tensor, attr_output: Any) -> Tensor:
    """zennit's own way: a ``Gradient`` attributor with the composite, seeded with ``attr_output``."""
    with zennit.attribution.Gradient(model, composite) as attributor:
        _, relevance = attributor(inputs.clone(), attr_output)
    return relevance


def close(ours: Tensor, theirs: Tensor, rtol: float = 1e-5) -> None:
    scale = theirs.abs().amax(dim=tuple(range(1, theirs.ndim)), keepdim=True)  # [B,1,1,1]
    assert float(scale.min()) > 0
    assert float(((ours - theirs).abs() / scale).max()) <= rtol


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_equals_zennit_with_the_same_composite_and_canonizer(arch, name, batch):
    make, canonizer = MODELS[arch]
    model = make()
    inputs, targets = batch
    method = get_method(name)
    ours = method.attributions(model, inputs, targets)
    theirs = zennit_relevance(model, COMPOSITES[name](canonizers=[canonizer()]), inputs, torch.eye(10)[targets])
    close(ours, theirs)
    maps = method(model, inputs, targets)  # the map: |sum_c R_c|, min-max normalised
    assert maps.shape == (2, 1, SIZE, SIZE)
    torch.testing.assert_close(maps, normalize_maps(theirs.sum(1, keepdim=True).abs(), (SIZE, SIZE)), rtol=0, atol=1e-5)
    # the canonizer mattered: without it (BatchNorm passes relevance through) the relevance is another one
    plain = zennit_relevance(model, COMPOSITES[name](), inputs, torch.eye(10)[targets])
    assert float((plain - theirs).abs().max()) > 1e-2 * float(theirs.abs().max())


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (resnet, ["SequentialMergeAnyBatchNorm", "ResNetBottleneckCanonizer", "ResNetBasicBlockCanonizer"]),
        (vgg11_bn, ["SequentialMergeAnyBatchNorm"]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten()), []),
    ],
)
def test_auto_canonizers(make, expected):
    found = auto_canonizers(make())
    assert [type(c).__name__ for c in found] == expected
    assert all(isinstance(c, zennit.canonizers.SequentialMergeBatchNorm) for c in found[:1])


class Trunk(nn.Module):
    """VGG-style conv trunk with BatchNorm; per-class logits ``[B, 4]`` or per-pixel ``[B, 3, H, W]``."""

    def __init__(self, dense: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
        if dense:
            self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 3, 1), nn.Upsample(size=(16, 16)))
        else:
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        _random_bn_stats(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


TARGETS = {
    "segmentation": (True, lambda mask: SegmentationTarget(1, mask)),
    "regression": (False, lambda mask: RegressionTarget(2)),
    "callable": (False, lambda mask: CallableTarget(lambda out: out[:, 0] * out[:, 1])),  # a nonlinear score
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_targets_seed_the_relevance_with_the_gradient_of_their_score(name, kind):
    inputs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 2:10] = True
    dense, make_target = TARGETS[kind]
    model = Trunk(dense).eval()
    target = make_target(mask)

    def attr_output(output: Tensor) -> Tensor:  # d score / d output, as zennit's attr_output
        out = output.detach().requires_grad_(True)
        return torch.autograd.grad(target.score(out).sum(), out)[0]

    ours = get_method(name).attributions(model, inputs, target)
    composite = COMPOSITES[name](canonizers=[zennit.canonizers.SequentialMergeBatchNorm()])
    close(ours, zennit_relevance(model, composite, inputs, attr_output))
    assert_no_hooks(model)


def test_alpha_one_beta_zero_is_epsilon_plus_flat(batch):
    model = vgg11_bn()
    inputs, targets = batch
    z_plus = LRPAlphaBeta(alpha=1.0, beta=0.0).attributions(model, inputs, targets)
    close(z_plus, LRPEpsilonPlusFlat().attributions(model, inputs, targets), rtol=1e-6)
    alpha2 = LRPAlphaBeta().attributions(model, inputs, targets)
    assert float((alpha2 - z_plus).abs().max()) > 1e-2 * float(z_plus.abs().max()), "beta had no effect"


# ------------------------------------------------------------------------------------------------ no interference


def everything(model: nn.Module) -> dict[str, Any]:
    """What a pass must not change, down to which tensor each parameter and buffer holds."""
    return {
        "modules": [(name, type(m)) for name, m in model.named_modules()],
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "storage": {k: (v.data_ptr(), tuple(v.shape), v.stride()) for k, v in model.state_dict().items()},
        "params": {n: id(p) for n, p in model.named_parameters()},
        "buffers": {n: id(b) for n, b in model.named_buffers()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": {n: {a: list(getattr(m, a, {})) for a in HOOK_DICTS} for n, m in model.named_modules()},
        "forward": {n: "forward" in m.__dict__ for n, m in model.named_modules()},
    }


def assert_same(before: dict[str, Any], model: nn.Module) -> None:
    after = everything(model)
    for key in ("modules", "storage", "params", "buffers", "training", "requires_grad", "hooks", "forward"):
        assert before[key] == after[key], key
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), f"{key} changed"
    for key, grad in before["grad"].items():
        assert (grad is None and after["grad"][key] is None) or torch.equal(grad, after["grad"][key]), f"{key}.grad"
    assert_no_hooks(model)


def live(make: Any) -> nn.Module:
    """A model as training leaves it: train mode, a frozen part, accumulated ``.grad``, one grad ``None``."""
    model = make().train()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    first.weight.requires_grad_(False)
    for i, p in enumerate(p for p in model.parameters() if p.requires_grad):
        if i % 2:
            p.grad = torch.randn_like(p)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_the_model_is_left_bit_identical(arch, name, batch):
    model = live(MODELS[arch][0])
    inputs, targets = batch
    before = everything(model)
    with torch.inference_mode():  # Lightning's validate/test
        maps = get_method(name)(model, inputs.clone(), targets.clone())
    assert float(maps.flatten(1).amax(1).min()) == 1.0
    assert_same(before, model)


class Bomb(nn.Module):
    """Raises in the forward (``where="forward"``) or in the backward (``"backward"``)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def forward(self, x: Tensor) -> Tensor:
        if self.where == "forward":
            raise RuntimeError("boom in the forward")
        return _RaiseInBackward.apply(x)


class _RaiseInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        raise RuntimeError("boom in the backward")


class HalfWay(zennit.canonizers.SequentialMergeBatchNorm):
    """Merges every BatchNorm, then fails before zennit has the handles to undo it."""

    def apply(self, root_module: nn.Module) -> list:
        super().apply(root_module)
        raise RuntimeError("boom half-way through a canonizer")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["forward", "backward", "canonizer"])
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_an_exception_mid_attribution_leaves_the_model_bit_identical(arch, where, batch):
    model = live(MODELS[arch][0])
    inputs, targets = batch
    if where == "canonizer":
        method = LRPEpsilonPlusFlat(canonizers=[HalfWay()])
    else:
        if arch == "resnet18":  # inside a canonized block, after a merged BatchNorm
            model.layer2[0].bn2 = nn.Sequential(model.layer2[0].bn2, Bomb(where))
        else:  # after a merged BatchNorm and its ReLU
            model.features[10] = nn.Sequential(model.features[10], Bomb(where))
        method = LRPEpsilonPlusFlat()
        method._verified.add(model)  # the check forward would raise first; the pass itself must raise here
    before = everything(model)
    with pytest.raises(RuntimeError, match="boom"):
        method(model, inputs, targets)
    assert_same(before, model)


def test_without_the_safety_net_zennit_would_leave_a_half_merged_model(batch):
    """What the snapshot restores: a canonizer failing half-way leaves zennit no handle to undo the merge."""
    model = vgg11_bn()
    weight = model.features[0].weight.detach().clone()
    composite = zennit.composites.EpsilonPlusFlat(canonizers=[HalfWay()])
    with pytest.raises(RuntimeError, match="half-way"):
        composite.register(model)
    composite.remove()
    assert not torch.equal(model.features[0].weight, weight)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_with_the_lrp_methods_is_bit_identical(tmp_path, precision):
    base = train_state(tmp_path / "a", [], max_epochs=3, precision=precision)
    monitor = SaliencyMonitor(methods=sorted(COMPOSITES), num_samples=4, targets="predicted")
    other = train_state(tmp_path / "b", [monitor], max_epochs=3, precision=precision)
    assert set(monitor.last_maps) == set(COMPOSITES), "the monitor must actually have run"
    assert all(float(m.flatten(1).amax(1).min()) == 1.0 for m in monitor.last_maps.values())
    assert_same_training(base, other)


@pytest.mark.slow
def test_validate_under_inference_mode_gives_real_maps(tmp_path):
    from _lightning_models import TinyClassifier

    _, val = loaders()
    monitor = SaliencyMonitor(methods=sorted(COMPOSITES), num_samples=3)
    trainer(tmp_path, [monitor], inference_mode=True).validate(TinyClassifier(), val)
    for maps in monitor.last_maps.values():
        assert maps.shape == (3, 1, 16, 16)
        assert float(maps.flatten(1).amax(1).min()) == 1.0
        assert not torch.is_inference(maps)


# ------------------------------------------------------------------------------------------ what LRP cannot do


def test_sync_batch_norm_is_merged_like_batch_norm(batch):
    model = vgg11_bn()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(vgg11_bn()).eval()
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    inputs, targets = batch
    method = LRPEpsilonPlusFlat()
    close(method.attributions(synced, inputs, targets), method.attributions(model, inputs, targets), rtol=1e-6)


class ReusedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.conv(self.act(self.conv(x)))))


class MisorderedBatchNorm(nn.Module):
    """A BatchNorm registered right after a conv whose output it does not normalise (DenseNet-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.other = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(3, 4, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
        _random_bn_stats(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x) + self.bn(self.other(x)))


class HeadFirst(nn.Module):
    """The head is registered before the trunk: zennit would give the flat rule to the head's Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten()), ValueError, r"'1' \(GroupNorm\)"),
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten()),
            ValueError,
            "without running statistics",
        ),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.Flatten()), ValueError, "affine=False"),
        (ReusedConv(), RuntimeError, r"module 'conv' \(Conv2d\) ran more than once in one forward"),
        (
            HeadFirst(),
            RuntimeError,
            r"first layer of the forward is 'features.0' \(Conv2d\), but zennit gave .* 'head.2'",
        ),
        (MisorderedBatchNorm(), RuntimeError, r"canonizers \['SequentialMergeAnyBatchNorm'\] change what"),
    ],
)
def test_models_lrp_cannot_explain_are_a_clear_error(model, error, match, probe_batch):
    model.eval()
    inputs, targets = probe_batch
    targets = targets % 4
    before = everything(model)
    for name in COMPOSITES:
        with pytest.raises(error, match=match):
            get_method(name)(model, inputs, targets)
        assert_same(before, model)


def test_the_check_allows_for_the_eps_that_zennits_merged_batch_norm_keeps():
    """A merged BatchNorm still divides by sqrt(1 + eps): 20 of them with eps=1e-2 move ResNet-18's output by ~5%."""
    model = resnet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-2
    inputs = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    composite = zennit.composites.EpsilonPlusFlat(canonizers=[zennit.torchvision.ResNetCanonizer()])
    with torch.no_grad():
        plain = model(inputs)
        with composite.context(model):
            canonized = model(inputs)
    gap = float((plain - canonized).abs().max() / plain.abs().max())
    assert gap > 1e-2  # the drift is real: a fixed tolerance of 1e-3 would reject the merge
    maps = LRPEpsilonPlusFlat()(model, inputs, torch.tensor([3]))
    assert float(maps.max()) == 1.0


def test_misordered_batch_norm_works_without_canonizers(probe_batch):
    inputs, targets = probe_batch
    maps = LRPEpsilonPlusFlat(canonizers=None)(MisorderedBatchNorm().eval(), inputs, targets % 4)
    assert float(maps.flatten(1).amax(1).min()) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 3.0, "beta": 1.0}, r"alpha - beta must be 1 .* got alpha=3.0 and beta=1.0"),
        ({"alpha": 0.5, "beta": -0.5}, r"beta must be a float >= 0, got -0.5"),
        ({"alpha": True}, r"alpha must be a float >= 0, got True"),
        ({"epsilon": 0.0}, r"epsilon must be a float > 0, got 0.0"),
        ({"canonizers": "resnet"}, r"canonizers must be 'auto', None or a list of zennit canonizers, got 'resnet'"),
        ({"canonizers": [nn.BatchNorm2d(2)]}, r"canonizers must be zennit.canonizers.Canonizer instances, got Batch"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRPAlphaBeta(**kwargs)


def test_without_zennit_the_package_imports_and_lrp_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['zennit'] = None  # as if not installed: `import zennit` raises ImportError\n"
        "import lightning_saliency\n"
        "from lightning_saliency.methods import METHODS, get_method\n"
        "assert 'lrp_epsilon_plus_flat' in METHODS and 'lrp_alpha_beta' in METHODS\n"
        "get_method('gradient')\n"
        "for name in ('lrp_epsilon_plus_flat', 'lrp_alpha_beta'):\n"
        "    try:\n"
        "        get_method(name)\n"
        "    except ImportError as err:\n"
        "        assert 'pip install \"lightning-saliency[lrp]\"' in str(err), str(err)\n"
        "    else:\n"
        "        raise SystemExit('no ImportError')\n"
        "try:\n"
        "    lightning_saliency.SaliencyMonitor(methods=['lrp_alpha_beta'])\n"
        "except ImportError as err:\n"
        "    assert 'lightning-saliency[lrp]' in str(err)\n"
        "else:\n"
        "    raise SystemExit('the monitor accepted an LRP method without zennit')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
