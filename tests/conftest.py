"""Shared fixtures: a tiny CNN (BatchNorm, Dropout, in-place ReLU, 4-D trunk) and a seeded probe batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

NUM_CLASSES = 5

# Test tensors are tiny: intra-op threads only add synchronisation, which is very slow (10-100x) when the cores
# are shared with other processes (OpenMP spin-waits on an oversubscribed machine).
torch.set_num_threads(1)


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
