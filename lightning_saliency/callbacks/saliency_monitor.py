"""``SaliencyMonitor``: saliency maps of a fixed probe batch in TensorBoard, every validation epoch."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least, normalisation
from lightning_saliency._runtime import (
    OutputAdapter,
    Precision,
    Run,
    eval_mode,
    gradients_enabled,
    module_device,
    preserved_rng,
)
from lightning_saliency.callbacks._base import EpochEndMonitor
from lightning_saliency.distributed import all_gather_objects, gather_rows, shard
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import LayerSpec
from lightning_saliency.localisation import draw_localisation, saliency_to_box
from lightning_saliency.methods import SaliencyMethod, compute_saliency, get_method
from lightning_saliency.methods.base import GradientMethod
from lightning_saliency.metrics import (
    SCORES,
    evaluate_scores,
    infidelity,
    map_stability,
    model_randomisation_score,
    road_score,
    saliency_attack_score,
    sensitivity_max,
)
from lightning_saliency.probe import Probe, probe_from_dataloader, probe_from_dataset
from lightning_saliency.render import (
    COLORMAPS,
    column_grid,
    curve_plot,
    filmstrip_grid,
    method_grid,
    overview_grid,
    row_labels,
    to_display,
)
from lightning_saliency.targets import ClassTarget

__all__ = ["SaliencyMonitor"]

ProbeSpec = Tensor | tuple[Tensor, Tensor] | Sequence[int] | Probe | None
TargetSpec = Literal["label", "predicted"] | int

_DEFAULT_METHODS = ("gradient", "gradcam", "gradcam++")
_DEFAULT_SCORES = (
    "deletion",
    "insertion",
    "average_drop",
    "increase_in_confidence",
    "pointing_game",
    "energy_pointing_game",
    "localisation_iou",
    "map_stability",
)
_EXPENSIVE = ("model_randomisation", "saliency_attack", "road", "infidelity", "sensitivity_max")
# Strategies whose forward needs every rank (sharded parameters): the methods run data-dependent numbers of
# forwards per rank (Score-CAM skips dead channels, attacks stop early), which would deadlock them.
_UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
_STATE_VERSION = 2
_X_LABELS = {"deletion": "fraction of pixels deleted", "insertion": "fraction of pixels inserted"}
# Scores computed together by one `evaluate_scores` call (they share forwards); timed as one entry.
_SCORE_GROUPS = (("deletion",), ("insertion",), ("average_drop", "increase_in_confidence"))


@dataclass(frozen=True)
class Alarm:
    """Warn when a per-image score crosses a threshold.

    When, at a logged epoch, the score of some probe images is below ``below`` (or above ``above``), the
    monitor emits a :class:`~lightning_saliency.SaliencyWarning` and writes a ``saliency/alarms`` text entry to
    TensorBoard naming the method, the images (probe positions and dataset indices) and their values.

    Args:
        score: A score name the monitor computes (e.g. ``"energy_pointing_game"``, ``"map_stability"``).
        below: Fire for images whose score is lower than this.
        above: Fire for images whose score is higher than this.
        methods: Method labels to watch; all methods if ``None``.

    Example:
        >>> Alarm("energy_pointing_game", below=0.3)
        Alarm(score='energy_pointing_game', below=0.3, above=None, methods=None)
    """

    score: str
    below: float | None = None
    above: float | None = None
    methods: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"Alarm score must be one of {', '.join(SCORES)}, got {self.score!r}.")
        if self.below is None and self.above is None:
            raise ValueError(f"Alarm({self.score!r}) needs a threshold: give below= or above=.")

    def fired(self, values: Tensor) -> Tensor:
        """Boolean ``[B]``: which images' values cross the threshold (NaN never fires)."""
        hit = torch.zeros_like(values, dtype=torch.bool)
        if self.below is not None:
            hit |= values < self.below
        if self.above is not None:
            hit |= values > self.above
        return hit

    def describe(self) -> str:
        """``"< 0.3"``, ``"> 0.9"`` or both."""
        parts = ([f"< {self.below:g}"] if self.below is not None else []) + (
            [f"> {self.above:g}"] if self.above is not None else []
        )
        return " or ".join(parts)


