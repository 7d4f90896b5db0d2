"""The demo: a small CNN learns a shortcut, and its saliency maps and scores show it.

    python examples/train_shapes.py                # about two minutes on a laptop CPU
    tensorboard --logdir lightning_logs --samples_per_plugin images=100

The task is to tell discs, squares and crosses apart. In the training images a small corner marker's colour
gives the class away; in the validation images its colour is random. The network learns the marker: the maps
(IMAGES tab, ``saliency/overview``) light up the corner instead of the object, the localisation scores on the
object boxes (SCALARS, ``saliency/<method>/energy_pointing_game``) stay low, an alarm names the images
(TEXT, ``saliency/alarms``), and validation accuracy is far below training accuracy. Run with ``--no-shortcut``
to train without the marker and see the maps move onto the objects instead.
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
from shapes import CLASSES, MEAN, STD, ShapesDataset

from lightning_saliency import Alarm, SaliencyMonitor


class SmallCNN(L.LightningModule):
    """Four conv blocks, global pooling, a linear head."""

    def __init__(self, num_classes: int = len(CLASSES), lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            )

        self.features = nn.Sequential(
            block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 64)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, prog_bar=True)
        self.log(f"{stage}_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], _: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=1536)
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shortcut", action="store_true", help="train without the spurious corner marker")
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    shortcut = None if args.no_shortcut else 1.0  # training: the marker gives the class away
    held_out = None if args.no_shortcut else 0.0  # validation: the marker's colour is random
    train = DataLoader(ShapesDataset(args.train_size, seed=args.seed, marker=shortcut), batch_size=64, shuffle=True)
    val = DataLoader(ShapesDataset(args.val_size, seed=args.seed + 1, marker=held_out), batch_size=128)
    monitor = SaliencyMonitor(
        methods=["gradient", "smoothgrad", "gradcam", "gradcam++"],
        num_samples=6,
        targets="predicted",  # explain what the model decided
        mean=MEAN,
        std=STD,
        alarms=[Alarm("energy_pointing_game", below=0.25, methods=["gradcam"])],
    )
    logger = TensorBoardLogger(args.logdir, name="shapes" if shortcut else "shapes_no_shortcut")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[monitor],
        logger=logger,
        accelerator="cpu",
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    trainer.fit(SmallCNN(), train, val)
    print(
        f"\nSaliency maps and timings were logged to {logger.log_dir}\n"
        f"Open them with:\n\n    tensorboard --logdir {args.logdir} --samples_per_plugin images=100\n\n"
        "(--samples_per_plugin keeps every logged epoch on the step slider; TensorBoard keeps 10 by default)\n"
        "then browse to http://localhost:6006 and pick the IMAGES tab (saliency/overview: one row per probe image,\n"
        "the input then each method's overlay; move the step slider to follow the epochs) and SCALARS for timings."
    )
    return Path(logger.log_dir)


if __name__ == "__main__":
    main()
