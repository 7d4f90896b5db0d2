"""``SaliencyMonitor``: saliency maps of a fixed probe batch in TensorBoard, every validation epoch."""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_saliency._runtime import OutputAdapter, Precision, eval_mode, gradients_enabled, preserved_rng
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods import SaliencyMethod, compute_saliency, get_method
from lightning_saliency.methods.base import GradientMethod, Run, _shares_pass
from lightning_saliency.probe import Probe, probe_from_dataloader, probe_from_dataset
from lightning_saliency.render import COLORMAPS, method_grid, overview_grid, to_display

__all__ = ["SaliencyMonitor"]

ProbeSpec = Tensor | tuple[Tensor, Tensor] | Sequence[int] | Probe | None
TargetSpec = str | int

_DEFAULT_METHODS = ("gradient", "gradcam", "gradcam++")
_STAGE_PREFIX = {"validate": "", "test": "_test"}


class SaliencyMonitor(Callback):
    """Log saliency maps of a fixed probe batch to TensorBoard at the end of validation (and test) epochs.

    For each logged epoch the TensorBoard *images* tab shows ``saliency/overview`` (one row per probe image:
    the input, then each method's overlay) and ``saliency/<method>`` (input, heat map, overlay); the *scalars*
    tab shows ``saliency/time/<...>``, the seconds the work took. In ``trainer.test()`` the prefix is
    ``saliency_test``. The training itself is untouched: weights, optimizer state, BatchNorm statistics, RNG
    streams, module modes and parameter ``.grad`` are the same with or without this callback.

    Args:
        methods: Registry names (``lightning_saliency.available_methods()``) or method instances.
            Gradient-family methods share one forward and one backward pass.
        target_layer: Layer for CAM methods given by name: ``"auto"`` (the last feature map before global
            pooling), a dotted module name (``"layer4"``) or a module.
        num_samples: Probe size when the probe is taken from the validation data.
        probe: ``None`` (take ``num_samples`` from the validation data, deterministically and balanced over
            classes), a Tensor ``[B, C, H, W]``, a tuple ``(inputs, labels)``, or dataset indices.
        targets: Whose map to explain: ``"label"`` (the true class, default), ``"predicted"`` (the model's
            current top class) or a fixed class index.
        every_n_epochs: Log every n-th validation epoch during ``fit`` (``validate``/``test`` always log).
        mean: The per-channel mean the inputs were normalised with, to show them as images.
        std: The per-channel standard deviation, likewise.
        colormap: ``"turbo"``, ``"viridis"`` or ``"inferno"``.
        alpha: Opacity of the heat map over the image.
        min_display_size: Small images are upscaled (nearest) until their shorter side has this many pixels.
        output_adapter: Turns the model's output into logits ``[B, num_classes]`` if it is not a tensor, a
            tuple starting with one, a dict with ``"logits"`` or an object with ``.logits``.
        log_prefix: Tag prefix in TensorBoard.

    Raises:
        ValueError: If an argument is out of range or names an unknown method.
        TypeError: If an argument has the wrong type.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> monitor = SaliencyMonitor(methods=["gradient", "gradcam"], num_samples=4, mean=[0.5], std=[0.5])
        >>> [m.label for m in monitor.methods]
        ['gradient', 'gradcam']
    """

    def __init__(
        self,
        methods: Sequence[str | SaliencyMethod] = _DEFAULT_METHODS,
        *,
        target_layer: LayerSpec = "auto",
        num_samples: int = 8,
        probe: ProbeSpec = None,
        targets: TargetSpec = "label",
        every_n_epochs: int = 1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "turbo",
        alpha: float = 0.5,
        min_display_size: int = 96,
        output_adapter: OutputAdapter | None = None,
        log_prefix: str = "saliency",
    ) -> None:
        super().__init__()
        self.methods = _build_methods(methods, target_layer)
        self.num_samples = _positive_int(num_samples, "num_samples")
        self.every_n_epochs = _positive_int(every_n_epochs, "every_n_epochs")
        self.min_display_size = _positive_int(min_display_size, "min_display_size")
        if not (isinstance(targets, int) and not isinstance(targets, bool) and targets >= 0) and targets not in (
            "label",
            "predicted",
        ):
            raise ValueError(f"targets must be 'label', 'predicted' or a class index >= 0, got {targets!r}.")
        self.targets = targets
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a float in [0, 1], got {alpha!r}.")
        self.mean, self.std = _floats(mean, "mean"), _floats(std, "std")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got mean={self.mean} and std={self.std}.")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}.")
        if not isinstance(log_prefix, str) or not log_prefix:
            raise ValueError(f"log_prefix must be a non-empty string, got {log_prefix!r}.")
        if output_adapter is not None and not callable(output_adapter):
            raise TypeError(f"output_adapter must be callable (output -> logits), got {output_adapter!r}.")
        self.colormap, self.alpha, self.log_prefix = colormap, float(alpha), log_prefix
        self.output_adapter = output_adapter
        self._probe_spec = _check_probe_spec(probe)
        self._probes: dict[str, Probe] = {}
        self._probe_indices: list[int] | None = None
        self._warned_no_tensorboard = False
        self.last_maps: dict[str, Tensor] = {}
        """The maps of the last logged epoch on rank 0: method label -> ``[B, 1, H, W]`` on the CPU."""

    # ------------------------------------------------------------------ Lightning hooks

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several monitors can live in one checkpoint."""
        return self._generate_state_key(methods=[m.label for m in self.methods], log_prefix=self.log_prefix)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the environment: a TensorBoard logger is needed to see images."""
        if not self._tensorboard_loggers(trainer) and not self._warned_no_tensorboard:
            self._warned_no_tensorboard = True
            rank_zero_warn(
                "SaliencyMonitor found no TensorBoardLogger in the Trainer's loggers, so saliency images will not "
                "be logged (timings still go to the other loggers). Add `logger=TensorBoardLogger(...)`.",
                category=SaliencyWarning,
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log, every ``every_n_epochs`` during fit; skipped in the sanity check."""
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._run(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute and log on the test probe."""
        self._run(trainer, pl_module, "test")

    def state_dict(self) -> dict[str, Any]:
        """What identifies the probe (dataset indices, not tensors)."""
        return {"probe_indices": self._probe_indices, "num_samples": self.num_samples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the probe identity saved by :meth:`state_dict`."""
        indices = state_dict.get("probe_indices")
        if indices is not None and self._probe_spec is None:
            self._probe_spec = [int(i) for i in indices]

    # ------------------------------------------------------------------ the work

    def compute(self, pl_module: nn.Module, probe: Probe, precision: Precision | None = None) -> dict[str, Tensor]:
        """Maps of ``probe`` for every method: label -> ``[B, 1, H, W]`` float32 on the CPU.

        Usable outside a Trainer, e.g. in a notebook: ``monitor.compute(model, Probe(images, labels))``.
        """
        maps, _ = self._compute_timed(pl_module, probe, precision or Precision())
        return maps

    def _compute_timed(
        self, pl_module: nn.Module, probe: Probe, precision: Precision
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        device = _module_device(pl_module)
        run = Run(precision, self.output_adapter)
        maps: dict[str, Tensor] = {}
        times: dict[str, float] = {}
        with preserved_rng([device]), gradients_enabled():
            inputs = probe.inputs.to(device)  # a normal tensor: created outside inference mode
            targets = self._resolve_targets(pl_module, inputs, probe, run)
            shared = [m for m in self.methods if isinstance(m, GradientMethod) and _shares_pass(m)]
            groups: list[tuple[str, list[SaliencyMethod]]] = []
            if shared:
                groups.append(("gradient_pass" if len(shared) > 1 else shared[0].label, shared))
            groups += [(m.label, [m]) for m in self.methods if m not in shared]
            for timing_name, group in groups:
                start = _now(device)
                results = compute_saliency(
                    pl_module, inputs, targets, group, precision=precision, output_adapter=self.output_adapter
                )
                times[timing_name] = _now(device) - start
                maps.update({m.label: r.cpu() for m, r in zip(group, results, strict=True)})
        ordered = {m.label: maps[m.label] for m in self.methods}
        return ordered, times

    def _resolve_targets(self, model: nn.Module, inputs: Tensor, probe: Probe, run: Run) -> Tensor:
        b = inputs.shape[0]
        if self.targets == "label":
            if probe.labels is None:
                raise ValueError(
                    "targets='label' needs labels, but the probe has none (the validation samples carry no label, "
                    "or `probe=` was given as inputs only). Use targets='predicted', a class index, or give "
                    "`probe=(inputs, labels)`."
                )
            return probe.labels.to(inputs.device)
        if isinstance(self.targets, int):
            return torch.full((b,), self.targets, dtype=torch.long, device=inputs.device)
        with eval_mode(model), torch.no_grad():
            logits = run.logits(model, inputs)
        return logits.float().argmax(1)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Rank 0 computes and logs; the other ranks do nothing. Nothing below calls a collective.
        if not trainer.is_global_zero:
            return
        start = time.perf_counter()
        with preserved_rng([trainer.strategy.root_device]):
            probe = self._get_probe(trainer, stage)
        maps, times = self._compute_timed(pl_module, probe, Precision.from_trainer(trainer))
        self.last_maps = maps
        images = to_display(probe.inputs, self.mean, self.std)  # [B,3,H,W]
        prefix = self.log_prefix + _STAGE_PREFIX[stage]
        step = trainer.global_step
        grids = {
            f"{prefix}/overview": overview_grid(
                images, maps, alpha=self.alpha, colormap=self.colormap, min_size=self.min_display_size
            )
        }
        for label, m in maps.items():
            grids[f"{prefix}/{label}"] = method_grid(
                images, m, alpha=self.alpha, colormap=self.colormap, min_size=self.min_display_size
            )
        times["total"] = time.perf_counter() - start
        for logger in self._tensorboard_loggers(trainer):
            for tag, grid in grids.items():
                logger.experiment.add_image(tag, grid, global_step=step, dataformats="CHW")
        scalars = {f"{prefix}/time/{name}": seconds for name, seconds in times.items()}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _get_probe(self, trainer: pl.Trainer, stage: str) -> Probe:
        if stage in self._probes:
            return self._probes[stage]
        spec = self._probe_spec
        if isinstance(spec, Probe):
            probe = spec
        elif isinstance(spec, Tensor):
            probe = Probe(spec)
        elif isinstance(spec, tuple):
            probe = Probe(spec[0], spec[1])
        else:
            loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is None:
                raise ValueError(f"SaliencyMonitor needs {stage} data to take its probe from, or `probe=`.")
            dataset = getattr(loader, "dataset", None)
            with torch.inference_mode(False):
                if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
                    probe = probe_from_dataset(dataset, self.num_samples, spec)
                elif spec is not None:
                    raise ValueError("probe indices need a map-style validation dataset (with __len__/__getitem__).")
                else:
                    probe = probe_from_dataloader(loader, self.num_samples)
            if stage == "validate":
                self._probe_indices = probe.indices
        self._probes[stage] = probe
        return probe

    @staticmethod
    def _tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


# ---------------------------------------------------------------------- argument checks


def _build_methods(methods: Sequence[str | SaliencyMethod], target_layer: LayerSpec) -> list[SaliencyMethod]:
    if isinstance(methods, (str, SaliencyMethod)):
        methods = [methods]
    if not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names or instances, got {methods!r}.")
    built: list[SaliencyMethod] = []
    for m in methods:
        if isinstance(m, SaliencyMethod):
            built.append(m)
            continue
        if not isinstance(m, str):
            raise TypeError(f"Each method must be a registered name or a SaliencyMethod instance, got {m!r}.")
        cls = type(get_method(m))
        accepts_layer = "target_layer" in inspect.signature(cls.__init__).parameters
        built.append(get_method(m, **({"target_layer": target_layer} if accepts_layer else {})))
    labels = [m.label for m in built]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(
            f"Method labels must be unique, got {labels}; give repeated methods a `name=` (e.g. "
            f"GradCAM(target_layer='layer3', name='gradcam_layer3'))."
        )
    return built


def _positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be an int >= 1, got {value!r}.")
    return value


def _floats(values: Sequence[float] | None, arg: str) -> list[float] | None:
    if values is None:
        return None
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a sequence of floats (one per channel), got {values!r}.") from None
    if not floats:
        raise ValueError(f"{arg} must have one value per input channel, got an empty sequence.")
    return floats


def _check_probe_spec(probe: ProbeSpec) -> ProbeSpec:
    if probe is None or isinstance(probe, Probe):
        return probe
    if isinstance(probe, Tensor):
        return Probe(probe).inputs
    if isinstance(probe, tuple) and len(probe) == 2 and isinstance(probe[0], Tensor):
        checked = Probe(probe[0], probe[1])
        return (checked.inputs, checked.labels) if checked.labels is not None else checked.inputs
    if (
        isinstance(probe, Sequence)
        and not isinstance(probe, str)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in probe)
    ):
        if not probe:
            raise ValueError("probe indices must not be empty.")
        return list(probe)
    raise TypeError(
        f"probe must be None, a Tensor [B, C, H, W], a tuple (inputs, labels), or a list of dataset indices, "
        f"got {type(probe).__name__}."
    )


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