class SaliencyMonitor(EpochEndMonitor):
    """Log saliency maps of a fixed probe batch to TensorBoard at the end of validation (and test) epochs.

    For each logged epoch the TensorBoard *images* tab shows ``saliency/overview`` (one row per probe image:
    the input, then each method's overlay) and ``saliency/<method>`` (input, heat map, overlay); the *scalars*
    tab shows ``saliency/<method>/<score>`` (each score's mean over the probe), grouped across methods in the
    *custom scalars* tab, and ``saliency/time/<...>``, the seconds the work took; ``saliency/curves`` plots the
    mean deletion and insertion curves and ``saliency/filmstrip/<method>`` each image's map over the last
    ``history_size`` logged epochs. In ``trainer.test()`` the prefix is
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
        scores: Scores per method (names in ``lightning_saliency.metrics.SCORES``): ``deletion`` and
            ``insertion`` AUC (Petsiuk et al. 2018), ``average_drop`` and ``increase_in_confidence``
            (Chattopadhay et al. 2018), ``pointing_game``, ``energy_pointing_game`` and ``localisation_iou``
            (need probe boxes or masks, otherwise skipped with a one-time note; the last is the IoU of the box
            of the map's largest Otsu component, Simonyan et al. 2014), ``map_stability`` (rank correlation
            with the previous logged epoch), and the costly ``model_randomisation`` (Adebayo et al. 2018, on a
            copy of the model), ``saliency_attack`` (CAMERAS), ``road`` (Rong et al. 2022), ``infidelity`` and
            ``sensitivity_max`` (Yeh et al. 2019, as captum), which run every ``expensive_every_n_epochs``.
            Pass ``()`` for none. Cost per logged epoch and method: about ``2 * (score_steps + 1) + 2``
            forwards of the probe batch.
        score_steps: Steps of the deletion/insertion curves.
        score_batch_size: Most perturbed images per forward while scoring (bounds memory).
        expensive_every_n_epochs: How often (in epochs) the costly scores run during ``fit``.
        mean: The per-channel mean the inputs were normalised with, to show them as images.
        std: The per-channel standard deviation, likewise.
        colormap: ``"turbo"``, ``"viridis"`` or ``"inferno"``.
        alpha: Opacity of the heat map over the image.
        min_display_size: Small images are upscaled (nearest) until their shorter side has this many pixels.
        localisation: Log ``saliency/localisation``: each method's weakly-supervised box (Otsu threshold, largest
            connected component; red) drawn on its overlay, with the probe's true box or mask (green) if known.
        alarms: :class:`Alarm` s: per-image score thresholds that warn and write a TensorBoard text entry.
        strict: If ``False`` (default), an exception inside a method or score is reported (one warning with the
            traceback summary, a ``saliency/errors`` text entry) and training continues; if ``True`` it is raised.
        history_size: How many logged epochs the ``saliency/filmstrip/<method>`` grids show (maps are kept on
            the CPU at most 64 px on a side: ``history_size * B * 64 * 64`` floats per method at most).
        output_adapter: Turns the model's output into logits ``[B, num_classes]`` if it is not a tensor, a
            tuple starting with one, a dict with ``"logits"`` or an object with ``.logits``.
        log_prefix: Tag prefix in TensorBoard.
        class_names: Names of the classes, for the row labels of the grids (true class, prediction and its
            probability); by default the ``classes`` attribute of the validation dataset or the datamodule (as
            torchvision's ``ImageFolder`` has), else the class indices.
        grid_columns: At most this many cells per line in the grids (default 5: the input and four methods);
            with more methods an image's cells are spread over several lines, so the grids stay readable at
            TensorBoard's default card width. ``None`` for one line per image however wide.

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
        scores: Sequence[str] = _DEFAULT_SCORES,
        score_steps: int = 16,
        score_batch_size: int = 64,
        expensive_every_n_epochs: int = 5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        colormap: str = "turbo",
        alpha: float = 0.5,
        min_display_size: int = 96,
        localisation: bool = True,
        alarms: Sequence[Alarm] = (),
        strict: bool = False,
        history_size: int = 8,
        output_adapter: OutputAdapter | None = None,
        log_prefix: str = "saliency",
        class_names: Sequence[str] | None = None,
        grid_columns: int | None = 5,
    ) -> None:
        super().__init__(every_n_epochs, log_prefix)
        self.methods = _build_methods(methods, target_layer)
        self.num_samples = int_at_least(num_samples, 1, "num_samples")
        self.min_display_size = int_at_least(min_display_size, 1, "min_display_size")
        self.history_size = int_at_least(history_size, 1, "history_size")
        if not isinstance(localisation, bool):
            raise TypeError(f"localisation must be a bool, got {localisation!r}.")
        self.localisation = localisation
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}.")
        self.strict = strict
        self.scores = _check_scores(scores)
        self.score_steps = int_at_least(score_steps, 1, "score_steps")
        self.score_batch_size = int_at_least(score_batch_size, 1, "score_batch_size")
        self.expensive_every_n_epochs = int_at_least(expensive_every_n_epochs, 1, "expensive_every_n_epochs")
        self.alarms = _check_alarms(alarms, self.methods, self.scores)
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
        self.mean, self.std = normalisation(mean, std)
        if output_adapter is not None and not callable(output_adapter):
            raise TypeError(f"output_adapter must be callable (output -> logits), got {output_adapter!r}.")
        self.colormap, self.alpha = colormap, float(alpha)
        self.class_names = _check_class_names(class_names)
        self._class_names: list[str] | None = self.class_names  # or the data's `classes`, found in setup
        self.grid_columns = None if grid_columns is None else int_at_least(grid_columns, 1, "grid_columns")
        self.output_adapter = output_adapter
        self._probe_spec = _check_probe_spec(probe)
        self._restored_indices: list[int] | None = None  # the probe of a resumed checkpoint (when probe=None)
        self._probes: dict[str, Probe] = {}
        self._probe_indices: list[int] | None = None
        self.last_maps: dict[str, Tensor] = {}
        self.history: dict[str, list[tuple[int, Tensor]]] = {}
        self.last_scores: dict[str, dict[str, float]] = {}
        """The scores of the last logged epoch on rank 0: method label -> score name -> mean over the probe."""
        self._notes: set[str] = set()
        self._errors: set[str] = set()
        self._first_scores: dict[str, dict[str, float]] = {}
        self.last_row_labels: list[list[str]] = []
        """The text left of each grid row at the last logged epoch (probe position, true and predicted class)."""
        self.alarm_log: list[str] = []
        """Messages of the alarms that fired on rank 0, oldest first (at most 100 kept)."""
        self._layouts_written: set[int] = set()
        """Per method label, ``(epoch, maps [B, 1, h, w])`` of the last ``history_size`` logged validation epochs."""
        """The maps of the last logged epoch on rank 0: method label -> ``[B, 1, H, W]`` on the CPU."""

    # ------------------------------------------------------------------ Lightning hooks

    _logs = "saliency images (timings and scores still go to the other loggers)"

    def __repr__(self) -> str:
        return f"SaliencyMonitor(methods={[m.label for m in self.methods]}, log_prefix={self.log_prefix!r})"

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several monitors can live in one checkpoint."""
        return self._generate_state_key(methods=[m.label for m in self.methods], log_prefix=self.log_prefix)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the environment: a supported strategy; a TensorBoard logger to see images.

        Raises:
            ValueError: Under FSDP, DeepSpeed or ModelParallel strategies (sharded parameters).
        """
        names = [cls.__name__ for cls in type(trainer.strategy).__mro__]
        unsupported = next((n for n in names if n in _UNSUPPORTED_STRATEGIES), None)
        if unsupported is not None:
            raise ValueError(
                f"SaliencyMonitor does not support strategy={type(trainer.strategy).__name__} ({unsupported}): its "
                "forward needs every rank, while saliency methods run a data-dependent number of forwards on each "
                "rank's share of the probe. Use DDP (strategy='ddp'), or remove the callback for this run."
            )
        super().setup(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the probe's identity (dataset indices, not tensors) and the map history.

        The history is bounded (``history_size`` epochs of maps at most 64 px a side) and feeds the filmstrips
        and ``map_stability`` of the resumed run.
        """
        return {
            "version": _STATE_VERSION,
            "probe_config": self._probe_config(),
            "probe_indices": self._probe_indices,
            "num_samples": self.num_samples,
            "history": {label: [(epoch, m.clone()) for epoch, m in entries] for label, entries in self.history.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the probe identity and the map history saved by :meth:`state_dict`.

        The configuration given now wins: when it asks for another probe than the checkpoint's (another
        ``num_samples``, or another ``probe=``), the probe is taken anew, the saved history (it belongs to the old
        probe's images) is dropped, and one warning names the old and the new values.
        """
        saved = state_dict.get("probe_config", {"num_samples": state_dict.get("num_samples", self.num_samples)})
        now = self._probe_config()
        if saved != now:
            rank_zero_warn(
                f"SaliencyMonitor resumes with another probe than its checkpoint's ({_describe_probe(saved)} in the "
                f"checkpoint, {_describe_probe(now)} now). The configuration given now wins: the probe is taken anew "
                "and the checkpoint's map history (filmstrips, map_stability) is dropped.",
                category=SaliencyWarning,
            )
            return
        indices = state_dict.get("probe_indices")
        if indices is not None and self._probe_spec is None:
            self._restored_indices = [int(i) for i in indices]
            self._probe_indices = list(self._restored_indices)
        labels = {m.label for m in self.methods}
        history = state_dict.get("history", {})
        self.history = {
            label: [(int(epoch), m.float().cpu()) for epoch, m in entries][-self.history_size :]
            for label, entries in history.items()
            if label in labels
        }

    def _probe_config(self) -> dict[str, Any]:
        """What the user asked for as the probe: ``num_samples`` from the data, dataset indices, or given tensors."""
        spec = self._probe_spec
        if isinstance(spec, Probe):
            return {"inputs": [*spec.inputs.shape, round(float(spec.inputs.double().sum()), 6)]}
        if spec is not None:
            return {"indices": list(spec)}
        return {"num_samples": self.num_samples}

    # ------------------------------------------------------------------ the work

    def compute(self, pl_module: nn.Module, probe: Probe, precision: Precision | None = None) -> dict[str, Tensor]:
        """Maps of ``probe`` for every method: label -> ``[B, 1, H, W]`` float32 on the CPU.

        Usable outside a Trainer, e.g. in a notebook: ``monitor.compute(model, Probe(images, labels))``. An error in
        a method is raised here.
        """
        failures = _Failures(isolate=False)
        return self._evaluate(pl_module, probe, precision or Precision(), failures, with_scores=False).maps

    def _evaluate(
        self,
        pl_module: nn.Module,
        probe: Probe,
        precision: Precision,
        failures: _Failures,
        *,
        with_scores: bool,
        expensive: bool = False,
        progress: Callable[[str], None] = lambda _: None,
    ) -> _Result:
        device = module_device(pl_module)
        run = Run(precision, self.output_adapter)
        result = _Result()
        with preserved_rng([device]), gradients_enabled():
            inputs = probe.inputs.to(device)  # a normal tensor: created outside inference mode
            targets, logits = self._resolve_targets(pl_module, inputs, probe, run)
            probabilities = logits.float().softmax(1)  # [B,N]
            result.confidence, result.predicted = (t.cpu() for t in probabilities.max(1))
            result.targets = targets.cpu()
            self._maps(pl_module, inputs, targets, run, result, failures, progress)
            if with_scores:
                self._scores(pl_module, inputs, targets, probe, run, expensive, result, failures, progress)
        return result

    def _maps(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        run: Run,
        result: _Result,
        failures: _Failures,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        device = inputs.device
        maps: dict[str, Tensor] = {}
        for timing_name, group in self._groups():
            start = _now(device)
            maps.update(self._group_maps(model, inputs, targets, group, run, failures))
            result.times[timing_name] = _now(device) - start
            progress(timing_name)
        result.maps = {m.label: maps[m.label] for m in self.methods if m.label in maps}

    def _group_maps(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        group: list[SaliencyMethod],
        run: Run,
        failures: _Failures,
    ) -> dict[str, Tensor]:
        """Maps (label -> map) of one :func:`compute_saliency` call; a failed shared pass is retried method by method.

        So, when isolating failures, only the method that fails is lost, not the others sharing its pass.
        """

        def maps_of(methods: list[SaliencyMethod]) -> dict[str, Tensor]:
            results = compute_saliency(
                model, inputs, targets, methods, precision=run.precision, output_adapter=run.output_adapter
            )
            return {m.label: r.cpu() for m, r in zip(methods, results, strict=True)}

        if len(group) > 1:
            try:
                return maps_of(group)
            except Exception:
                if not failures.isolate:
                    raise
        out: dict[str, Tensor] = {}
        for method in group:
            with failures.attempt(("method", method.label, None)):
                out.update(maps_of([method]))
        return out

    def _scores(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        probe: Probe,
        run: Run,
        expensive: bool,
        result: _Result,
        failures: _Failures,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        device = inputs.device
        cheap = [n for n in self.scores if SCORES[n].in_evaluate_scores]
        grouped = [[n for n in group if n in cheap] for group in _SCORE_GROUPS]
        groups = [g for g in grouped if g] + [[n] for n in cheap if not any(n in g for g in _SCORE_GROUPS)]
        for method in self.methods:
            label = method.label
            if label not in result.maps:
                continue  # the method failed: nothing to score
            maps = result.maps[label].to(device)
            values: dict[str, Tensor] = {}  # name -> [S] per image
            for group in groups:
                start = _now(device)
                with failures.attempt(*[("score", label, name) for name in group]):
                    scores = evaluate_scores(
                        model,
                        inputs,
                        targets,
                        maps,
                        group,
                        run=run,
                        boxes=probe.boxes,
                        masks=probe.masks,
                        steps=self.score_steps,
                        batch_size=self.score_batch_size,
                    )
                    values.update({name: scores[name].float().cpu() for name in group if name in scores})
                    for mode in ("deletion", "insertion"):
                        if f"{mode}_curve" in scores:
                            result.curves.setdefault(mode, {})[label] = scores[f"{mode}_curve"].float().cpu()
                    for name, reason in scores.skipped.items():
                        self._note(f"SaliencyMonitor skips the score {name!r}: {reason} (give them with the probe).")
                    if any(name in scores for name in group):
                        result.times[f"{label}/{'+'.join(group)}"] = _now(device) - start
            for name in (n for n in _EXPENSIVE if expensive and n in self.scores):
                start = _now(device)
                with failures.attempt(("score", label, name)):
                    values[name] = self._costly_score(name, method, model, inputs, targets, maps, run).float().cpu()
                    result.times[f"{label}/{name}"] = _now(device) - start
            result.scores[label] = values
            progress(f"scores of {label}")

    def _costly_score(
        self,
        name: str,
        method: SaliencyMethod,
        model: nn.Module,
        inputs: Tensor,
        targets: Tensor,
        maps: Tensor,
        run: Run,
    ) -> Tensor:
        """One of the scores that run every ``expensive_every_n_epochs``: per image, ``[B]``."""
        if name == "model_randomisation":
            return model_randomisation_score(model, inputs, targets, method, maps=maps, run=run).mean(0)  # [S,B]->[B]
        if name == "saliency_attack":
            return saliency_attack_score(model, inputs, targets, maps, run=run, bounds=self._input_bounds())
        if name == "road":
            return road_score(model, inputs, targets, maps, batch_size=self.score_batch_size, run=run)
        if name == "infidelity":
            return infidelity(model, inputs, targets, maps, batch_size=self.score_batch_size, run=run)
        assert name == "sensitivity_max", name
        return sensitivity_max(method, model, inputs, targets, run=run)

    def _input_bounds(self) -> tuple[float, float] | None:
        """The valid input range, when the normalisation is known (used to clamp attacks)."""
        if self.mean is None or self.std is None:
            return None
        lows = [(0 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        highs = [(1 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        return min(lows), max(highs)

    def _note(self, message: str) -> None:
        if message not in self._notes:
            self._notes.add(message)
            rank_zero_info(message)

    def _resolve_targets(self, model: nn.Module, inputs: Tensor, probe: Probe, run: Run) -> tuple[Tensor, Tensor]:
        """The class each image's maps explain, ``[B]``, and the model's logits ``[B, N]``.

        One forward first reads the model's output as logits and checks the targets against it: a setup error (an
        output that is not logits, a class out of range) is then the epoch's, reported once, not once per method.
        """
        if self.targets == "label" and probe.labels is None:
            raise ValueError(
                "targets='label' needs labels, but the probe has none (the validation samples carry no label, "
                "or `probe=` was given as inputs only). Use targets='predicted', a class index, or give "
                "`probe=(inputs, labels)`."
            )
        with eval_mode(model), torch.no_grad():
            logits = run.logits(model, inputs)  # [B,N]
        if self.targets == "label":
            assert probe.labels is not None
            targets = probe.labels.to(inputs.device)
        elif isinstance(self.targets, int):
            targets = torch.full((inputs.shape[0],), self.targets, dtype=torch.long, device=inputs.device)
        else:
            targets = logits.float().argmax(1)
        ClassTarget(targets).check(logits)
        return targets, logits

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Every rank takes the same probe, computes its share, and joins the same collectives in the same order
        # (also when its share is padding, or when something failed on it); rank 0 then renders and logs.
        start = time.perf_counter()
        expensive = trainer.state.fn != "fit" or (trainer.current_epoch + 1) % self.expensive_every_n_epochs == 0
        failures = _Failures(isolate=not self.strict)
        error: Exception | None = None
        result, probe = _Result(), None
        try:
            with preserved_rng([trainer.strategy.root_device]):
                probe = self._get_probe(trainer, stage)
            self._check_normalisation(probe)
            share = probe.subset(shard(len(probe), trainer.world_size, trainer.global_rank))
            precision = Precision.from_trainer(trainer)
            with self._progress_bar(trainer, expensive) as progress:
                result = self._evaluate(
                    pl_module, share, precision, failures, with_scores=True, expensive=expensive, progress=progress
                )
        except Exception as exc:  # handled below, on every rank, after the ranks agreed that one failed
            error = exc
        reports = all_gather_objects(trainer, _Report.of(result, failures, error))  # the one agreement collective
        error = _agreed_error(reports, error, trainer.global_rank)
        if error is not None or probe is None:
            self._fail(trainer, stage, error or RuntimeError("no probe"))
            return
        failed = {key: message for report in reports for key, message in report.failed.items()}
        result = _drop_failed(result, failed)
        if trainer.world_size > 1:
            names = sorted({n for report in reports for n in report.score_names})
            result = self._gather(trainer, result, len(probe), names)
        if not trainer.is_global_zero:
            return
        self._report_failures(trainer, stage, reports)
        if not result.maps:
            return  # every method failed: reported above, nothing to draw
        try:
            self._render_and_log(trainer, stage, probe, result, start)
        except Exception as exc:  # after every collective: safe to report on rank 0 alone
            self._fail(trainer, stage, exc)

    def _check_normalisation(self, probe: Probe) -> None:
        """Fail before any work when ``mean``/``std`` do not fit the probe's channels (not after, at rendering)."""
        channels = probe.inputs.shape[1]
        for arg, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, channels):
                raise ValueError(
                    f"{arg} must have one value per input channel ({channels}) or a single value, got {values}."
                )

    def _fail(self, trainer: pl.Trainer, stage: str, error: Exception) -> None:
        """Raise in strict mode; otherwise warn once per distinct error and write a TensorBoard text entry."""
        if self.strict:
            raise error
        summary = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-4))
        message = (
            f"SaliencyMonitor skipped its work at epoch {trainer.current_epoch} ({stage}) after an error; training "
            f"continues (pass strict=True to raise instead). {type(error).__name__}: {error}"
        )
        self._warn_error(trainer, f"{type(error).__name__}: {error}", message, summary)

    def _report_failures(self, trainer: pl.Trainer, stage: str, reports: list[_Report]) -> None:
        """Rank 0: one warning per distinct failure of a method or a score, and its ``saliency/errors`` text."""
        ranks: dict[_Key, list[int]] = {}
        for rank, report in enumerate(reports):
            for key in report.failed:
                ranks.setdefault(key, []).append(rank)
        for key, where in ranks.items():
            kind, label, name = key
            what = f"method {label!r}" if kind == "method" else f"score {name!r} of method {label!r}"
            headline, summary = next(r.failed[key] for r in reports if key in r.failed)
            on = f" on rank(s) {where}" if len(reports) > 1 else ""
            message = (
                f"SaliencyMonitor: the {what} failed at epoch {trainer.current_epoch} ({stage}){on} and is left out of "
                f"this epoch; the other methods and scores are logged and training continues (pass strict=True to "
                f"raise instead). {headline}"
            )
            self._warn_error(trainer, f"{what}: {headline}", message, summary)

    def _warn_error(self, trainer: pl.Trainer, key: str, message: str, summary: str) -> None:
        if key not in self._errors:
            self._errors.add(key)
            rank_zero_warn(f"{message}\n{summary}", category=SaliencyWarning)
        if trainer.is_global_zero:
            for logger in self._tensorboard_loggers(trainer):
                text = f"**{message}**\n\n```\n{summary}\n```"
                logger.experiment.add_text(f"{self.log_prefix}/errors", text, global_step=trainer.global_step)

    def _groups(self) -> list[tuple[str, list[SaliencyMethod]]]:
        """``(timing name, methods)`` per :func:`compute_saliency` call.

        One call for all methods sharing the gradient pass (timed as ``"gradient_pass"``), one per other method.
        """
        shared: list[SaliencyMethod] = [m for m in self.methods if isinstance(m, GradientMethod)]
        groups = [("gradient_pass" if len(shared) > 1 else shared[0].label, shared)] if shared else []
        return groups + [(m.label, [m]) for m in self.methods if m not in shared]

    @contextmanager
    def _progress_bar(self, trainer: pl.Trainer, expensive: bool) -> Iterator[Callable[[str], None]]:
        """A transient tqdm bar under Lightning's own (rank 0, when Lightning shows a TQDM bar)."""
        bar_callback = trainer.progress_bar_callback
        if not (trainer.is_global_zero and isinstance(bar_callback, TQDMProgressBar) and bar_callback.is_enabled):
            yield lambda _: None
            return
        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        total = len(self._groups()) + (len(self.methods) if self.scores else 0)
        bar = Tqdm(total=total, desc="Saliency", leave=False, dynamic_ncols=True, file=sys.stdout)

        def advance(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(1)

        try:
            yield advance
        finally:
            bar.close()

    def _gather(self, trainer: pl.Trainer, result: _Result, size: int, names: list[str]) -> _Result:
        """Every rank's share to the whole probe, in probe order: the same collectives, with the same shapes.

        ``result`` holds the same methods on every rank (failures were agreed and dropped), and ``names`` are the
        score names of all ranks; a score missing on this rank for some method is NaN there (never reported).
        """
        out = _Result(times=result.times)
        labels = [m.label for m in self.methods if m.label in result.maps]
        if not labels:
            return out
        maps = gather_rows(trainer, torch.stack([result.maps[label] for label in labels], 1), size)  # [B,M,1,H,W]
        out.maps = {label: maps[:, i].clone() for i, label in enumerate(labels)}
        classes = gather_rows(trainer, torch.stack([result.predicted, result.targets], 1), size)  # [B,2]
        out.predicted, out.targets = classes[:, 0], classes[:, 1]
        out.confidence = gather_rows(trainer, result.confidence, size)  # [B]
        if names:
            nan = torch.full((len(next(iter(result.maps.values()))),), float("nan"))
            packed = torch.stack(
                [torch.stack([result.scores.get(lb, {}).get(n, nan) for n in names], 1) for lb in labels], 1
            )  # [S,M,N]
            values = gather_rows(trainer, packed, size)  # [B,M,N]
            out.scores = {
                lb: {n: values[:, i, j] for j, n in enumerate(names) if not bool(values[:, i, j].isnan().all())}
                for i, lb in enumerate(labels)
            }
        for mode in ("deletion", "insertion"):
            with_curve = [lb for lb in labels if lb in result.curves.get(mode, {})]
            if mode in names and with_curve:
                curves = gather_rows(trainer, torch.stack([result.curves[mode][lb] for lb in with_curve], 1), size)
                out.curves[mode] = {lb: curves[:, i] for i, lb in enumerate(with_curve)}  # [B,steps+1] each
        return out

    def _render_and_log(self, trainer: pl.Trainer, stage: str, probe: Probe, result: _Result, start: float) -> None:
        maps = result.maps
        self.last_maps = maps
        images = to_display(probe.inputs, self.mean, self.std)  # [B,3,H,W]
        prefix = self._prefix(stage)
        self.last_row_labels = rows = row_labels(
            result.predicted,
            result.confidence,
            labels=probe.labels,
            explained=result.targets,
            indices=probe.indices,
            class_names=self._class_names,
        )
        draw: dict[str, Any] = {
            "alpha": self.alpha,
            "colormap": self.colormap,
            "min_size": self.min_display_size,
            "labels": rows,
        }
        wrap: dict[str, Any] = {"max_columns": self.grid_columns}
        grids = {f"{prefix}/overview": overview_grid(images, maps, **draw, **wrap)}
        for label, m in maps.items():
            grids[f"{prefix}/{label}"] = method_grid(images, m, **draw)
        if self.localisation:
            grids[f"{prefix}/localisation"] = self._localisation_grid(images, maps, probe, rows)
        if stage == "validate":
            small = {label: _shrink(m) for label, m in maps.items()}  # what the history keeps
            if "map_stability" in self.scores:
                for label, rho in self._stability(trainer.current_epoch, small).items():
                    result.scores.setdefault(label, {})["map_stability"] = rho
            self._remember(trainer.current_epoch, small)
            for label, entries in self.history.items():
                titles = [f"ep {epoch}" for epoch, _ in entries]
                strip = filmstrip_grid(images, [m for _, m in entries], titles, **draw, **wrap)
                grids[f"{prefix}/filmstrip/{label}"] = strip
        if result.curves:
            mean_curves = {
                mode: {lb: c.mean(0) for lb, c in by_label.items()} for mode, by_label in result.curves.items()
            }
            panels = [
                curve_plot(c, f"{mode} (mean over probe)", x_label=_X_LABELS[mode]) for mode, c in mean_curves.items()
            ]
            grids[f"{prefix}/curves"] = torch.cat(panels, 1)  # one above the other: as wide as TensorBoard's card
        self.last_scores = {
            label: {name: float(v.nanmean()) for name, v in values.items() if not bool(v.isnan().all())}
            for label, values in result.scores.items()
        }
        if stage == "validate":
            for label, values in self.last_scores.items():
                self._first_scores.setdefault(label, dict(values))
        self._check_alarms(trainer, probe, result, prefix)
        result.times["total"] = time.perf_counter() - start
        scalars = {f"{prefix}/{lb}/{name}": v for lb, vals in self.last_scores.items() for name, v in vals.items()}
        scalars.update({f"{prefix}/time/{name}": seconds for name, seconds in result.times.items()})
        self._log(trainer, grids, scalars, prefix)

    def _check_alarms(self, trainer: pl.Trainer, probe: Probe, result: _Result, prefix: str) -> None:
        lines = []
        for alarm in self.alarms:
            for label in alarm.methods or [m.label for m in self.methods]:
                values = result.scores.get(label, {}).get(alarm.score)
                if values is None:
                    continue
                hit = alarm.fired(values).nonzero().flatten().tolist()
                if not hit:
                    continue
                where = [f"#{i}" + (f" (index {probe.indices[i]})" if probe.indices else "") for i in hit]
                shown = ", ".join(f"{values[i]:.3f}" for i in hit)
                lines.append(
                    f"epoch {trainer.current_epoch}: {alarm.score} of {label} {alarm.describe()} on probe images "
                    f"{', '.join(where)}: {shown}"
                )
        if not lines:
            return
        self.alarm_log = (self.alarm_log + lines)[-100:]
        rank_zero_warn("SaliencyMonitor alarm: " + "; ".join(lines), category=SaliencyWarning)
        for logger in self._tensorboard_loggers(trainer):
            text = "\n".join(f"- {line}" for line in lines)
            logger.experiment.add_text(f"{prefix}/alarms", text, global_step=trainer.global_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write a ``saliency/summary`` text: each score at the first and the last logged epoch."""
        if not trainer.is_global_zero or not self.last_scores:
            return
        rows = ["| method | score | first | last |", "|---|---|---|---|"]
        for label, values in self.last_scores.items():
            for name, last in values.items():
                first = self._first_scores.get(label, {}).get(name, float("nan"))
                rows.append(f"| {label} | {name} | {first:.4f} | {last:.4f} |")
        for logger in self._tensorboard_loggers(trainer):
            logger.experiment.add_text(f"{self.log_prefix}/summary", "\n".join(rows), global_step=trainer.global_step)

    def _localisation_grid(
        self, images: Tensor, maps: dict[str, Tensor], probe: Probe, rows: list[list[str]]
    ) -> Tensor:
        columns = {"input": images}
        for label, m in maps.items():
            predicted = saliency_to_box(m, "otsu")  # [B,4]
            columns[label] = draw_localisation(
                images, m, predicted, probe.boxes, probe.masks, alpha=self.alpha, colormap=self.colormap
            )
        return column_grid(columns, min_size=self.min_display_size, labels=rows, max_columns=self.grid_columns)

    def _log(self, trainer: pl.Trainer, grids: dict[str, Tensor], scalars: dict[str, float], prefix: str) -> None:
        step = trainer.global_step
        for logger in self._tensorboard_loggers(trainer):
            writer = logger.experiment
            if id(writer) not in self._layouts_written and self.scores:
                self._layouts_written.add(id(writer))
                writer.add_custom_scalars(self._layout(prefix))
            for tag, grid in grids.items():
                writer.add_image(tag, grid, global_step=step, dataformats="CHW")
        for any_logger in trainer.loggers:
            any_logger.log_metrics(scalars, step=step)

    def _layout(self, prefix: str) -> dict[str, dict[str, list[Any]]]:
        """TensorBoard custom-scalars layout: one chart per score, one line per method.

        TensorBoard reads each chart's tags as regular expressions and keeps the logged tags they ``re.match``: each
        tag is escaped and anchored, so a label such as ``gradcam++`` (a possessive quantifier on Python 3.11, an
        invalid pattern on 3.10) matches exactly its own tag.
        """
        labels = [m.label for m in self.methods]
        charts = {
            name: ["Multiline", [re.escape(f"{prefix}/{label}/{name}") + "$" for label in labels]]
            for name in self.scores
        }
        charts["time"] = ["Multiline", [re.escape(f"{prefix}/time/")]]
        return {f"{prefix} scores": charts}

    def _stability(self, epoch: int, small: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rank correlation of each (shrunk) map with the previous logged epoch's, ``[B]``."""
        out: dict[str, Tensor] = {}
        for label, now in small.items():
            previous = [x for e, x in self.history.get(label, []) if e < epoch]
            if previous and previous[-1].shape == now.shape:
                out[label] = map_stability(previous[-1], now).float()
        return out

    def _remember(self, epoch: int, small: dict[str, Tensor]) -> None:
        """Append this epoch's maps (shrunk by :func:`_shrink`) to the bounded history."""
        for label, m in small.items():
            entries = [(e, x) for e, x in self.history.get(label, []) if e != epoch] + [(epoch, m)]
            self.history[label] = entries[-self.history_size :]

    def _get_probe(self, trainer: pl.Trainer, stage: str) -> Probe:
        if stage in self._probes:
            return self._probes[stage]
        spec = self._probe_spec if self._probe_spec is not None else self._restored_indices
        if isinstance(spec, Probe):
            probe = spec
        else:
            loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is None:
                raise ValueError(f"SaliencyMonitor needs {stage} data to take its probe from, or `probe=`.")
            dataset = getattr(loader, "dataset", None)
            if self.class_names is None:
                self._class_names = _data_class_names(trainer, dataset)
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


def _check_probe_spec(probe: ProbeSpec) -> Probe | list[int] | None:
    """The probe as given, checked: a :class:`Probe` (from tensors), dataset indices, or ``None``."""
    if probe is None or isinstance(probe, Probe):
        return probe
    if isinstance(probe, Tensor):
        return Probe(probe)
    if isinstance(probe, tuple) and len(probe) == 2 and isinstance(probe[0], Tensor):
        return Probe(probe[0], probe[1])
    if (
        isinstance(probe, Sequence)
        and not isinstance(probe, str)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in probe)
    ):
        if not probe:
            raise ValueError("probe indices must not be empty.")
        return [int(i) for i in probe]
    raise TypeError(
        f"probe must be None, a Tensor [B, C, H, W], a tuple (inputs, labels), or a list of dataset indices, "
        f"got {type(probe).__name__}."
    )


def _check_class_names(class_names: Sequence[str] | None) -> list[str] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise TypeError(f"class_names must be a sequence of strings (one per class), got {class_names!r}.")
    return list(class_names)


def _data_class_names(trainer: pl.Trainer, dataset: Any) -> list[str] | None:
    """The ``classes`` of the dataset or the datamodule (a sequence of names), if either has one."""
    for owner in (dataset, getattr(trainer, "datamodule", None)):
        classes = getattr(owner, "classes", None)
        if isinstance(classes, Sequence) and not isinstance(classes, str) and all(isinstance(c, str) for c in classes):
            return list(classes)
    return None


def _describe_probe(config: dict[str, Any]) -> str:
    """``num_samples=4``, ``probe=[0, 3, 5]`` or ``probe=<tensor [4, 3, 16, 16], sum 12.5>``."""
    if "num_samples" in config:
        return f"num_samples={config['num_samples']}"
    if "indices" in config:
        return f"probe={config['indices']}"
    *shape, total = config["inputs"]
    return f"probe=<tensor {shape}, sum {total:g}>"


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _check_alarms(alarms: Sequence[Alarm], methods: list[SaliencyMethod], scores: list[str]) -> list[Alarm]:
    labels = [m.label for m in methods]
    checked = []
    for alarm in alarms:
        if not isinstance(alarm, Alarm):
            raise TypeError(f"alarms must be Alarm instances, got {alarm!r}.")
        if alarm.score not in scores:
            raise ValueError(f"Alarm on {alarm.score!r}, but that score is not computed: scores={scores}.")
        unknown = [m for m in alarm.methods or [] if m not in labels]
        if unknown:
            raise ValueError(f"Alarm on methods {unknown}, but the monitor's methods are {labels}.")
        checked.append(alarm)
    return checked


def _shrink(maps: Tensor, side: int = 64) -> Tensor:
    """Maps ``[B, 1, H, W]`` area-downsampled so the longer side is at most ``side`` (a copy)."""
    h, w = maps.shape[-2:]
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return maps.clone()
    return F.interpolate(maps, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


def _check_scores(scores: Sequence[str]) -> list[str]:
    if isinstance(scores, str):
        scores = [scores]
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"Unknown score(s) {unknown}. Available: {', '.join(SCORES)}.")
    return list(dict.fromkeys(scores))


@dataclass
class _Result:
    """What one logged epoch produced on rank 0."""

    maps: dict[str, Tensor] = field(default_factory=dict)  # label -> [B,1,H,W]
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # label -> score -> [B] per image
    curves: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # "deletion" -> label -> [B, steps+1]
    times: dict[str, float] = field(default_factory=dict)  # this rank's seconds
    predicted: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [B] the top class
    confidence: Tensor = field(default_factory=lambda: torch.zeros(0))  # [B] its softmax probability
    targets: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [B] what the maps explain


_Key = tuple[str, str, str | None]
"""What failed: ``("method", label, None)`` or ``("score", label, score name)``."""


class _Failures:
    """The failures of methods and scores on this rank: ``key -> (headline, traceback summary)``.

    With ``isolate=False`` (``strict=True``, or :meth:`SaliencyMonitor.compute`) nothing is caught.
    """

    def __init__(self, isolate: bool) -> None:
        self.isolate = isolate
        self.failed: dict[_Key, tuple[str, str]] = {}

    @contextmanager
    def attempt(self, *keys: _Key) -> Iterator[None]:
        """Run the block; if it raises (and failures are isolated), record the error under every key."""
        try:
            yield
        except Exception as exc:
            if not self.isolate:
                raise
            headline = f"{type(exc).__name__}: {exc}"
            summary = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-4))
            for key in keys:
                self.failed[key] = (headline, summary)


