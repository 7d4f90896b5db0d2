"""Fixtures of the peer-agreement tests: a seeded ResNet-18 with random BatchNorm statistics, and a batch."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import resnet18

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
