"""Shared fixtures: a tiny CNN (BatchNorm, Dropout, in-place ReLU, 4-D trunk) and a seeded probe batch."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18
from torchvision.models.vision_transformer import EncoderBlock

from lightning_saliency.methods import METHODS

NUM_CLASSES = 5

# Test tensors are tiny: intra-op threads only add synchronisation, which is very slow (10-100x) when the cores
# are shared with other processes (OpenMP spin-waits on an oversubscribed machine).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _global_torch_flags():
    """Put back what ``Trainer(deterministic=True)`` switches on for the process and Lightning leaves on.

    ``torch.use_deterministic_algorithms(True)`` outlives the Trainer, and later tests that run captum's DeepLift
    (``max_unpool2d`` has no deterministic kernel) would fail depending on which tests ran before.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


class TinyCNN(nn.Module):
    """``[B, C, H, W] -> [B, num_classes]``; ``features`` is the conv trunk (``"auto"`` picks it), 4x downsampling."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


def make_tiny_cnn(in_channels: int = 3, num_classes: int = NUM_CLASSES, seed: int = 0) -> TinyCNN:
    """A seeded :class:`TinyCNN` in train mode, with non-trivial BatchNorm statistics and non-empty CAMs."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        model = TinyCNN(in_channels, num_classes)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        head = model.head[2]
        head.weight.copy_(head.weight.abs() - 0.05)  # mostly positive: CAMs are non-trivial for every class
    return model.train()


class TinyViT(nn.Module):
    """A hybrid vision transformer with :class:`TinyCNN`'s interface: ``features``, the same conv trunk (4x down),
    is the patch embedding; a class token and two torchvision ``EncoderBlock`` s (``nn.MultiheadAttention``) follow,
    then ``head`` on the class token (``[B, num_classes]``), or with ``dense=True`` a per-pixel head on the patch
    tokens (``[B, num_classes, H, W]`` for sides divisible by 4). ``dims=3`` takes volumes ``[B, C, D, H, W]``.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = NUM_CLASSES, dims: int = 2, dense: bool = False
    ) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.features = nn.Sequential(
            conv(in_channels, 8, 3, padding=1),
            norm(8),
            nn.ReLU(inplace=True),
            conv(8, 16, 3, stride=2, padding=1),
            norm(16),
            nn.ReLU(inplace=True),
            conv(16, 16, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.class_token = nn.Parameter(torch.randn(1, 1, 16))
        layer_norm = partial(nn.LayerNorm, eps=1e-6)
        self.encoder = nn.Sequential(*[EncoderBlock(2, 16, 32, 0.0, 0.0, layer_norm) for _ in range(2)])
        self.norm = layer_norm(16)
        self.dense = dense
        if dense:
            up = nn.Upsample(scale_factor=4, mode="bilinear" if dims == 2 else "trilinear")
            self.head: nn.Sequential = nn.Sequential(conv(16, num_classes, 1), up)
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.features(x)  # [B,16,h,w]
        patches = fmap.flatten(2).transpose(1, 2)  # [B,h*w,16]
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), patches], 1)  # [B,1+h*w,16]
        tokens = self.norm(self.encoder(tokens))
        if self.dense:
            return self.head(tokens[:, 1:].transpose(1, 2).reshape(fmap.shape))
        return self.head(tokens[:, 0])


def make_tiny_vit(
    in_channels: int = 3, num_classes: int = NUM_CLASSES, seed: int = 0, dims: int = 2, dense: bool = False
) -> TinyViT:
    """A seeded :class:`TinyViT` in train mode, BatchNorm statistics and head as :func:`make_tiny_cnn`'s."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        model = TinyViT(in_channels, num_classes, dims, dense)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        head = model.head[-1] if not dense else model.head[0]
        head.weight.copy_(head.weight.abs() - 0.05)
    return model.train()


def model_for(name: str, **kwargs: int | bool) -> nn.Module:
    """The tiny model a registered method is tested on: :class:`TinyViT` if it ``needs`` attention, else TinyCNN.

    Both have ``features`` (the same conv trunk) and ``head`` (``Flatten``, ``Dropout``, ``Linear``).
    """
    if "attention" in METHODS[name].needs:
        return make_tiny_vit(**kwargs)  # type: ignore[arg-type]
    return make_tiny_cnn(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def make_cnn() -> Callable[..., TinyCNN]:
    """Factory fixture: ``make_cnn(in_channels=3, num_classes=5, seed=0)``."""
    return make_tiny_cnn


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    """A fresh seeded 3-channel, 5-class :class:`TinyCNN` in train mode."""
    return make_tiny_cnn()


def make_probe(
    batch: int = 4, channels: int = 3, height: int = 32, width: int = 32, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Seeded ``inputs [B, C, H, W]`` in [0, 1] and ``targets [B]`` in ``[0, NUM_CLASSES)``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(batch, channels, height, width, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return inputs, targets


@pytest.fixture
def make_batch() -> Callable[..., tuple[Tensor, Tensor]]:
    """Factory fixture: ``make_batch(batch=4, channels=3, height=32, width=32, seed=0)``."""
    return make_probe


@pytest.fixture
def probe_batch() -> tuple[Tensor, Tensor]:
    """``(inputs [4, 3, 32, 32], targets [4])``, seeded."""
    return make_probe()


# The peer-agreement tests (tests/methods/test_peers*.py): a seeded ResNet-18 with random BatchNorm statistics,
# and a batch. Modules that define their own `resnet`/`batch` fixtures override these.
PEER_SIZE = 64  # side of the peer tests' inputs (test files keep it as SIZE)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    with torch.no_grad():  # random BatchNorm statistics, so eval-mode activations are not just the init's
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, PEER_SIZE, PEER_SIZE, generator=generator), torch.tensor([3, 7])
