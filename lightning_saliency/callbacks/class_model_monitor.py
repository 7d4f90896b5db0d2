"""``ClassModelMonitor``: class model visualisations (Simonyan et al. 2014) in TensorBoard, every validation epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchvision.utils import make_grid

from lightning_saliency._checks import int_at_least, normalisation, positive_float
from lightning_saliency._runtime import OutputAdapter, Precision, Run, eval_mode, module_device, preserved_rng
from lightning_saliency.callbacks._base import EpochEndMonitor
from lightning_saliency.class_model import InitSpec, class_model_visualisation, valid_input_range
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.monitoring.sinks import Image, Record
from lightning_saliency.probe import split_sample
from lightning_saliency.render import to_display

__all__ = ["ClassModelMonitor"]

_MAX_DEFAULT_CLASSES = 16


class ClassModelMonitor(EpochEndMonitor):
    """Log, at the end of validation (and test) epochs, one image per class that maximises the class score.

    Each logged epoch the TensorBoard *images* tab shows ``class_model/grid`` (``class_model_test/grid`` in
    ``trainer.test()``): one tile per class in ``classes`` order, row-major, ``nrow`` tiles per row, computed by
    :func:`lightning_saliency.class_model.class_model_visualisation` on the trainer's device and precision. Training
    is untouched: the model runs in eval mode (each submodule's mode restored), gradients are taken with respect to
    the image only (parameter ``.grad`` is never written) and training's RNG streams are forked.

    Args:
        classes: Class indices to visualise, or ``None`` for every class of the model (the first 16, with a
            :class:`~lightning_saliency.SaliencyWarning`, if it has more).
        input_shape: ``(C, H, W)`` of one input, or ``None`` to take it from the first validation (or test) batch.
        steps: Gradient-ascent steps per logged epoch.
        lr: Adam step size on the image.
        weight_decay: ``lambda`` of the L2 penalty ``lambda * ||I||^2``.
        jitter: Largest random roll in pixels per step (0 for none).
        blur_every: Blur the image every this many steps (0 for never).
        blur_sigma: Standard deviation of that blur, in pixels.
        init: ``"zero"``, ``"mean"`` or a Tensor ``[C, H, W]`` (see ``class_model_visualisation``).
        mean: The per-channel mean the inputs were normalised with: the images are kept in the valid input range
            and denormalised for display.
        std: The per-channel standard deviation, likewise.
        seed: Seed of the jitter; the same every logged epoch, so epochs differ only by the model.
        every_n_epochs: Log every n-th validation epoch during ``fit`` (``validate``/``test`` always log).
        nrow: Tiles per grid row (default: up to 8).
        min_display_size: Small tiles are upscaled (nearest) until their shorter side has this many pixels.
        output_adapter: Turns the model's output into logits ``[B, num_classes]`` if it is not a tensor, a tuple
            starting with one, a dict with ``"logits"`` or an object with ``.logits``.
        log_prefix: Tag prefix in TensorBoard.

    Raises:
        ValueError: If an argument is out of range.
        TypeError: If an argument has the wrong type.

    Example:
        >>> monitor = ClassModelMonitor(classes=[0, 2], steps=50, mean=[0.5], std=[0.25])
        >>> monitor.classes, monitor.steps
        ([0, 2], 50)
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        steps: int = 100,
        lr: float = 0.05,
        weight_decay: float = 1e-3,
        jitter: int = 0,
        blur_every: int = 0,
        blur_sigma: float = 0.5,
        init: InitSpec = "zero",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        every_n_epochs: int = 1,
        nrow: int | None = None,
        min_display_size: int = 96,
        output_adapter: OutputAdapter | None = None,
        log_prefix: str = "class_model",
    ) -> None:
        super().__init__(every_n_epochs, log_prefix)
        if classes is not None and (
            isinstance(classes, (str, Tensor))
            or not isinstance(classes, Sequence)
            or not classes
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)
        ):
            raise ValueError(f"classes must be None or a non-empty list of class indices >= 0, got {classes!r}.")
        self.classes: list[int] | None = list(classes) if classes is not None else None
        if input_shape is not None and (
            not isinstance(input_shape, Sequence)
            or len(input_shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
        ):
            raise ValueError(f"input_shape must be None or (C, H, W) with positive ints, got {input_shape!r}.")
        self.input_shape: tuple[int, ...] | None = tuple(input_shape) if input_shape is not None else None
        self.steps = int_at_least(steps, 1, "steps")
        self.jitter = int_at_least(jitter, 0, "jitter")
        self.blur_every = int_at_least(blur_every, 0, "blur_every")
        self.min_display_size = int_at_least(min_display_size, 1, "min_display_size")
        self.nrow = int_at_least(nrow, 1, "nrow") if nrow is not None else None
        self.lr = positive_float(lr, "lr")
        self.blur_sigma = positive_float(blur_sigma, "blur_sigma")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a float >= 0 (lambda of the L2 penalty), got {weight_decay!r}.")
        self.weight_decay = float(weight_decay)
        if not (isinstance(init, Tensor) or init in ("zero", "mean")):
            raise ValueError(f"init must be 'zero', 'mean' or a Tensor [C, H, W], got {init!r}.")
        if isinstance(init, str) and init == "mean" and mean is None:
            raise ValueError("init='mean' needs `mean=` (the per-channel mean the inputs were normalised with).")
        self.init: InitSpec = init.detach().cpu().clone() if isinstance(init, Tensor) else init
        self.mean, self.std = normalisation(mean, std)
        if self.input_shape is not None and (self.mean is not None or self.std is not None):
            valid_input_range(self.input_shape[0], self.mean, self.std)  # raises on a channel-count mismatch
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}.")
        self.seed = seed
        if output_adapter is not None and not callable(output_adapter):
            raise TypeError(f"output_adapter must be callable (output -> logits), got {output_adapter!r}.")
        self.output_adapter = output_adapter
        self._seen_shape: tuple[int, ...] | None = None
        self._default_classes: list[int] | None = None
        self.last_images: Tensor | None = None
        """The images of the last logged epoch on rank 0: ``[K, C, H, W]`` in input space, on the CPU."""
        self.last_classes: list[int] = []
        """The classes of :attr:`last_images`, in order."""

    # ------------------------------------------------------------------ Lightning hooks

    def __repr__(self) -> str:
        return f"ClassModelMonitor(classes={self.classes}, log_prefix={self.log_prefix!r})"

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several monitors can live in one checkpoint."""
        return self._generate_state_key(classes=self.classes, log_prefix=self.log_prefix)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Remember the input shape of the first batch (when ``input_shape`` was not given)."""
        self._see_batch(batch)

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Remember the input shape of the first batch (when ``input_shape`` was not given)."""
        self._see_batch(batch)

    # ------------------------------------------------------------------ the work

    def compute(
        self, model: nn.Module, input_shape: Sequence[int] | None = None, precision: Precision | None = None
    ) -> Tensor:
        """The class model images ``[K, C, H, W]`` (input space, float32, on the CPU) for ``model``.

        Usable outside a Trainer: ``monitor.compute(model, (3, 32, 32))``.

        Raises:
            ValueError: If no input shape is known (neither given here, nor at construction, nor seen in a batch).
        """
        shape = tuple(input_shape) if input_shape is not None else self.input_shape or self._seen_shape
        if shape is None:
            raise ValueError(
                "ClassModelMonitor does not know the input shape: give `input_shape=(C, H, W)`, or run it in a "
                "Trainer with validation (or test) data so it can take the shape from the first batch."
            )
        device = module_device(model)
        run = Run(precision or Precision(), self.output_adapter)
        classes = self._resolve_classes(model, shape, run, device)
        images = class_model_visualisation(
            model,
            classes,
            shape,
            steps=self.steps,
            lr=self.lr,
            weight_decay=self.weight_decay,
            jitter=self.jitter,
            blur_every=self.blur_every,
            blur_sigma=self.blur_sigma,
            init=self.init,
            mean=self.mean,
            std=self.std,
            seed=self.seed,
            run=run,
            device=device,
        )
        self.last_classes = classes
        return images.cpu()

    def grid(self, images: Tensor) -> Tensor:
        """The displayed grid ``[3, H', W']`` in [0, 1] of images ``[K, C, H, W]`` (denormalised with mean/std)."""
        tiles = _upscale(to_display(images, self.mean, self.std), self.min_display_size)  # [K,3,h,w]
        nrow = self.nrow or min(images.shape[0], 8)
        return make_grid(tiles, nrow=nrow, padding=2, pad_value=1.0)

    def _resolve_classes(self, model: nn.Module, shape: tuple[int, ...], run: Run, device: torch.device) -> list[int]:
        if self.classes is not None:
            return self.classes
        if self._default_classes is None:
            with preserved_rng([device]), eval_mode(model), torch.no_grad():
                num_classes = run.logits(model, torch.zeros(1, *shape, device=device)).shape[1]
            self._default_classes = list(range(min(num_classes, _MAX_DEFAULT_CLASSES)))
            if num_classes > _MAX_DEFAULT_CLASSES:
                rank_zero_warn(
                    f"ClassModelMonitor(classes=None) visualises the first {_MAX_DEFAULT_CLASSES} of the model's "
                    f"{num_classes} classes; pass `classes=[...]` to choose.",
                    category=SaliencyWarning,
                )
        return self._default_classes

    def _see_batch(self, batch: Any) -> None:
        if self.input_shape is not None or self._seen_shape is not None:
            return
        x, _ = split_sample(batch)
        self._seen_shape = tuple(int(d) for d in x.shape[1:])

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Rank 0 computes and logs; the other ranks do nothing. Nothing below calls a collective.
        if not trainer.is_global_zero:
            return
        images = self.compute(pl_module, precision=Precision.from_trainer(trainer))
        self.last_images = images
        tag = f"{self._prefix(stage)}/grid"
        caption = f"classes {self.classes} at epoch {trainer.current_epoch}, step {trainer.global_step}"
        self._write(trainer, Record(trainer.global_step, images=[Image(tag, self.grid(images), caption)]))


# ---------------------------------------------------------------------- argument checks


def _upscale(tiles: Tensor, min_size: int) -> Tensor:
    """Nearest-neighbour upscale by an integer factor so the shorter side is at least ``min_size``."""
    factor = max(1, -(-min_size // max(min(tiles.shape[-2:]), 1)))
    return tiles if factor == 1 else F.interpolate(tiles, scale_factor=factor, mode="nearest")
