"""Small LightningModules and data for the Trainer-level tests."""

from __future__ import annotations

import copy
import random

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyClassifier(L.LightningModule):
    """Conv trunk with BatchNorm, in-place ReLU and Dropout (so RNG and BN statistics matter), 4 classes."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4, frozen_backbone: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, num_classes))
        self.frozen_backbone = frozen_backbone
        self.backbone_modes: list[bool] = []
        if frozen_backbone:
            self.features.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        if self.frozen_backbone and batch_idx == 0 and self.current_epoch == 0:
            self.features.eval()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.backbone_modes.append(self.features.training)
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=1e-2)


def make_data(n: int = 48, channels: int = 3, size: tuple[int, int] = (16, 16), classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, *size, generator=g)
    y = torch.arange(n) % classes
    return TensorDataset(x, y)


def loaders(n: int = 48, channels: int = 3, size: tuple[int, int] = (16, 16), batch_size: int = 16):
    train = DataLoader(make_data(n, channels, size, seed=0), batch_size=batch_size, shuffle=True)
    val = DataLoader(make_data(n // 2, channels, size, seed=1), batch_size=batch_size)
    return train, val


def trainer(tmp_path, callbacks=(), logger=True, **kwargs) -> L.Trainer:
    from lightning.pytorch.loggers import TensorBoardLogger

    if logger is True:
        logger = TensorBoardLogger(str(tmp_path), name="tb")
    defaults = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    defaults.update(kwargs)
    return L.Trainer(callbacks=list(callbacks), logger=logger, default_root_dir=str(tmp_path), **defaults)


def read_events(log_dir) -> dict[str, dict[str, list]]:
    """All image and scalar events under ``log_dir``: {"images": {tag: [events]}, "scalars": {...}}."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, list]] = {"images": {}, "scalars": {}}
    for f in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            out["images"].setdefault(tag, []).extend(acc.Images(tag))
        for tag in acc.Tags()["scalars"]:
            out["scalars"].setdefault(tag, []).extend(acc.Scalars(tag))
    return out


def train_state(tmp_path, callbacks, *, max_epochs: int, precision: str = "32-true", module=None) -> tuple:
    """A seeded ``fit`` of :class:`TinyClassifier` (or ``module()``): its weights (BatchNorm statistics included),
    optimizer state, the torch / numpy / python RNG states and each parameter's ``.grad`` afterwards."""
    L.seed_everything(7, workers=True)
    model = (module or TinyClassifier)()
    train, val = loaders(n=64)
    tr = trainer(tmp_path, callbacks, max_epochs=max_epochs, precision=precision, logger=False)
    tr.fit(model, train, val)
    opt = tr.optimizers[0].state_dict()
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt), rng, [p.grad for p in model.parameters()]


def assert_same_training(base: tuple, other: tuple) -> None:
    """Two :func:`train_state` results are bit-identical: weights, optimizer state, RNG streams and ``.grad``."""
    base_state, base_opt, base_rng, base_grads = base
    state, opt, rng, grads = other
    assert base_state.keys() == state.keys()
    for key in base_state:  # weights and BatchNorm running statistics (incl. num_batches_tracked)
        assert torch.equal(base_state[key], state[key]), key
    for pid, s in base_opt["state"].items():
        for name, value in s.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt["state"][pid][name])), (pid, name)
    assert torch.equal(base_rng[0], rng[0])
    assert np.array_equal(base_rng[1], rng[1])
    assert base_rng[2] == rng[2]
    for g0, g1 in zip(base_grads, grads, strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1)
