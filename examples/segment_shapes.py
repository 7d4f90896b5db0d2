"""Saliency of a segmentation model: which pixels make it call a region a disc?

    python examples/segment_shapes.py              # about a minute on a laptop CPU
    tensorboard --logdir lightning_logs --samples_per_plugin images=100

Each scene holds a disc, a square and a cross (``examples/shapes.py``); a small encoder-decoder labels every
pixel. ``SegmentationTarget(1)`` explains the *disc* logits summed over the true disc pixels (pytorch-grad-cam's
``SemanticSegmentationTarget``), so the maps (IMAGES, ``segment/overview``) should sit on the disc, not on the
other shapes; the pointing games and ``localisation_iou`` (SCALARS) compare each map with the disc's mask (green in
``segment/localisation``). ``target_layer="auto"`` takes the encoder's end, the coarsest feature map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import MEAN, SCENE_CLASSES, STD, ScenesDataset

from lightning_saliency import SaliencyMonitor, SegmentationTarget


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallSegmenter(L.LightningModule):
    """Encoder (three blocks, 4x downsampling), decoder (two upsampling blocks), per-pixel logits ``[B, 4, H, W]``."""

    def __init__(self, num_classes: int = len(SCENE_CLASSES), lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            block(64, 32),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            block(32, 16),
            nn.Conv2d(16, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = nn.functional.cross_entropy(logits, batch["mask"])
        accuracy = (logits.argmax(1) == batch["mask"]).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=True)
        self.log(f"{stage}_pixel_acc", accuracy, prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=768)
    parser.add_argument("--val-size", type=int, default=128)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    train = DataLoader(ScenesDataset(args.train_size, seed=args.seed), batch_size=32, shuffle=True)
    val = DataLoader(ScenesDataset(args.val_size, seed=args.seed + 1), batch_size=64)
    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam", "gradcam++"],
        targets=SegmentationTarget(SCENE_CLASSES.index("disc")),
        num_samples=4,
        mean=MEAN,
        std=STD,
        log_prefix="segment",
    )
    logger = TensorBoardLogger(args.logdir, name="segment_shapes")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[monitor],
        logger=logger,
        accelerator="cpu",
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    trainer.fit(SmallSegmenter(), train, val)
    print(
        f"\nSaliency maps of the disc logits were logged to {logger.log_dir}\n"
        f"Open them with:\n\n    tensorboard --logdir {args.logdir} --samples_per_plugin images=100\n\n"
        "and pick the IMAGES tab (segment/overview, segment/localisation) or the SALIENCY tab."
    )
    return Path(logger.log_dir)


if __name__ == "__main__":
    main()
