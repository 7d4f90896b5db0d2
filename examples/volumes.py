"""Saliency of a 3-D model: a small 3-D CNN tells balls, cubes and rods apart in noisy volumes.

    python examples/volumes.py                     # about a minute on a laptop CPU
    python examples/volumes.py --view frames       # the same volumes drawn as video frames
    tensorboard --logdir lightning_logs --samples_per_plugin images=100

Volumes ``[B, 1, D, H, W]`` (as CT or MR scans come; video is ``[B, C, T, H, W]``) are made in code: one bright
object in noise, its box known. The maps are computed in 3-D (Grad-CAM on a ``Conv3d`` trunk is upsampled
trilinearly, as captum's ``LayerAttribution.interpolate`` does) and drawn as the axial, coronal and sagittal
slices through the methods' consensus peak and the maximum-intensity projection (``volume_view="slices"``,
IMAGES ``volumes/overview``), or as four frames (``volume_view="frames"``). The pointing games compare the 3-D
maps with the 3-D boxes (SCALARS).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_saliency import SaliencyMonitor

CLASSES = ("ball", "cube", "rod")


def make_volumes(n: int, shape: tuple[int, int, int] = (16, 32, 32), seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` volumes ``[n, 1, D, H, W]``, labels ``[n]`` and boxes ``[n, 6]`` ``(x1, y1, z1, x2, y2, z2)``.

    One object per volume, brighter than the noise around it: a ball, a cube, or a rod along the depth axis.
    """
    g = torch.Generator().manual_seed(seed)
    d, h, w = shape
    labels = torch.arange(n) % len(CLASSES)
    labels = labels[torch.randperm(n, generator=g)]
    zz, yy, xx = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    volumes = 0.2 * torch.randn(n, 1, d, h, w, generator=g)
    boxes = torch.zeros(n, 6)
    for i in range(n):
        r = 4 + 2 * float(torch.rand((), generator=g))
        depth = d / 2 - 1 if labels[i] == 2 else r  # rods run most of the depth
        c = [float(torch.rand((), generator=g)) * (s - 2 * e) + e for s, e in zip(shape, (depth, r, r), strict=True)]
        dz, dy, dx = (zz - c[0]).abs(), (yy - c[1]).abs(), (xx - c[2]).abs()
        if labels[i] == 0:
            inside = dz.pow(2) + dy.pow(2) + dx.pow(2) <= r * r
        elif labels[i] == 1:
            inside = (dz <= r * 0.8) & (dy <= r * 0.8) & (dx <= r * 0.8)
        else:
            inside = (dz <= depth) & (dy.pow(2) + dx.pow(2) <= (r * 0.6) ** 2)
        volumes[i, 0][inside] += 1.0
        z, y, x = inside.nonzero().unbind(1)
        boxes[i] = torch.tensor([x.min(), y.min(), z.min(), x.max() + 1, y.max() + 1, z.max() + 1]).float()
    return volumes, labels, boxes


class VolumesDataset(Dataset):
    """Volumes as dicts ``{"image", "label", "box"}`` (the box lets SaliencyMonitor score localisation in 3-D)."""

    classes = CLASSES

    def __init__(self, n: int, seed: int = 0) -> None:
        self.volumes, self.labels, self.boxes = make_volumes(n, seed=seed)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.volumes[i], "label": self.labels[i], "box": self.boxes[i]}


class Small3DCNN(L.LightningModule):
    """Three ``Conv3d`` blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int = len(CLASSES), lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU())

        self.features = nn.Sequential(block(1, 8), nn.MaxPool3d(2), block(8, 16), nn.MaxPool3d(2), block(16, 32))
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.log(f"{stage}_loss", loss, prog_bar=True)
        self.log(f"{stage}_acc", (logits.argmax(1) == batch["label"]).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], _: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], _: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=384)
    parser.add_argument("--val-size", type=int, default=96)
    parser.add_argument("--view", choices=("slices", "frames"), default="slices")
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    train = DataLoader(VolumesDataset(args.train_size, seed=args.seed), batch_size=32, shuffle=True)
    val = DataLoader(VolumesDataset(args.val_size, seed=args.seed + 1), batch_size=48)
    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam", "gradcam++"],
        num_samples=3,
        volume_view=args.view,
        log_prefix="volumes",
    )
    logger = TensorBoardLogger(args.logdir, name="volumes")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[monitor],
        logger=logger,
        accelerator="cpu",
        log_every_n_steps=5,
        enable_model_summary=False,
    )
    trainer.fit(Small3DCNN(), train, val)
    print(
        f"\nSaliency maps of the volumes were logged to {logger.log_dir}\n"
        f"Open them with:\n\n    tensorboard --logdir {args.logdir} --samples_per_plugin images=100\n\n"
        "and pick the IMAGES tab (volumes/overview: each cell the axial, coronal, sagittal slices and the MIP)\n"
        "or the SALIENCY tab."
    )
    return Path(logger.log_dir)


if __name__ == "__main__":
    main()
