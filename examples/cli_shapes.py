"""The shapes demo behind LightningCLI: model, data, trainer and every callback configured from YAML.

    python examples/cli_shapes.py fit --config examples/config_shapes.yaml
    python examples/cli_shapes.py fit --config examples/config_shapes.yaml --trainer.max_epochs=1 \
        --data.train_size=256 --trainer.callbacks.methods=[gradient,gradcam]
    python examples/cli_shapes.py fit --config examples/config_shapes.yaml --print_config  # every option
    tensorboard --logdir lightning_logs --samples_per_plugin images=100

Callbacks can also be added on the command line alone (needs ``pip install "lightning-saliency[cli]"``):
``--trainer.callbacks+=lightning_saliency.SaliencyMonitor --trainer.callbacks.methods=[gradient,gradcam]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import ShapesDataset
from train_shapes import SmallCNN


class ShapesDataModule(L.LightningDataModule):
    """Synthetic shapes (disc, square, cross) made from a seed; validation uses the next seed."""

    def __init__(
        self, train_size: int = 1536, val_size: int = 256, size: int = 64, batch_size: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        h = self.hparams
        if stage == "fit":
            self.train_set = ShapesDataset(h.train_size, size=h.size, seed=h.seed)
        self.val_set = ShapesDataset(h.val_size, size=h.size, seed=h.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=2 * self.hparams.batch_size)


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (for tests)."""
    return LightningCLI(
        SmallCNN,
        ShapesDataModule,
        seed_everything_default=0,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
