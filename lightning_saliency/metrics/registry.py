"""The score registry: what each score is, when it runs, what it needs, and how it is computed from one context.

Every score is one :data:`SCORES` entry (:class:`ScoreInfo`). The monitor and :func:`evaluate_scores` dispatch
from it alone: :func:`compute_scores` computes any set of scores of one method's maps from a
:class:`ScoreContext`, each group of scores that share forwards in one call, and skips those whose needs the
context does not meet. Adding a score is one entry here (with its functional in
:mod:`lightning_saliency.metrics.functional`); the conformance test (``tests/metrics/test_score_registry.py``)
iterates the registry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from torch import Tensor, nn

from lightning_saliency._baselines import perturbation_baseline
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import AttributionMethod, SaliencyMethod
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_maps,
    _check_model_inputs,
    _chunked_target_outputs,
    _pixel_ranks,
    _scoring,
)
from lightning_saliency.metrics.functional.attack import saliency_attack_score
from lightning_saliency.metrics.functional.axiomatic import completeness, input_invariance, non_sensitivity
from lightning_saliency.metrics.functional.complexity import complexity, effective_complexity, sparseness
from lightning_saliency.metrics.functional.correlation import map_stability

# faithfulness (Quantus): Faithfulness Correlation/Estimate, Monotonicity (Arya, Nguyen), Pixel-Flipping
from lightning_saliency.metrics.functional.faithfulness import (
    faithfulness_correlation,
    faithfulness_estimate,
    monotonicity,
    monotonicity_correlation,
    pixel_flipping_curve,
)
from lightning_saliency.metrics.functional.faithfulness_regions import (
    _curve_area,
    irof,
    region_perturbation,
    selectivity,
    sensitivity_n,
    sufficiency,
)
from lightning_saliency.metrics.functional.localisation import (
    energy_pointing_game,
    focus,
    localisation_auc,
    localisation_iou,
    pointing_game,
    relevance_rank_accuracy,
    top_k_intersection,
)
from lightning_saliency.metrics.functional.perturbation import (
    DEFAULT_STEPS,
    Baseline,
    _average_drop_per_image,
    _check_steps,
    _increase_per_image,
    _mode_curves,
    average_drop,
    curve_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
)
from lightning_saliency.metrics.functional.randomisation import efficient_mprt, random_logit, smooth_mprt
from lightning_saliency.metrics.functional.road import road_score
from lightning_saliency.metrics.functional.robustness import avg_sensitivity, infidelity, sensitivity_max
from lightning_saliency.metrics.functional.sanity import model_randomisation_score
from lightning_saliency.metrics.functional.stability import continuity, local_lipschitz_estimate, relative_stability
from lightning_saliency.targets import ClassTarget, Target, TargetLike

__all__ = [
    "SCORES",
    "Need",
    "ScoreContext",
    "ScoreInfo",
    "Scores",
    "compute_scores",
    "default_scores",
    "evaluate_scores",
]

Need = Literal[
    "model",
    "confidence",
    "classes",
    "images",
    "regions",
    "previous_maps",
    "method",
    "input_bounds",
    "attributions",
    "quadrants",
]
"""What a score reads from its :class:`ScoreContext` besides the maps:

* ``"model"``: the model, inputs and targets (it runs forwards);
* ``"confidence"``: a target with a probability (:attr:`~lightning_saliency.targets.Target.has_confidence`; not a
  regression): it compares probabilities;
