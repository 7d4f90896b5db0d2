"""Target-layer resolution (``"auto"``, names, modules) and activation capture."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn
from torchvision import models

from lightning_saliency import find_target_layer, resolve_target_layer
from lightning_saliency.layers import capture_outputs, spatial_layers
from lightning_saliency.methods import GradCAM, GradCAMPlusPlus, Gradient, GradientXInput

# At 64x64 every trunk still ends in a 2x2 map (ResNet/VGG/ConvNeXt/... downsample 32x).
AUTO_EXPECTED = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "vgg11": "features",
    "mobilenet_v3_small": "features",  # squeeze-excitation pools inside `features` must not end the trunk
    "efficientnet_b0": "features",
    "densenet121": "features",  # functional ReLU + pooling after `features.norm5`
    "convnext_tiny": "features",  # channels-last [B, h, w, C] tensors inside blocks must not be picked
}


@functools.cache
def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(models, name)(weights=None, num_classes=4).eval()


@pytest.mark.parametrize(("name", "expected"), AUTO_EXPECTED.items())
def test_auto_layer_on_torchvision_models(name, expected):
    model = torchvision_model(name)
    inputs = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert find_target_layer(model, inputs) == expected
    maps = GradCAM()(model, inputs, torch.tensor([1]))
    assert maps.shape == (1, 1, 64, 64)
    assert torch.isfinite(maps).all()
    assert maps.min() >= 0
    assert maps.max() <= 1


def test_auto_layer_on_small_inputs_stays_at_the_trunk():
    # CIFAR-size input: ConvNeXt's trunk ends at 1x1; "auto" must not pick the LayerNorm after the pooling
    # (`classifier.0`) nor a channels-last [1, 1, 1, 768] tensor inside a block.
    assert find_target_layer(torchvision_model("convnext_tiny"), torch.zeros(1, 3, 32, 32)) == "features"
    assert find_target_layer(torchvision_model("resnet18"), torch.zeros(1, 3, 32, 32)) == "layer4"


def test_auto_layer_dry_forward_leaves_a_training_model_untouched():
    torch.manual_seed(0)
    model = models.resnet18(weights=None, num_classes=4).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    # B=1 and a 1x1 map: a train-mode BatchNorm would raise; and it would update running stats at any size.
    assert find_target_layer(model, torch.rand(1, 3, 32, 32)) == "layer4"
    assert find_target_layer(model, torch.rand(2, 3, 64, 64)) == "layer4"
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    rng_after = torch.get_rng_state()
    torch.set_rng_state(rng)
    torch.rand(1, 3, 32, 32), torch.rand(2, 3, 64, 64)  # the test's own draws only
    assert torch.equal(torch.get_rng_state(), rng_after)


def test_auto_layer_on_tiny_cnn(tiny_cnn, probe_batch):
    inputs, _ = probe_batch
    assert find_target_layer(tiny_cnn, inputs) == "features"
    assert GradCAM().layer_name(tiny_cnn, inputs) == "features"
    assert Gradient().layer_name(tiny_cnn, inputs) is None


def test_wrong_layer_name_lists_candidates(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    with pytest.raises(ValueError, match=r"'featurez'.*Did you mean 'features'.*features\.0") as err:
        GradCAM(target_layer="featurez")(tiny_cnn, inputs, targets)
    assert "features.7" in str(err.value)
    with pytest.raises(ValueError, match="'nope'"):
        resolve_target_layer(tiny_cnn, "nope", inputs)


def test_module_not_in_model_raises(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    with pytest.raises(ValueError, match="Conv2d module is not a submodule of TinyCNN"):
        GradCAM(target_layer=nn.Conv2d(3, 3, 1))(tiny_cnn, inputs, targets)
    with pytest.raises(TypeError, match="target_layer"):
        GradCAM(target_layer=3)  # type: ignore[arg-type]


def test_dotted_names_and_modules_are_accepted(tiny_cnn, probe_batch):
    model = tiny_cnn.eval()
    inputs, targets = probe_batch
    assert resolve_target_layer(model, "features.3", inputs) == ("features.3", model.features[3])
    assert resolve_target_layer(model, model.features[3], inputs) == ("features.3", model.features[3])
    by_name = GradCAM(target_layer="features.3")(model, inputs, targets)
    by_module = GradCAM(target_layer=model.features[3])(model, inputs, targets)
    assert torch.equal(by_name, by_module)
    assert not torch.equal(by_name, GradCAM()(model, inputs, targets)), "a different layer gives a different map"

    resnet = torchvision_model("resnet18")
    x = torch.rand(1, 3, 64, 64)
    assert resolve_target_layer(resnet, "layer3.1", x) == ("layer3.1", resnet.layer3[1])
    assert GradCAM(target_layer="layer3.1").layer_name(resnet, x) == "layer3.1"


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_model_without_feature_map_raises_for_cam(method):
    with pytest.raises(ValueError, match="found no module of MLP with a 4-D"):
        method()(MLP(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_named_layer_without_feature_map_raises_for_cam(method):
    model = MLP()
    with pytest.raises(ValueError, match=r"outputs shape \(2, 16\); CAM methods need a 4-D"):
        method(target_layer="net.1")(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


@pytest.mark.parametrize("method", [Gradient, GradientXInput])
def test_gradient_methods_work_without_feature_map(method):
    maps = method()(MLP(), torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert maps.shape == (2, 1, 8, 8)
    assert torch.isfinite(maps).all()
    assert (maps.flatten(1).amax(1) == 1).all()


class Twice(nn.Module):
    """Runs ``block`` twice in one forward (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(self.block(self.stem(x))))


def test_layer_running_twice_raises():
    model = Twice()
    x, t = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match="ran more than once in one forward"):
        GradCAM(target_layer="block")(model, x, t)
    assert not model.block._forward_hooks
    assert GradCAM(target_layer="stem")(model, x, t).shape == (2, 1, 8, 8)


def test_spatial_layers_order_and_hooks():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert spatial_layers(net, torch.zeros(1, 3, 8, 8)) == [
        ("0", (1, 4, 6, 6)),
        ("1", (1, 4, 6, 6)),
        ("2", (1, 4, 1, 1)),
    ]
    assert find_target_layer(net, torch.zeros(1, 3, 8, 8)) == "1"
    assert all(not m._forward_hooks for m in net.modules())


def test_capture_outputs_is_immune_to_inplace_ops_and_removes_hooks_on_error():
    conv = nn.Conv2d(1, 2, 1)
    net = nn.Sequential(conv, nn.ReLU(inplace=True))
    with torch.no_grad():
        conv.weight.fill_(-1.0)
    x = torch.ones(1, 1, 2, 2)
    with capture_outputs([conv]) as outs:
        net(x)
    assert (outs[0] < 0).all(), "the in-place ReLU after the layer must not change the recorded activation"
    with pytest.raises(KeyError), capture_outputs([conv]):
        raise KeyError("boom")
    assert not conv._forward_hooks


def test_auto_skips_a_module_that_runs_more_than_once():
    # One activation module shared by the trunk and the head (as EfficientNet-Lite's `_swish`): ambiguous.
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv2(self.act(self.conv1(x)))
            return self.fc(self.pool(self.act(x)).flatten(1))

    assert find_target_layer(Shared(), torch.zeros(1, 3, 8, 8)) == "conv2"


def test_maps_are_normal_tensors_when_called_under_inference_mode():
    from lightning_saliency import GradCAM

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.inference_mode():
        maps = GradCAM()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert not torch.is_inference(maps)
