"""Faithfulness, localisation, sanity and stability scores of saliency maps.

Pure functions live in :mod:`lightning_saliency.metrics.functional` (one value per image); the
:class:`torchmetrics.Metric` classes here average them with ``sum``-reduced states (DDP-safe) and share the
same private helpers. :data:`SCORES` (:mod:`lightning_saliency.metrics.registry`) says for each score what it
means, when it runs and what it needs; :func:`compute_scores` dispatches from it, and :func:`evaluate_scores`
computes every cheap per-method score of a batch in one call.
"""

from lightning_saliency.metrics.functional import (
    average_drop,
    avg_sensitivity,
    continuity,
    curve_auc,
    deletion_curve,
    efficient_mprt,
    energy_pointing_game,
    increase_in_confidence,
    infidelity,
    insertion_curve,
    local_lipschitz_estimate,
    localisation_iou,
    map_stability,
    masked_attack_norm,
    model_randomisation_score,
    noisy_linear_imputation,
    perturbation_baseline,
    pointing_game,
    random_logit,
    randomisable_layers,
    region_masks,
    relative_stability,
    road_curves,
    road_score,
    saliency_attack_score,
    sensitivity_max,
    smooth_mprt,
    spearman,
)
from lightning_saliency.metrics.localisation import EnergyPointingGame, LocalisationIoU, PointingGame
from lightning_saliency.metrics.perturbation import AverageDrop, DeletionAUC, IncreaseInConfidence, InsertionAUC
from lightning_saliency.metrics.randomisation import EfficientMPRT, RandomLogit, SmoothMPRT
from lightning_saliency.metrics.registry import (
    SCORES,
    ScoreContext,
    ScoreInfo,
    Scores,
    compute_scores,
    default_scores,
    evaluate_scores,
)
from lightning_saliency.metrics.road import ROADCombined
from lightning_saliency.metrics.robustness import (
    AvgSensitivity,
    Continuity,
    Infidelity,
    LocalLipschitzEstimate,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    SensitivityMax,
)
from lightning_saliency.metrics.sanity import ModelRandomisation, SaliencyAttack
from lightning_saliency.metrics.stability import MapStability

__all__ = [
    "SCORES",
    "AverageDrop",
    "DeletionAUC",
    "EnergyPointingGame",
    "IncreaseInConfidence",
    "Infidelity",
    "InsertionAUC",
    "LocalisationIoU",
    "MapStability",
    "ModelRandomisation",
    "PointingGame",
    "ROADCombined",
    "SaliencyAttack",
    "ScoreContext",
    "ScoreInfo",
    "Scores",
    "SensitivityMax",
    "average_drop",
    "compute_scores",
    "curve_auc",
    "default_scores",
    "deletion_curve",
    "energy_pointing_game",
    "evaluate_scores",
    "increase_in_confidence",
    "infidelity",
    "insertion_curve",
    "localisation_iou",
    "map_stability",
    "masked_attack_norm",
    "model_randomisation_score",
    "noisy_linear_imputation",
    "perturbation_baseline",
    "pointing_game",
    "randomisable_layers",
    "region_masks",
    "road_curves",
    "road_score",
    "saliency_attack_score",
    "sensitivity_max",
    "spearman",
    # Quantus robustness family (issue #18)
    "AvgSensitivity",
    "Continuity",
    "LocalLipschitzEstimate",
    "RelativeInputStability",
    "RelativeOutputStability",
    "RelativeRepresentationStability",
    "avg_sensitivity",
    "continuity",
    "local_lipschitz_estimate",
    "relative_stability",
    # Quantus randomisation family (issue #18)
    "EfficientMPRT",
    "RandomLogit",
    "SmoothMPRT",
    "efficient_mprt",
    "random_logit",
    "smooth_mprt",
]