* ``"classes"``: one class per image (:class:`~lightning_saliency.targets.ClassTarget`): it flips a prediction;
* ``"images"``: 2-D inputs ``[B, C, H, W]`` (ROAD's imputation is defined on pixel grids, not on volumes);
* ``"regions"``: ground-truth ``boxes`` or ``masks`` (without them it is skipped, with the reason);
* ``"previous_maps"``: the previous logged epoch's maps (it starts at the second logged epoch);
* ``"method"``: the saliency method that made the maps (it recomputes maps);
* ``"input_bounds"``: the valid input range, when known (used to clamp; optional);
* ``"attributions"``: a method with raw input attributions against one baseline (an
  :class:`~lightning_saliency.methods.AttributionMethod` with a ``baseline``: Integrated Gradients, DeepLift);
* ``"quadrants"``: the inputs are mosaics of four images and ``quadrants`` says which show the target class (Focus;
  the monitor's probe has none, so the monitor always skips it).
"""


@dataclass
class ScoreContext:
    """Everything any score may read, for one method's maps of one batch.

    Attributes:
        maps: ``[B, 1, H, W]`` maps in [0, 1] at the input resolution.
        model: The classifier (``None`` for scores that need no forward, e.g. ``map_stability``).
        inputs: ``[B, C, H, W]`` the images.
        targets: What the maps explain.
        run: Precision and output adapter.
        method: The method that made ``maps`` (for scores that recompute maps).
        boxes: ``[B, 4]`` ground-truth boxes ``(x1, y1, x2, y2)``, or ``None``.
        masks: ``[B, H, W]`` ground-truth masks, or ``None``.
        previous_maps: The same images' maps at the previous logged epoch (any resolution the history keeps).
        input_bounds: ``(low, high)`` of valid inputs, or ``None``.
        steps: Steps of the deletion/insertion curves.
        batch_size: Most images per forward.
        deletion_baseline: Substrate of deleted pixels.
        insertion_baseline: Substrate insertion starts from.
        pointing_tolerance: Pointing-game tolerance in pixels.
        quadrants: ``[B, 4]`` 0/1: which quadrants ``(top_left, top_right, bottom_left, bottom_right)`` of mosaic
            inputs show the target class (Focus), or ``None``.
    """

    maps: Tensor
    model: nn.Module | None = None
    inputs: Tensor | None = None
    targets: Target | None = None
    run: Run = field(default_factory=Run)
    method: SaliencyMethod | None = None
    boxes: Tensor | None = None
    masks: Tensor | None = None
    previous_maps: Tensor | None = None
    input_bounds: tuple[float, float] | None = None
    steps: int = DEFAULT_STEPS
    batch_size: int = 64
    deletion_baseline: Baseline = "zero"
    insertion_baseline: Baseline = "blur"
    pointing_tolerance: float = 0.0
    quadrants: Tensor | None = None

    def rows(self, index: Tensor) -> ScoreContext:
        """The same context for the images ``index`` only (``[R]`` positions), e.g. curves on part of the probe."""

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index.to(t.device)]

        return dataclasses.replace(
            self,
            maps=self.maps[index.to(self.maps.device)],
            inputs=pick(self.inputs),
            targets=None if self.targets is None else self.targets[index],
            boxes=pick(self.boxes),
            masks=pick(self.masks),
            previous_maps=pick(self.previous_maps),
            quadrants=pick(self.quadrants),
        )

    @cached_property
    def ranks(self) -> Tensor:
        """Every pixel's rank by saliency ``[B, H*W]`` (0 = most salient), shared by deletion and insertion."""
        return _pixel_ranks(self.maps)

    def unmet(self, needs: frozenset[Need]) -> str | None:
        """Why a score with these needs cannot run on this context (a sentence), or ``None`` if it can."""
        if "model" in needs and (self.model is None or self.inputs is None or self.targets is None):
            return "needs the model, inputs and targets"
        if "confidence" in needs and self.targets is not None and not self.targets.has_confidence:
            return f"needs a probability, and {self.targets!r} has none"
        if "classes" in needs and not isinstance(self.targets, ClassTarget):
            return f"needs class targets (ClassTarget), not {self.targets!r}"
        if "images" in needs and self.inputs is not None and self.inputs.ndim != 4:
            return f"needs 2-D images [B, C, H, W], not inputs of shape {tuple(self.inputs.shape)}"
        if "regions" in needs and self.boxes is None and self.masks is None:
            return "needs boxes or masks"
        if "previous_maps" in needs and self.previous_maps is None:
            return "needs the previous logged epoch's maps"
        if "method" in needs and self.method is None:
            return "needs the method that made the maps"
        if "attributions" in needs and not _has_attributions(self.method):
            return (
                "needs a method with input attributions against one baseline (integrated_gradients, deeplift), not "
                f"{self.method!r}"
            )
        if "quadrants" in needs and self.quadrants is None:
            return "needs mosaic inputs and the quadrants of the target class (the monitor's probe has none)"
        return None


def _has_attributions(method: SaliencyMethod | None) -> bool:
    """Whether ``method`` gives raw attributions against one baseline ``x'`` (its ``baseline`` attribute)."""
    return isinstance(method, AttributionMethod) and hasattr(method, "baseline")


Compute = Callable[[ScoreContext], dict[str, Tensor]]
"""Computes a score's group from a context: name -> ``[B]`` per image (plus ``"<mode>_curve"`` for the curves)."""


@dataclass(frozen=True)
class ScoreInfo:
    """What a score means, when it runs, what it needs, and how it is computed.

    Attributes:
        description: One line for logs and docs.
        higher_is_better: ``True``/``False``, or ``None`` where neither direction is better.
        function: The public function that computes it (in :mod:`lightning_saliency.metrics.functional`).
        compute: Computes the score's whole ``group`` from a :class:`ScoreContext`.
        needs: What it reads from the context (:data:`Need`).
        schedule: ``"every_epoch"`` (cheap: every logged epoch) or ``"costly"`` (every ``expensive_every_n_epochs``
            in ``fit``, every time in ``validate``/``test``).
        default: Whether the monitor computes it by default (the costly ones are opt-in).
        group: Scores with the same group share their forwards and are computed by one ``compute`` call (default:
            the score's own name).
        forwards: Forwards of the model per image per method, given the curve steps (its share of its group's),
            for a time budget's first estimate before anything was measured; ``None`` where unknown (the costly
            scores: their first run measures them).
        copies_model: Whether it runs a copy of the model (``copy.deepcopy``), which sharded models (FSDP)
            refuse: the monitor skips it under sharded strategies, with a note.
    """

    description: str
    higher_is_better: bool | None
    function: Callable[..., Tensor]
    compute: Compute
    needs: frozenset[Need] = frozenset({"model"})
    schedule: Literal["every_epoch", "costly"] = "every_epoch"
    default: bool = True
    group: str = ""
    forwards: Callable[[int], float] | None = lambda steps: 0.0
    copies_model: bool = False

    @property
    def in_evaluate_scores(self) -> bool:
        """Whether :func:`evaluate_scores` computes it: the cheap scores of the maps of one epoch alone."""
        return self.schedule == "every_epoch" and not self.needs & {"previous_maps", "method", "quadrants"}


def _model_context(ctx: ScoreContext) -> tuple[nn.Module, Tensor, Target]:
    """``(model, inputs, targets)`` of a context that :meth:`ScoreContext.unmet` let through for ``"model"``."""
    if ctx.model is None or ctx.inputs is None or ctx.targets is None:
        raise ValueError("This score needs the model, inputs and targets in its ScoreContext.")
    return ctx.model, ctx.inputs, ctx.targets


def _curve(mode: str) -> Compute:
    def compute(ctx: ScoreContext) -> dict[str, Tensor]:
        model, inputs, targets = _model_context(ctx)
        baseline = ctx.deletion_baseline if mode == "deletion" else ctx.insertion_baseline
        with _scoring(model, inputs):
            curves = _mode_curves(mode, model, inputs, targets, ctx.ranks, baseline, ctx.steps, ctx.batch_size, ctx.run)
        return {mode: curve_auc(curves), f"{mode}_curve": curves}

    return compute


def _confidence(ctx: ScoreContext) -> dict[str, Tensor]:
    """Average Drop and Increase in Confidence from the same two forwards (inputs, inputs * map)."""
    model, inputs, targets = _model_context(ctx)
    with _scoring(model, inputs):
        y = _chunked_target_outputs(model, inputs, targets, ctx.run, ctx.batch_size)
        o = _chunked_target_outputs(model, inputs * ctx.maps.to(inputs.dtype), targets, ctx.run, ctx.batch_size)
    return {"average_drop": _average_drop_per_image(y, o), "increase_in_confidence": _increase_per_image(y, o)}


def _pointing(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"pointing_game": pointing_game(ctx.maps, ctx.boxes, ctx.masks, tolerance=ctx.pointing_tolerance)}


def _energy(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"energy_pointing_game": energy_pointing_game(ctx.maps, ctx.boxes, ctx.masks)}


def _iou(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"localisation_iou": localisation_iou(ctx.maps, ctx.boxes, ctx.masks)}


def _randomisation(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    rho = model_randomisation_score(model, inputs, targets, ctx.method, maps=ctx.maps, run=ctx.run)  # [S,B]
    return {"model_randomisation": rho.mean(0)}


def _attack(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    return {
        "saliency_attack": saliency_attack_score(model, inputs, targets, ctx.maps, run=ctx.run, bounds=ctx.input_bounds)
    }


def _stability(ctx: ScoreContext) -> dict[str, Tensor]:
    assert ctx.previous_maps is not None
    return {"map_stability": map_stability(ctx.previous_maps, ctx.maps).float()}


def _road(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    return {"road": road_score(model, inputs, targets, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)}


def _infidelity(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    return {"infidelity": infidelity(model, inputs, targets, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)}


def _sensitivity(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    return {"sensitivity_max": sensitivity_max(ctx.method, model, inputs, targets, run=ctx.run)}


# faithfulness (regions): Quantus' Region Perturbation, Selectivity, IROF, Sensitivity-N, Sufficiency
def _region_perturbation(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    curves = region_perturbation(model, inputs, targets, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)
    return {"region_perturbation": _curve_area(curves), "region_perturbation_curve": curves}


def _selectivity(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    curves = selectivity(model, inputs, targets, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)
    return {"selectivity": _curve_area(curves), "selectivity_curve": curves}


def _irof(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    return {"irof": irof(model, inputs, targets, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)}


def _sensitivity_n(ctx: ScoreContext) -> dict[str, Tensor]:
    """The batch's mean correlation, for every image (the correlations are across the images)."""
    model, inputs, targets = _model_context(ctx)
    step = max(1, math.prod(inputs.shape[2:]) // ctx.steps)  # about `steps` steps, not one per element
    rho = sensitivity_n(model, inputs, targets, ctx.maps, features_in_step=step, batch_size=ctx.batch_size, run=ctx.run)
    return {"sensitivity_n": rho.mean().expand(inputs.shape[0]).clone()}


def _sufficiency(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, _ = _model_context(ctx)
    return {"sufficiency": sufficiency(model, inputs, ctx.maps, batch_size=ctx.batch_size, run=ctx.run)}


# Quantus' localisation, complexity and axiomatic scores (qloc)

_QUANTUS_K_SHARE = 1000 / 224**2
"""Quantus' default ``k=1000`` of top-k intersection as a share of a 224 x 224 map (about 2 %)."""

_NON_SENSITIVITY_GROUPS = 64
"""The monitor's non-sensitivity replaces each image's values in at most this many groups (one forward each)."""


def _top_k(ctx: ScoreContext) -> dict[str, Tensor]:
    n = ctx.maps[0].numel()
    k = max(1, min(n - 1, round(n * _QUANTUS_K_SHARE)))  # Quantus' 1000 at 224 x 224, the same share elsewhere
    return {"top_k_intersection": top_k_intersection(ctx.maps, ctx.boxes, ctx.masks, k=k)}


def _rank_accuracy(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"relevance_rank_accuracy": relevance_rank_accuracy(ctx.maps, ctx.boxes, ctx.masks)}


def _auc(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"localisation_auc": localisation_auc(ctx.maps, ctx.boxes, ctx.masks)}


def _focus(ctx: ScoreContext) -> dict[str, Tensor]:
    assert ctx.quadrants is not None
    return {"focus": focus(ctx.maps, ctx.quadrants)}


def _sparseness(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"sparseness": sparseness(ctx.maps)}


def _complexity(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"complexity": complexity(ctx.maps)}


def _effective_complexity(ctx: ScoreContext) -> dict[str, Tensor]:
    return {"effective_complexity": effective_complexity(ctx.maps)}


def _completeness(ctx: ScoreContext) -> dict[str, Tensor]:
    """Raw attributions of the method against its own baseline, complete within 5 % (the IG paper's check)."""
    model, inputs, targets = _model_context(ctx)
    method = ctx.method
    assert isinstance(method, AttributionMethod)
    attributions = method.attributions(model, inputs, targets, ctx.run)  # [B,C,H,W]
    reference = perturbation_baseline(inputs, method.baseline)  # type: ignore[attr-defined]
    score = completeness(
        model,
        inputs,
        targets,
        attributions,
        perturb_baseline=reference,
        normalise=False,
        rtol=0.05,
        atol=1e-5,
        batch_size=ctx.batch_size,
        run=ctx.run,
    )
    return {"completeness": score}


def _non_sensitivity(ctx: ScoreContext) -> dict[str, Tensor]:
    """The share of violating groups, with the values replaced in at most 64 groups per image."""
    model, inputs, targets = _model_context(ctx)
    n = inputs[0].numel()
    step = -(-n // _NON_SENSITIVITY_GROUPS)  # ceil
    violations = non_sensitivity(
        model, inputs, targets, ctx.maps, features_in_step=step, batch_size=ctx.batch_size, run=ctx.run
    )
    return {"non_sensitivity": violations / -(-n // step)}


def _input_invariance(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    return {"input_invariance": input_invariance(ctx.method, model, inputs, targets, ctx.maps, run=ctx.run)}


# faithfulness (Quantus): the monitor's curve steps set how many features go per step (at most `steps` steps)
def _features_in_step(inputs: Tensor, steps: int) -> int:
    return math.ceil(inputs[0].numel() / steps)


def _faithfulness_correlation(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    size = min(224, inputs[0].numel() - 1)  # Quantus' subset of 224 features, on inputs that have more
    value = faithfulness_correlation(
        model, inputs, targets, ctx.maps, subset_size=size, batch_size=ctx.batch_size, run=ctx.run
    )
    return {"faithfulness_correlation": value}


def _stepped(name: str, function: Callable[..., Tensor]) -> Compute:
    """A score's compute that passes ``features_in_step`` from the monitor's curve steps (the rest: defaults)."""

    def compute(ctx: ScoreContext) -> dict[str, Tensor]:
        model, inputs, targets = _model_context(ctx)
        step = _features_in_step(inputs, ctx.steps)
        return {
            name: function(
                model, inputs, targets, ctx.maps, features_in_step=step, batch_size=ctx.batch_size, run=ctx.run
            )
        }

    return compute


def _pixel_flipping(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    step = _features_in_step(inputs, ctx.steps)
    curves = pixel_flipping_curve(
        model, inputs, targets, ctx.maps, features_in_step=step, batch_size=ctx.batch_size, run=ctx.run
    )  # [B,n]
    return {"pixel_flipping": _curve_area(curves)}


def _reexplaining(name: str, function: Callable[..., Tensor], **options: object) -> Compute:
    """Compute of a score that re-explains perturbed inputs with the context's method (Quantus' robustness)."""

    def compute(ctx: ScoreContext) -> dict[str, Tensor]:
        model, inputs, targets = _model_context(ctx)
        assert ctx.method is not None
        return {name: function(ctx.method, model, inputs, targets, batch_size=ctx.batch_size, run=ctx.run, **options)}

    return compute


def _random_logit(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    return {"random_logit": random_logit(ctx.method, model, inputs, targets, run=ctx.run)}


def _smooth_mprt(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    rho = smooth_mprt(model, inputs, targets, ctx.method, batch_size=ctx.batch_size, run=ctx.run)  # [L,B]
    return {"smooth_mprt": rho.mean(0)}


def _efficient_mprt(ctx: ScoreContext) -> dict[str, Tensor]:
    model, inputs, targets = _model_context(ctx)
    assert ctx.method is not None
    return {"efficient_mprt": efficient_mprt(model, inputs, targets, ctx.method, run=ctx.run)}


_REGIONS: frozenset[Need] = frozenset({"regions"})
_REEXPLAIN: frozenset[Need] = frozenset({"model", "method"})
_PROBABILITY: frozenset[Need] = frozenset({"model", "confidence"})
_COSTLY = {"schedule": "costly", "default": False, "forwards": None}

SCORES: Mapping[str, ScoreInfo] = MappingProxyType(
    {
        "deletion": ScoreInfo(
            "Area under the target probability as the most salient pixels are deleted (RISE).",
            False,
            deletion_curve,
            _curve("deletion"),
            needs=_PROBABILITY,
            forwards=lambda steps: steps + 1,
        ),
        "insertion": ScoreInfo(
            "Area under the target probability as the most salient pixels are restored onto a blur (RISE).",
            True,
            insertion_curve,
            _curve("insertion"),
            needs=_PROBABILITY,
            forwards=lambda steps: steps + 1,
        ),
        "average_drop": ScoreInfo(
            "Average Drop: relative fall of the target probability on input * map, in [0, 1].",
            False,
            average_drop,
            _confidence,
            needs=_PROBABILITY,
            group="confidence",
            forwards=lambda steps: 1.0,  # the group's two forwards (inputs, inputs * map), one each
        ),
        "increase_in_confidence": ScoreInfo(
            "Increase in Confidence: the share of images whose target probability rises on input * map, in [0, 1].",
            True,
            increase_in_confidence,
            _confidence,
            needs=_PROBABILITY,
            group="confidence",
            forwards=lambda steps: 1.0,  # the group's two forwards (inputs, inputs * map), one each
        ),
        "pointing_game": ScoreInfo(
            "Pointing game: the map's maximum lies in the ground-truth region.",
            True,
            pointing_game,
            _pointing,
            needs=_REGIONS,
        ),
        "energy_pointing_game": ScoreInfo(
            "Energy-based pointing game: share of the map's mass in the ground-truth region.",
            True,
            energy_pointing_game,
            _energy,
            needs=_REGIONS,
        ),
        "localisation_iou": ScoreInfo(
            "IoU of the box (or mask) of the map's largest Otsu component with the ground truth (Simonyan 2014).",
            True,
            localisation_iou,
            _iou,
            needs=_REGIONS,
        ),
        "model_randomisation": ScoreInfo(
            "Spearman |rho| between maps of the model and of a copy with randomised top layers (sanity check).",
            False,
            model_randomisation_score,
            _randomisation,
            needs=frozenset({"model", "method"}),
            copies_model=True,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "saliency_attack": ScoreInfo(
            "Attack norm on the most salient pixels over that on random pixels (CAMERAS-style).",
            False,
            saliency_attack_score,
            _attack,
            needs=frozenset({"model", "classes", "input_bounds"}),
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "map_stability": ScoreInfo(
            "Spearman rho between each image's map at this epoch and at the previous one.",
            None,
            map_stability,
            _stability,
            needs=frozenset({"previous_maps"}),
        ),
        "road": ScoreInfo(
            "ROAD combined: (LeRF - MoRF) / 2 probability with noisy linear imputation, over 10..90 % removed.",
            True,
            road_score,
            _road,
            needs=_PROBABILITY | {"images"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "infidelity": ScoreInfo(
            "Infidelity (captum): mean squared error of attributions . noise vs the logit change, N(0, 0.003).",
            False,
            infidelity,
            _infidelity,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "sensitivity_max": ScoreInfo(
            "Max-sensitivity (captum): largest relative change of the explanation within an L-inf ball of 0.02.",
            False,
            sensitivity_max,
            _sensitivity,
            needs=frozenset({"model", "method"}),
            **_COSTLY,  # type: ignore[arg-type]
        ),
        # faithfulness (regions): Quantus' Region Perturbation, Selectivity, IROF, Sensitivity-N, Sufficiency
        "region_perturbation": ScoreInfo(
            "Region Perturbation (Quantus): mean confidence drop as the 100 most relevant 8 x 8 patches go black.",
            True,
            region_perturbation,
            _region_perturbation,
            needs=_PROBABILITY | {"images"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "selectivity": ScoreInfo(
            "Selectivity (Quantus): mean confidence as every 8 x 8 patch is blacked out, most relevant first.",
            False,
            selectivity,
            _selectivity,
            needs=_PROBABILITY | {"images"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "irof": ScoreInfo(
            "IROF (Quantus): area over the relative confidence as SLIC superpixels are replaced by the mean.",
            True,
            irof,
            _irof,
            needs=_PROBABILITY | {"images"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "sensitivity_n": ScoreInfo(
            "Sensitivity-n (Quantus): correlation across the batch of the confidence drop and the removed attribution.",
            True,
            sensitivity_n,
            _sensitivity_n,
            needs=_PROBABILITY,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "sufficiency": ScoreInfo(
            "Sufficiency (Quantus): share of the images with a similar map that get the same predicted class.",
            True,
            sufficiency,
            _sufficiency,
            needs=frozenset({"model", "classes"}),
            default=False,  # one forward, but a statistic of the batch (the probe's images)
            forwards=lambda steps: 1.0,
        ),
        # Quantus' localisation, complexity and axiomatic scores (qloc)
        "top_k_intersection": ScoreInfo(
            "Top-k intersection (Quantus): share of the map's top 2 % of pixels (k=1000 at 224 px) in the region.",
            True,
            top_k_intersection,
            _top_k,
            needs=_REGIONS,
            default=False,
        ),
        "relevance_rank_accuracy": ScoreInfo(
            "Relevance rank accuracy (Quantus): share of the map's top |region| pixels in the region.",
            True,
            relevance_rank_accuracy,
            _rank_accuracy,
            needs=_REGIONS,
            default=False,
        ),
        "localisation_auc": ScoreInfo(
            "ROC AUC of the map as a detector of the region's pixels (Quantus' AUC).",
            True,
            localisation_auc,
            _auc,
            needs=_REGIONS,
            default=False,
        ),
        "focus": ScoreInfo(
            "Focus (Quantus): share of positive relevance on the target-class quadrants of mosaic inputs.",
            True,
            focus,
            _focus,
            needs=frozenset({"quadrants"}),
            default=False,
        ),
        "sparseness": ScoreInfo(
            "Sparseness (Quantus): Gini index of the map, in [0, 1).",
            True,
            sparseness,
            _sparseness,
            needs=frozenset(),
            default=False,
        ),
        "complexity": ScoreInfo(
            "Complexity (Quantus): entropy of the map's share of its mass, in [0, log(H * W)].",
            False,
            complexity,
            _complexity,
            needs=frozenset(),
            default=False,
        ),
        "effective_complexity": ScoreInfo(
            "Effective complexity (Quantus): pixels above 1e-5 of the map's maximum (a count).",
            False,
            effective_complexity,
            _effective_complexity,
            needs=frozenset(),
            default=False,
        ),
        "completeness": ScoreInfo(
            "Completeness (Quantus): raw attributions sum to f(x) - f(baseline) within 5 % (IG, DeepLift only).",
            True,
            completeness,
            _completeness,
            needs=frozenset({"model", "method", "attributions"}),
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "non_sensitivity": ScoreInfo(
            "Non-sensitivity (Quantus): share of 64 input groups whose attribution and probability change disagree.",
            False,
            non_sensitivity,
            _non_sensitivity,
            needs=_PROBABILITY,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "input_invariance": ScoreInfo(
            "Input invariance (Quantus): the map is unchanged when the input shifts by -1 and the model compensates.",
            True,
            input_invariance,
            _input_invariance,
            needs=frozenset({"model", "method"}),
            **_COSTLY,  # type: ignore[arg-type]
        ),
        # faithfulness (Quantus 0.6's defaults; features per step from the curve steps)
        "faithfulness_correlation": ScoreInfo(
            "Faithfulness Correlation (Bhatt 2020): Pearson of map sums vs logit drops over 100 random subsets.",
            True,
            faithfulness_correlation,
            _faithfulness_correlation,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "faithfulness_estimate": ScoreInfo(
            "Faithfulness Estimate (Alvarez-Melis 2018): Pearson of map sums vs logit drops, feature groups by rank.",
            True,
            faithfulness_estimate,
            _stepped("faithfulness_estimate", faithfulness_estimate),
            default=False,
            forwards=lambda steps: steps + 1,
        ),
        "monotonicity": ScoreInfo(
            "Monotonicity (Arya 2019): the probability never falls as features are inserted, least relevant first.",
            True,
            monotonicity,
            _stepped("monotonicity", monotonicity),
            needs=_PROBABILITY,
            default=False,
            forwards=lambda steps: steps,
        ),
        "monotonicity_correlation": ScoreInfo(
            "Monotonicity Correlation (Nguyen 2020): Spearman of map sums vs output variance, 100 uniform draws.",
            True,
            monotonicity_correlation,
            _stepped("monotonicity_correlation", monotonicity_correlation),
            needs=_PROBABILITY,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "pixel_flipping": ScoreInfo(
            "Pixel-Flipping (Bach 2015): mean probability as features go to the image minimum, most relevant first.",
            False,
            pixel_flipping_curve,
            _pixel_flipping,
            needs=_PROBABILITY,
            default=False,
            forwards=lambda steps: steps,
        ),
        # Quantus robustness family (issue #18)
        "local_lipschitz_estimate": ScoreInfo(
            "Local Lipschitz Estimate (Quantus): largest ||map change|| / ||input change|| under N(0, 0.1) noise.",
            False,
            local_lipschitz_estimate,
            _reexplaining("local_lipschitz_estimate", local_lipschitz_estimate),
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "avg_sensitivity": ScoreInfo(
            "Average sensitivity (Quantus): mean relative change of the explanation under U(-0.2, 0.2) noise.",
            False,
            avg_sensitivity,
            _reexplaining("avg_sensitivity", avg_sensitivity),
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "continuity": ScoreInfo(
            "Continuity (Quantus): largest L1 map change / L2 input change over 28 horizontal translations.",
            False,
            continuity,
            _reexplaining("continuity", continuity),
            needs=_REEXPLAIN | {"images"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "relative_input_stability": ScoreInfo(
            "Relative input stability (Quantus, Agarwal 2022): relative map change over relative input change.",
            False,
            relative_stability,
            _reexplaining("relative_input_stability", relative_stability, of="input"),
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "relative_output_stability": ScoreInfo(
            "Relative output stability (Quantus, Agarwal 2022): relative map change over the change of the logits.",
            False,
            relative_stability,
            _reexplaining("relative_output_stability", relative_stability, of="output"),
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "relative_representation_stability": ScoreInfo(
            "Relative representation stability (Quantus, Agarwal 2022): over the relative change of every layer.",
            False,
            relative_stability,
            _reexplaining("relative_representation_stability", relative_stability, of="representation"),
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
        ),
        # Quantus randomisation family (issue #18)
        "random_logit": ScoreInfo(
            "Random Logit (Quantus): SSIM of the explanation of the target and of a random other class.",
            False,
            random_logit,
            _random_logit,
            needs=_REEXPLAIN | {"classes"},
            **_COSTLY,  # type: ignore[arg-type]
        ),
        "smooth_mprt": ScoreInfo(
            "Smooth MPRT (Quantus): Spearman rho of noise-averaged maps as a copy's layers are randomised, mean.",
            False,
            smooth_mprt,
            _smooth_mprt,
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
            copies_model=True,
        ),
        "efficient_mprt": ScoreInfo(
            "Efficient MPRT (Quantus): relative rise of the map's histogram entropy on a fully randomised copy.",
            True,
            efficient_mprt,
            _efficient_mprt,
            needs=_REEXPLAIN,
            **_COSTLY,  # type: ignore[arg-type]
            copies_model=True,
        ),
    }
)
"""Score name -> :class:`ScoreInfo`, in the order the monitor computes and lists them."""


def default_scores() -> tuple[str, ...]:
    """The scores the monitor computes by default: every cheap one.

    Example:
        >>> default_scores()[:3]
        ('deletion', 'insertion', 'average_drop')
    """
    return tuple(name for name, info in SCORES.items() if info.default)


def _group(name: str) -> str:
    return SCORES[name].group or name


class Scores(dict[str, Tensor]):
    """The result of :func:`compute_scores`: name -> per-image tensor, plus ``skipped`` (name -> reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


def score_groups(names: Sequence[str]) -> list[list[str]]:
    """``names`` (registered, in registry order) in groups that share their forwards, in registry order.

    Example:
        >>> score_groups(["increase_in_confidence", "deletion", "average_drop"])
        [['deletion'], ['average_drop', 'increase_in_confidence']]
    """
    wanted = [n for n in SCORES if n in set(names)]
    groups: dict[str, list[str]] = {}
    for name in wanted:
        groups.setdefault(_group(name), []).append(name)
    return list(groups.values())


def compute_scores(
    ctx: ScoreContext, names: Sequence[str], *, on_group: Callable[[list[str]], None] | None = None
) -> Scores:
    """Compute ``names`` from ``ctx``, per image, dispatching each group of scores to its registry entry.

    A score whose needs ``ctx`` does not meet is left out, with the reason in ``result.skipped``. ``on_group`` is
    called with each group's names once it was computed (the monitor times and reports through it).
    """
    result = Scores()
    for group in score_groups(names):
        reason = ctx.unmet(SCORES[group[0]].needs)
        if reason is not None:
            result.skipped.update(dict.fromkeys(group, reason))
            continue
        out = SCORES[group[0]].compute(ctx)
        result.update({k: v for k, v in out.items() if k in group or (k.endswith("_curve") and k[:-6] in group)})
        if on_group is not None:
            on_group(group)
    return result


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        info = SCORES.get(name)
        if info is None:
            cheap = [n for n, i in SCORES.items() if i.in_evaluate_scores]
            raise ValueError(f"Unknown score {name!r}. evaluate_scores computes: {', '.join(cheap)}.")
        if not info.in_evaluate_scores:
            raise ValueError(
                f"Score {name!r} is not computed by evaluate_scores (it is expensive or needs history); call "
                f"lightning_saliency.metrics.functional.{info.function.__name__} instead."
            )
        if name not in out:
            out.append(name)
    return out


def evaluate_scores(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    maps: Tensor,
    names: Sequence[str],
    *,
    run: Run | None = None,
    boxes: Tensor | None = None,
    masks: Tensor | None = None,
    batch_size: int = 64,
    steps: int = DEFAULT_STEPS,
    deletion_baseline: Baseline = "zero",
    insertion_baseline: Baseline = "blur",
    pointing_tolerance: float = 0.0,
) -> Scores:
    """Compute the cheap scores ``names`` of one method's ``maps``, per image, without gradients.

    All forwards run in ``torch.inference_mode`` (fine inside Lightning's validate/test), chunked to
    ``batch_size`` inputs, with the model in eval mode (restored per submodule) and the global RNG preserved.
    Average Drop and Increase in Confidence share their two forwards. Localisation scores (pointing games and
    ``localisation_iou``: Otsu threshold, largest component, box) need ``boxes`` or
    ``masks``; without them they are left out and listed in ``result.skipped`` with the reason.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: What the maps explain: a :class:`~lightning_saliency.targets.Target` or ``[B]`` class indices
            (RISE and Score-CAM use the predicted class).
        maps: ``[B, 1, H, W]`` maps in [0, 1] at the input resolution.
        names: Score names, a subset of those in :data:`SCORES` with ``in_evaluate_scores``.
        run: Precision and output adapter.
        boxes: ``[B, 4]`` ``(x1, y1, x2, y2)`` regions (x = column, half-open) for the localisation scores.
        masks: ``[B, H, W]`` bool regions, instead of boxes.
        batch_size: Most images per forward.
        steps: Steps of the deletion/insertion curves.
        deletion_baseline: Substrate of deleted pixels.
        insertion_baseline: Substrate insertion starts from.
        pointing_tolerance: Pointing-game tolerance in pixels.

    Returns:
        :class:`Scores` (a dict): each name -> ``[B]`` float32 on the inputs' device (deletion/insertion:
        the AUC), plus ``"deletion_curve"``/``"insertion_curve"`` -> ``[B, steps + 1]`` when requested.
        Means over images are the papers' scores.

    Raises:
        ValueError: For an unknown or expensive score name, or bad shapes.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> scores = evaluate_scores(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), torch.rand(2, 1, 4, 4),
        ...                          ["deletion", "average_drop", "pointing_game"], steps=4)
        >>> sorted(scores), scores["deletion_curve"].shape, scores.skipped
        (['average_drop', 'deletion', 'deletion_curve'], torch.Size([2, 5]), {'pointing_game': 'needs boxes or masks'})
    """
    wanted = _check_names(names)
    target = _check_model_inputs(inputs, targets, model, run)
    _check_steps(steps)
    _check_batch_size(batch_size)
    ctx = ScoreContext(
        maps=_check_maps(maps, inputs),
        model=model,
        inputs=inputs,
        targets=target,
        run=run or Run(),
        boxes=boxes,
        masks=masks,
        steps=steps,
        batch_size=batch_size,
        deletion_baseline=deletion_baseline,
        insertion_baseline=insertion_baseline,
        pointing_tolerance=pointing_tolerance,
    )
    return compute_scores(ctx, wanted)
