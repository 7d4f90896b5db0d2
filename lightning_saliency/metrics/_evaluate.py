"""One entry point for the callback: every cheap per-method score of a batch of maps, per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_maps,
    _check_model_inputs,
    _chunked_target_probs,
    _pixel_ranks,
    _scoring,
)
from lightning_saliency.metrics.functional.localisation import energy_pointing_game, localisation_iou, pointing_game
from lightning_saliency.metrics.functional.perturbation import (
    DEFAULT_STEPS,
    Baseline,
    _average_drop_per_image,
    _check_steps,
    _increase_per_image,
    _mode_curves,
    curve_auc,
)
from lightning_saliency.targets import TargetLike

__all__ = ["SCORES", "ScoreInfo", "Scores", "evaluate_scores"]


@dataclass(frozen=True)
class ScoreInfo:
    """What a score means and how it is computed.

    Attributes:
        description: One line for logs and docs.
        higher_is_better: ``True``/``False``, or ``None`` where neither direction is better.
        function: The public function that computes it (in :mod:`lightning_saliency.metrics.functional`).
        in_evaluate_scores: Whether :func:`evaluate_scores` computes it (the cheap per-method scores);
            the others are separate calls (every N epochs, or with the previous epoch's maps).
    """

    description: str
    higher_is_better: bool | None
    function: str
    in_evaluate_scores: bool


SCORES: Mapping[str, ScoreInfo] = MappingProxyType(
    {
        "deletion": ScoreInfo(
            "Area under the target probability as the most salient pixels are deleted (RISE).",
            False,
            "deletion_curve",
            True,
        ),
        "insertion": ScoreInfo(
            "Area under the target probability as the most salient pixels are restored onto a blur (RISE).",
            True,
            "insertion_curve",
            True,
        ),
        "average_drop": ScoreInfo(
            "Average Drop: relative fall of the target probability on input * map, in [0, 1].",
            False,
            "average_drop",
            True,
        ),
        "increase_in_confidence": ScoreInfo(
            "Increase in Confidence: the share of images whose target probability rises on input * map, in [0, 1].",
            True,
            "increase_in_confidence",
            True,
        ),
        "pointing_game": ScoreInfo(
            "Pointing game: the map's maximum lies in the ground-truth region.", True, "pointing_game", True
        ),
        "energy_pointing_game": ScoreInfo(
            "Energy-based pointing game: share of the map's mass in the ground-truth region.",
            True,
            "energy_pointing_game",
            True,
        ),
        "localisation_iou": ScoreInfo(
            "IoU of the box (or mask) of the map's largest Otsu component with the ground truth (Simonyan 2014).",
            True,
            "localisation_iou",
            True,
        ),
        "model_randomisation": ScoreInfo(
            "Spearman |rho| between maps of the model and of a copy with randomised top layers (sanity check).",
            False,
            "model_randomisation_score",
            False,
        ),
        "saliency_attack": ScoreInfo(
            "Attack norm on the most salient pixels over that on random pixels (CAMERAS-style).",
            False,
            "saliency_attack_score",
            False,
        ),
        "map_stability": ScoreInfo(
            "Spearman rho between each image's map at this epoch and at the previous one.", None, "map_stability", False
        ),
        "road": ScoreInfo(
            "ROAD combined: (LeRF - MoRF) / 2 probability with noisy linear imputation, over 10..90 % removed.",
            True,
            "road_score",
            False,
        ),
        "infidelity": ScoreInfo(
            "Infidelity (captum): mean squared error of attributions . noise vs the logit change, N(0, 0.003).",
            False,
            "infidelity",
            False,
        ),
        "sensitivity_max": ScoreInfo(
            "Max-sensitivity (captum): largest relative change of the explanation within an L-inf ball of 0.02.",
            False,
            "sensitivity_max",
            False,
        ),
    }
)
"""Score name -> :class:`ScoreInfo`."""

_LOCALISATION = ("pointing_game", "energy_pointing_game", "localisation_iou")


class Scores(dict[str, Tensor]):
    """The result of :func:`evaluate_scores`: name -> per-image tensor, plus ``skipped`` (name -> reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


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
                f"lightning_saliency.metrics.functional.{info.function} instead."
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
        targets: ``[B]`` classes scored (RISE and Score-CAM use the predicted class).
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
    targets = _check_model_inputs(inputs, targets)
    maps = _check_maps(maps, inputs)
    _check_steps(steps)
    _check_batch_size(batch_size)
    run = run or Run()
    result = Scores()
    with _scoring(model, inputs):
        ranks = _pixel_ranks(maps) if {"deletion", "insertion"} & set(wanted) else None
        for mode, baseline in (("deletion", deletion_baseline), ("insertion", insertion_baseline)):
            if mode in wanted:
                assert ranks is not None
                curves = _mode_curves(mode, model, inputs, targets, ranks, baseline, steps, batch_size, run)
                result[mode], result[f"{mode}_curve"] = curve_auc(curves), curves
        if {"average_drop", "increase_in_confidence"} & set(wanted):
            y = _chunked_target_probs(model, inputs, targets, run, batch_size)
            o = _chunked_target_probs(model, inputs * maps.to(inputs.dtype), targets, run, batch_size)
            if "average_drop" in wanted:
                result["average_drop"] = _average_drop_per_image(y, o)
            if "increase_in_confidence" in wanted:
                result["increase_in_confidence"] = _increase_per_image(y, o)
    for name in (n for n in wanted if n in _LOCALISATION):
        if boxes is None and masks is None:
            result.skipped[name] = "needs boxes or masks"
        elif name == "pointing_game":
            result[name] = pointing_game(maps, boxes, masks, tolerance=pointing_tolerance)
        elif name == "localisation_iou":
            result[name] = localisation_iou(maps, boxes, masks)
        else:
            result[name] = energy_pointing_game(maps, boxes, masks)
    return result
