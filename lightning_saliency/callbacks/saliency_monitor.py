"""``SaliencyMonitor``: saliency maps of a fixed probe batch in TensorBoard, every validation epoch.

The callback orchestrates Lightning's hooks; the work is done by phases, each in its own module:

1. take the probe: :func:`lightning_saliency.probe.probe_from_trainer` (every rank, the same probe);
2. compute maps: :mod:`lightning_saliency.monitoring.maps` (each rank its share of the probe; under a sharded
   strategy, FSDP, every rank the whole probe, since every forward needs every rank);
3. score: :mod:`lightning_saliency.monitoring.scoring`, dispatched from the score registry;
4. agree and gather across ranks: :mod:`lightning_saliency.distributed` (the one place with collectives; nothing
   to gather under a sharded strategy);
5. summarise across epochs (history, scores against the previous epoch, alarms):
   :mod:`lightning_saliency.monitoring.summary` (rank 0);
6. render: :mod:`lightning_saliency.monitoring.rendering` (rank 0);
7. write to sinks: :mod:`lightning_saliency.monitoring.sinks` (rank 0).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least, normalisation
from lightning_saliency._runtime import (
    OutputAdapter,
    Precision,
    Run,
    gradients_enabled,
    module_device,
    preserved_rng,
)
from lightning_saliency.callbacks._arguments import (
    ProbeSpec,
    build_methods,
    check_alarms,
    check_class_names,
    check_probe_spec,
    check_scores,
    check_targets_spec,
    describe_probe,
)
from lightning_saliency.callbacks._base import EpochEndMonitor, progress_bar
from lightning_saliency.distributed import (
    REFUSED_STRATEGIES,
    Report,
    agree,
    agreed_error,
    from_rank_zero,
    gather_result,
    lost_anywhere,
    replicated_work,
    shard,
)
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods import SaliencyMethod
from lightning_saliency.metrics import default_scores
from lightning_saliency.metrics.registry import SCORES
from lightning_saliency.monitoring.budget import Budget, BudgetKeeper, Plan
from lightning_saliency.monitoring.maps import compute_maps, method_groups
from lightning_saliency.monitoring.rendering import RenderOptions, probe_view, render_epoch
from lightning_saliency.monitoring.result import EpochResult, Failures, describe, drop_failed
from lightning_saliency.monitoring.scoring import forward_seconds, scheduled_scores, score_maps
from lightning_saliency.monitoring.sinks import Image, ProbeView, Record
from lightning_saliency.monitoring.summary import Alarm, History, alarm_lines, summarise, summary_table
from lightning_saliency.monitoring.targeting import Explained, TargetSpec, explain
from lightning_saliency.probe import Probe, data_class_names, probe_from_trainer
from lightning_saliency.render import COLORMAPS
from lightning_saliency.render.volumes import VOLUME_VIEWS
from lightning_saliency.targets import Target

__all__ = ["Alarm", "SaliencyMonitor"]

_DEFAULT_METHODS = ("gradient", "gradcam", "gradcam++")
_STATE_VERSION = 2


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
        targets: What the maps explain (:mod:`lightning_saliency.targets`): ``"label"`` (the true class,
            default), ``"predicted"`` (the model's current top class), a fixed class index, or a target:
            ``MultiLabelTarget()`` (each image's positive labels: the probe's multi-hot labels, else predicted
            above a threshold or the top-k; one row per image and label), ``SegmentationTarget(category)`` (the
            category's logits over the probe's ground-truth mask of it, else over the pixels predicted as it),
            ``RegressionTarget(index)``, or any callable ``output -> Tensor[B]``.
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
        alarms: :class:`~lightning_saliency.monitoring.summary.Alarm` s: per-image score thresholds that warn and
            write a TensorBoard text entry.
        strict: If ``False`` (default), an exception inside a method or score is reported (one warning with the
            traceback summary, a ``saliency/errors`` text entry), that method or score is left out of the epoch, the
            others are logged and training continues; if ``True`` it is raised.
        history_size: How many logged epochs the ``saliency/filmstrip/<method>`` grids show (maps are kept on
            the CPU at most 64 px on a side: ``history_size * B * 64 * 64`` floats per method at most).
        output_adapter: Turns the model's output into logits ``[B, num_classes]`` if it is not a tensor, a
            tuple starting with one, a dict with ``"logits"`` or an object with ``.logits``.
        log_prefix: Tag prefix in TensorBoard.
        class_names: Names of the classes, for the captions of the grids' rows (true class, prediction and its
            probability); by default the ``classes`` attribute of the validation dataset or the datamodule (as
            torchvision's ``ImageFolder`` has), else the class indices.
        grid_columns: At most this many cells per line in the grids (default 5: the input and four methods);
            with more methods an image's cells are spread over several lines, so the grids stay readable at
            TensorBoard's default card width. ``None`` for one line per image however wide.
        budget: The monitor's time as a fraction of the trainer's time outside it during ``fit`` (e.g. ``0.05``),
            or ``None`` (default) for no limit. Accounted over the run: each logged epoch makes its maps, then
            plans its scores from what they cost before (on the first epoch, from one forward of the probe):
            it postpones the costly scores, takes fewer curve steps, runs the curves on part of the probe and
            leaves out scores, in that order, to stay within it; last, an epoch whose maps the budget cannot pay
            for is not logged (one warning says so). ``saliency/budget`` (text) says what was cut,
            ``saliency/time/budget_credit`` and ``saliency/time/overhead`` (the fraction so far) follow it.
            ``validate`` and ``test`` run in full. See :mod:`~lightning_saliency.monitoring.budget`.
        volume_view: How volumes ``[B, C, D, H, W]`` are drawn (:mod:`~lightning_saliency.render.volumes`):
            ``"slices"`` (default; the axial, coronal and sagittal planes through the methods' consensus peak, and
            the maximum-intensity projection along the depth) or
            ``"frames"`` (video: four frames evenly spaced in time). Images ignore it.

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
        scores: Sequence[str] = default_scores(),
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
        volume_view: str = "slices",
        budget: float | None = None,
    ) -> None:
        super().__init__(every_n_epochs, log_prefix)
        self.methods = build_methods(methods, target_layer)
        self.num_samples = int_at_least(num_samples, 1, "num_samples")
        self.min_display_size = int_at_least(min_display_size, 1, "min_display_size")
        self.history_size = int_at_least(history_size, 1, "history_size")
        if not isinstance(localisation, bool):
            raise TypeError(f"localisation must be a bool, got {localisation!r}.")
        self.localisation = localisation
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}.")
        self.strict = strict
        self.scores = check_scores(scores)
        self.score_steps = int_at_least(score_steps, 1, "score_steps")
        self.score_batch_size = int_at_least(score_batch_size, 1, "score_batch_size")
        self.expensive_every_n_epochs = int_at_least(expensive_every_n_epochs, 1, "expensive_every_n_epochs")
        self.alarms = check_alarms(alarms, self.methods, self.scores)
        self.targets = check_targets_spec(targets)
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a float in [0, 1], got {alpha!r}.")
        self.mean, self.std = normalisation(mean, std)
        if output_adapter is not None and not callable(output_adapter):
            raise TypeError(f"output_adapter must be callable (output -> logits), got {output_adapter!r}.")
        self.colormap, self.alpha = colormap, float(alpha)
        self.class_names = check_class_names(class_names)
        self.grid_columns = None if grid_columns is None else int_at_least(grid_columns, 1, "grid_columns")
        if volume_view not in VOLUME_VIEWS:
            raise ValueError(f"volume_view must be one of {VOLUME_VIEWS}, got {volume_view!r}.")
        self.volume_view = volume_view
        self.budget = None if budget is None else Budget(budget).fraction  # checked here, accounted per fit
        self._keeper: BudgetKeeper | None = None  # the budget's accounting over one fit
        self.last_plan: Plan | None = None
        """What the last logged epoch computed (its scores, curve steps and rows, and what a budget cut)."""
        self.output_adapter = output_adapter
        self._probe_spec = check_probe_spec(probe)
        self._restored_indices: list[int] | None = None  # the probe of a resumed checkpoint (when probe=None)
        self._probes: dict[str, Probe] = {}
        self._probe_indices: list[int] | None = None
        self._class_names: list[str] | None = self.class_names  # or the data's `classes`, found with the probe
        self._notes: set[str] = set()
        self._errors: set[str] = set()
        self._first_scores: dict[str, dict[str, float]] = {}
        self.last_maps: dict[str, Tensor] = {}
        """The maps of the last logged epoch on rank 0: method label -> ``[B, 1, H, W]`` on the CPU."""
        self.history: History = {}
        self._history_rows: list[list[int]] | None = None  # what the history's rows are (Explained.identity)
        """Per method label, ``(epoch, maps [B, 1, h, w])`` of the last ``history_size`` logged validation epochs."""
        self.last_scores: dict[str, dict[str, float]] = {}
        """The scores of the last logged epoch on rank 0: method label -> score name -> mean over the probe."""
        self.last_row_labels: list[list[str]] = []
        """The captions of the grids' rows at the last logged epoch (probe position, true and predicted class)."""
        self.alarm_log: list[str] = []
        """Messages of the alarms that fired on rank 0, oldest first (at most 100 kept)."""

    def __repr__(self) -> str:
        return f"SaliencyMonitor(methods={[m.label for m in self.methods]}, log_prefix={self.log_prefix!r})"

    @property
    def state_key(self) -> str:
        """Unique per configuration, so several monitors can live in one checkpoint."""
        return self._generate_state_key(methods=[m.label for m in self.methods], log_prefix=self.log_prefix)

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the environment: a supported strategy, one prefix per monitor, a logger to see images.

        Raises:
            ValueError: Under DeepSpeed, or when another monitor has the same ``log_prefix``.
        """
        names = [cls.__name__ for cls in type(trainer.strategy).__mro__]
        refused = next((n for n in names if n in REFUSED_STRATEGIES), None)
        if refused is not None:
            raise ValueError(
                f"SaliencyMonitor does not support strategy={type(trainer.strategy).__name__} ({refused}): "
                "DeepSpeed's engine gathers ZeRO-partitioned parameters in its own hooks, which the monitor's extra "
                "forwards and input gradients are not built or tested for. Use FSDP (strategy='fsdp', or "
                "ModelParallelStrategy with fully_shard in configure_model) or DDP (strategy='ddp'), or remove the "
                "callback for this run."
            )
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.budget is not None:
            self._keeper = BudgetKeeper(self.budget, self.scores, self.score_steps, [m.label for m in self.methods])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the budget's clock: the trainer's time outside the monitor counts from here."""
        if self._keeper is not None:
            self._keeper.start()

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
            "history_rows": self._history_rows,
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
                f"SaliencyMonitor resumes with another probe than its checkpoint's ({describe_probe(saved)} in the "
                f"checkpoint, {describe_probe(now)} now). The configuration given now wins: the probe is taken anew "
                "and the checkpoint's map history (filmstrips, map_stability) is dropped.",
                category=SaliencyWarning,
            )
            return
        indices = state_dict.get("probe_indices")
        if indices is not None and self._probe_spec is None:
            self._restored_indices = [int(i) for i in indices]
            self._probe_indices = list(self._restored_indices)
        labels = {m.label for m in self.methods}
        self._history_rows = state_dict.get("history_rows")
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

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write a ``saliency/summary`` text: each score at the first and the last logged epoch."""
        if self.last_scores:
            table = summary_table(self._first_scores, self.last_scores)
            self._write(trainer, Record(trainer.global_step, texts={f"{self.log_prefix}/summary": table}))

    # ------------------------------------------------------------------ the work

    def compute(self, pl_module: nn.Module, probe: Probe, precision: Precision | None = None) -> dict[str, Tensor]:
        """Maps of ``probe`` for every method: label -> ``[B, 1, H, W]`` float32 on the CPU.

        Usable outside a Trainer, e.g. in a notebook: ``monitor.compute(model, Probe(images, labels))``. An error in
        a method is raised here.
        """
        run = Run(precision or Precision(), self.output_adapter)
        explained = explain(pl_module, probe, self.targets, run, self._class_names)
        return self._run_work(
            pl_module, explained.probe, explained.target, run, Failures(isolate=False), scores=[]
        ).maps

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Every rank takes the same probe, computes its share, and joins the same collectives in the same order
        # (also when its share is padding, or when something failed on it); rank 0 then summarises, renders, writes.
        # Under a sharded strategy (every forward a collective) the share is the whole probe on every rank, so that
        # every rank runs the same forwards; nothing is gathered then.
        with replicated_work(trainer) as replicated:
            self._run_epoch(trainer, pl_module, stage, replicated)

    def _run_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, replicated: bool) -> None:
        start = time.perf_counter()
        expensive = trainer.state.fn != "fit" or (trainer.current_epoch + 1) % self.expensive_every_n_epochs == 0
        failures = Failures(isolate=not self.strict)
        error: Exception | None = None
        result, probe, explained = EpochResult(), None, None
        keeper = self._keeper if stage == "validate" and trainer.state.fn == "fit" else None
        planned = False  # whether this rank joined the plan's collective (every rank joins it once)
        if keeper is not None:  # the last cut first: rank 0 decides whether this epoch can pay for its maps at all
            skip = from_rank_zero(trainer, keeper.skip(start))
            if skip is not None:
                self.last_plan = skip
                if trainer.is_global_zero:
                    scalars, texts = keeper.entries(self._prefix(stage), trainer.current_epoch, skip)
                    self._write(trainer, Record(trainer.global_step, [], scalars, texts))
                keeper.account(start, start, skip, {}, rows=0)
                return
        try:
            images = self._run_probe(trainer, stage)
            run = Run(Precision.from_trainer(trainer), self.output_adapter)
            explained = explain(pl_module, images, self.targets, run, self._class_names)  # the same on every rank
            probe = explained.probe  # one row per image, per (image, label), or per image showing the category
            if replicated:
                share = torch.arange(len(probe))
            else:
                share = torch.as_tensor(shard(len(probe), trainer.world_size, trainer.global_rank))
            names = scheduled_scores(self.scores, expensive=expensive)
            if replicated:
                names = self._without_model_copies(trainer, names)
            self.last_plan = Plan(tuple(names), self.score_steps)
            planner = None
            if keeper is not None:  # after the maps, rank 0 plans the scores, every rank follows: the same work

                def planner(forward: Callable[[], float], done: EpochResult) -> Plan:
                    nonlocal planned
                    assert keeper is not None
                    assert probe is not None
                    if replicated:  # whether a rank needs the estimate's forward is its own: run it on all, or none
                        seconds = forward()
                        forward = lambda: seconds  # noqa: E731
                    plan = from_rank_zero(trainer, keeper.plan(names, len(probe), start, forward, len(done.maps)))
                    planned = True
                    if plan is None:
                        raise RuntimeError("SaliencyMonitor could not plan this epoch within its budget on rank 0.")
                    self.last_plan = plan
                    return plan

            with progress_bar(trainer, self._steps(names), "Saliency") as progress:
                target = explained.target[share]
                result = self._run_work(
                    pl_module, probe.subset(share), target, run, failures, names, progress, planner, share
                )
        except Exception as exc:  # handled below, on every rank, after the ranks agreed that one failed
            error = exc
        if keeper is not None and not planned:  # failed before the plan: join its collective all the same
            from_rank_zero(trainer, None)
        scored = time.perf_counter()
        reports = agree(trainer, Report.of(result, failures, error))  # the one agreement collective
        error = agreed_error(reports, error)
        if error is not None or probe is None or explained is None:
            self._fail(trainer, stage, error or RuntimeError("no probe"))
            self._account(keeper, start, scored, result)
            return
        result = drop_failed(result, {key: m for report in reports for key, m in report.failed.items()})
        if trainer.world_size > 1 and not replicated:  # replicated: every rank has the whole probe's results
            names = sorted({n for report in reports for n in report.score_names})
            result = gather_result(trainer, result, len(probe), names)
        if not trainer.is_global_zero:
            self._account(keeper, start, scored, result)
            return
        self._report_failures(trainer, stage, reports)
        if result.maps:  # else every method failed: reported above, nothing to draw
            try:
                self._run_summary_and_write(trainer, stage, probe, explained, result, start)
            except Exception as exc:  # after every collective: safe to report on rank 0 alone
                self._fail(trainer, stage, exc)
        self._account(keeper, start, scored, result)

    def _without_model_copies(self, trainer: pl.Trainer, names: list[str]) -> list[str]:
        """``names`` less the scores that copy the model, which sharded models refuse (noted once)."""
        copies = [n for n in names if SCORES[n].copies_model]
        if copies:
            self._note(
                f"SaliencyMonitor skips the score(s) {copies} under {type(trainer.strategy).__name__}: they run a "
                "copy of the model (copy.deepcopy), and FSDP refuses to copy a sharded model."
            )
        return [n for n in names if n not in copies]

    def _account(self, keeper: BudgetKeeper | None, start: float, scored: float, result: EpochResult) -> None:
        """After the epoch's work, on every rank: what it cost, for the budget."""
        if keeper is not None and self.last_plan is not None:
            keeper.account(start, scored, self.last_plan, result.times, len(next(iter(result.maps.values()), [])))

    def _run_probe(self, trainer: pl.Trainer, stage: str) -> Probe:
        """Phase 1: the probe of ``stage`` (taken once, the same on every rank), checked against ``mean``/``std``."""
        if stage not in self._probes:
            spec = self._probe_spec if self._probe_spec is not None else self._restored_indices
            probe = spec if isinstance(spec, Probe) else probe_from_trainer(trainer, stage, self.num_samples, spec)
            if self.class_names is None:
                self._class_names = data_class_names(trainer, stage)
            if stage == "validate" and not isinstance(spec, Probe):
                self._probe_indices = probe.indices
            self._probes[stage] = probe
        probe = self._probes[stage]
        channels = probe.inputs.shape[1]  # fail before any work, not after, at rendering
        for arg, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, channels):
                raise ValueError(
                    f"{arg} must have one value per input channel ({channels}) or a single value, got {values}."
                )
        return probe

    def _run_work(
        self,
        pl_module: nn.Module,
        probe: Probe,
        targets: Target,
        run: Run,
        failures: Failures,
        scores: Sequence[str],
        progress: Callable[[str], None] = lambda _: None,
        planner: Callable[[Callable[[], float], EpochResult], Plan] | None = None,
        share: Tensor | None = None,
    ) -> EpochResult:
        """Phases 2 and 3 on the rows of one probe (a rank's share): every method's maps, then their ``scores``.

        With a ``planner`` (a time budget) the scores are those of its plan, made once the maps are (a collective
        when distributed, so it runs also when the maps raised); ``share`` holds the rows' positions in the probe.
        """
        device = module_device(pl_module)
        result = EpochResult()
        steps, curve_rows = self.score_steps, None
        with preserved_rng([device]), gradients_enabled():
            inputs = probe.inputs.to(device)  # a normal tensor: created outside inference mode
            error: Exception | None = None
            try:
                compute_maps(pl_module, inputs, targets, self.methods, run, result, failures, progress)
            except Exception as exc:
                error = exc
            lost = lost_anywhere([m.label for m in self.methods if m.label not in result.maps])
            result.maps = {label: maps for label, maps in result.maps.items() if label not in lost}
            if planner is not None:
                plan = planner(lambda: forward_seconds(pl_module, inputs, run), result)
                scores, steps = plan.scores, plan.steps
                if plan.curve_rows is not None:
                    rows = share if share is not None else torch.arange(len(inputs))
                    curve_rows = rows < plan.curve_rows  # [S]: the rows of this share that run the curves
            if error is not None:
                raise error
            if scores:
                score_maps(
                    pl_module,
                    inputs,
                    targets,
                    probe,
                    self.methods,
                    scores,
                    result,
                    failures,
                    run=run,
                    steps=steps,
                    batch_size=self.score_batch_size,
                    input_bounds=self._input_bounds(),
                    note=self._note,
                    progress=progress,
                    curve_rows=curve_rows,
                )
        return result

    def _run_summary_and_write(
        self, trainer: pl.Trainer, stage: str, probe: Probe, explained: Explained, result: EpochResult, start: float
    ) -> None:
        """Phases 5 to 7 on rank 0: summarise across epochs, render, write to the sinks."""
        prefix, epoch, step = self._prefix(stage), trainer.current_epoch, trainer.global_step
        alarms = self._run_summary(trainer, stage, probe, explained, result)
        when = f"epoch {epoch}, step {step}"
        images, view = self._run_render(prefix, stage, probe, explained.captions, result, alarms, when, epoch)
        texts = {f"{prefix}/alarms": "\n".join(f"- {line}" for line in alarms)} if alarms else {}
        result.times["total"] = time.perf_counter() - start
        scalars = {f"{prefix}/{lb}/{name}": v for lb, vals in self.last_scores.items() for name, v in vals.items()}
        scalars.update({f"{prefix}/time/{name}": seconds for name, seconds in result.times.items()})
        plan = self.last_plan
        if self._keeper is not None and stage == "validate" and plan is not None and trainer.state.fn == "fit":
            more_scalars, more_texts = self._keeper.entries(prefix, epoch, plan)
            scalars.update(more_scalars)
            texts.update(more_texts)
        self._write(trainer, Record(step, images, scalars, texts, self._charts(prefix), view))

    def _run_summary(
        self, trainer: pl.Trainer, stage: str, probe: Probe, explained: Explained, result: EpochResult
    ) -> list[str]:
        """Phase 5: the history and the scores against the previous epoch (validation), means, alarms that fired."""
        epoch = trainer.current_epoch
        self.last_maps = result.maps
        if stage == "validate":
            if self.history and self._history_rows is not None and explained.identity != self._history_rows:
                rank_zero_info(
                    f"SaliencyMonitor starts its map history anew at epoch {epoch}: the probe's rows changed "
                    "(the positive labels a multi-label target explains), so earlier maps are not comparable."
                )
                self.history = {}
            self._history_rows = explained.identity
            failures = Failures(isolate=not self.strict)
            summarise(self.history, epoch, result, self.scores, self.history_size, failures)
            self._report_failures(trainer, stage, [Report(None, failures.failed, [])])
        self.last_scores = {
            label: {name: float(v.nanmean()) for name, v in values.items() if not bool(v.isnan().all())}
            for label, values in result.scores.items()
        }
        if stage == "validate":
            for label, values in self.last_scores.items():
                self._first_scores.setdefault(label, dict(values))
        lines = alarm_lines(self.alarms, [m.label for m in self.methods], result.scores, epoch, probe.indices)
        if lines:
            self.alarm_log = (self.alarm_log + lines)[-100:]
            rank_zero_warn("SaliencyMonitor alarm: " + "; ".join(lines), category=SaliencyWarning)
        return lines

    def _run_render(
        self,
        prefix: str,
        stage: str,
        probe: Probe,
        rows: list[list[str]],
        result: EpochResult,
        alarms: list[str],
        when: str,
        epoch: int,
    ) -> tuple[list[Image], ProbeView]:
        """Phase 6: the captioned images of the epoch, and the view of it that TensorBoard's SALIENCY tab shows."""
        self.last_row_labels = rows
        options = RenderOptions(
            self.mean,
            self.std,
            self.alpha,
            self.colormap,
            self.min_display_size,
            self.grid_columns,
            self.localisation,
            self.volume_view,
        )
        history = self.history if stage == "validate" else None
        images = render_epoch(prefix, probe, result, rows, history, options, when)
        view = probe_view(prefix, probe, result, rows, alarms, options, epoch)
        return images, view

    def _charts(self, prefix: str) -> dict[str, dict[str, list[str]]]:
        """The scalars drawn together: one chart per score (a line per method), and the timings."""
        if not self.scores:
            return {}
        labels = [m.label for m in self.methods]
        charts = {name: [f"{prefix}/{label}/{name}" for label in labels] for name in self.scores}
        return {f"{prefix} scores": {**charts, "time": [f"{prefix}/time/"]}}

    def _steps(self, scores: Sequence[str]) -> int:
        """Progress-bar steps of one epoch: the map passes, then one per method's scores."""
        return len(method_groups(self.methods)) + (len(self.methods) if scores else 0)

    def _input_bounds(self) -> tuple[float, float] | None:
        """The valid input range, when the normalisation is known (used to clamp attacks)."""
        if self.mean is None or self.std is None:
            return None
        lows = [(0 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        highs = [(1 - m) / s for m, s in zip(self.mean, self.std, strict=True)]
        return min(lows), max(highs)

    # ------------------------------------------------------------------ reporting

    def _note(self, message: str) -> None:
        if message not in self._notes:
            self._notes.add(message)
            rank_zero_info(message)

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

    def _report_failures(self, trainer: pl.Trainer, stage: str, reports: list[Report]) -> None:
        """Rank 0: one warning per distinct failure of a method or a score, and its ``saliency/errors`` text."""
        ranks: dict[Any, list[int]] = {}
        for rank, report in enumerate(reports):
            for key in report.failed:
                ranks.setdefault(key, []).append(rank)
        for key, where in ranks.items():
            headline, summary = next(r.failed[key] for r in reports if key in r.failed)
            on = f" on rank(s) {where}" if len(reports) > 1 else ""
            message = (
                f"SaliencyMonitor: the {describe(key)} failed at epoch {trainer.current_epoch} ({stage}){on} and is "
                "left out of this epoch; the other methods and scores are logged and training continues (pass "
                f"strict=True to raise instead). {headline}"
            )
            self._warn_error(trainer, f"{describe(key)}: {headline}", message, summary)

    def _warn_error(self, trainer: pl.Trainer, key: str, message: str, summary: str) -> None:
        if key not in self._errors:
            self._errors.add(key)
            rank_zero_warn(f"{message}\n{summary}", category=SaliencyWarning)
        text = f"**{message}**\n\n```\n{summary}\n```"
        self._write(trainer, Record(trainer.global_step, texts={f"{self.log_prefix}/errors": text}))