@dataclass
class _Report:
    """What one rank tells the others after its work (picklable): the agreement's payload."""

    fatal: str | None
    failed: dict[_Key, tuple[str, str]]
    score_names: list[str]

    @classmethod
    def of(cls, result: _Result, failures: _Failures, error: Exception | None) -> _Report:
        names = sorted({n for values in result.scores.values() for n in values})
        return cls(None if error is None else f"{type(error).__name__}: {error}", dict(failures.failed), names)


def _agreed_error(reports: list[_Report], error: Exception | None, rank: int) -> Exception | None:
    """If some rank failed as a whole, every rank returns an error (its own, or one naming the failed ranks)."""
    failed = [r for r, report in enumerate(reports) if report.fatal is not None]
    if error is None and failed:
        return RuntimeError(f"SaliencyMonitor failed on rank(s) {failed}: {reports[failed[0]].fatal}")
    return error


def _drop_failed(result: _Result, failed: dict[_Key, Any]) -> _Result:
    """``result`` without what failed on any rank, so every rank gathers the same methods and scores."""
    lost = {label for kind, label, _ in failed if kind == "method"}
    gone = {(label, name) for kind, label, name in failed if kind == "score"}
    return dataclasses.replace(
        result,
        maps={lb: m for lb, m in result.maps.items() if lb not in lost},
        scores={
            lb: {n: v for n, v in values.items() if (lb, n) not in gone}
            for lb, values in result.scores.items()
            if lb not in lost
        },
        curves={
            mode: {lb: c for lb, c in by_label.items() if lb not in lost and (lb, mode) not in gone}
            for mode, by_label in result.curves.items()
        },
    )
