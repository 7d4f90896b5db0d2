"""Faithfulness, localisation, sanity and stability scores of saliency maps.

Pure functions live in :mod:`lightning_saliency.metrics.functional` (one value per image); the
:class:`torchmetrics.Metric` classes here average them with ``sum``-reduced states (DDP-safe) and share the
same private helpers. :data:`SCORES` (:mod:`lightning_saliency.metrics.registry`) says for each score what it
means, when it runs and what it needs; :func:`compute_scores` dispatches from it, and :func:`evaluate_scores`
computes every cheap per-method score of a batch in one call.
"""

# faithfulness (regions): Quantus' Region Perturbation, Selectivity, IROF, Sensitivity-N, Sufficiency
# faithfulness (Quantus): Faithfulness Correlation/Estimate, Monotonicity (Arya, Nguyen), Pixel-Flipping
from lightning_saliency.metrics.faithfulness import (
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Monotonicity,
    MonotonicityCorrelation,
    PixelFlipping,
)
from lightning_saliency.metrics.faithfulness_regions import (
    IROF,
    RegionPerturbation,
    Selectivity,
    SensitivityN,
    Sufficiency,
)
from lightning_saliency.metrics.functional import (
    average_drop,
    avg_sensitivity,
    continuity,
    curve_auc,
    deletion_curve,
    efficient_mprt,
    energy_pointing_game,
    faithfulness_correlation,
    faithfulness_correlation_subsets,
    faithfulness_estimate,
    increase_in_confidence,
    infidelity,
    insertion_curve,
    local_lipschitz_estimate,
    localisation_iou,
    map_stability,
    masked_attack_norm,
    model_randomisation_score,
    monotonicity,
    monotonicity_correlation,
    noisy_linear_imputation,
    pearson,
    perturbation_baseline,
    pixel_flipping,
    pixel_flipping_curve,
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
from lightning_saliency.metrics.functional.faithfulness_regions import (
    irof,
    region_perturbation,
    selectivity,
    sensitivity_n,
    slic_segments,
    sufficiency,
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

# isort: split
# Quantus' localisation, complexity and axiomatic scores (qloc)
from lightning_saliency.metrics.axiomatic import Completeness, InputInvariance, NonSensitivity
from lightning_saliency.metrics.complexity import Complexity, EffectiveComplexity, Sparseness
from lightning_saliency.metrics.functional import (
    completeness,
    complexity,
    effective_complexity,
    focus,
    input_invariance,
    localisation_auc,
    non_sensitivity,
    relevance_rank_accuracy,
    sparseness,
    top_k_intersection,
)
from lightning_saliency.metrics.localisation import Focus, LocalisationAUC, RelevanceRankAccuracy, TopKIntersection

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
    # faithfulness (regions)
    "IROF",
    "RegionPerturbation",
    "Selectivity",
    "SensitivityN",
    "Sufficiency",
    "irof",
    "region_perturbation",
    "selectivity",
    "sensitivity_n",
    "slic_segments",
    "sufficiency",
    # Quantus' localisation, complexity and axiomatic scores (qloc)
    "Completeness",
    "Complexity",
    "EffectiveComplexity",
    "Focus",
    "InputInvariance",
    "LocalisationAUC",
    "NonSensitivity",
    "RelevanceRankAccuracy",
    "Sparseness",
    "TopKIntersection",
    "completeness",
    "complexity",
    "effective_complexity",
    "focus",
    "input_invariance",
    "localisation_auc",
    "non_sensitivity",
    "relevance_rank_accuracy",
    "sparseness",
    "top_k_intersection",
    # faithfulness (Quantus)
    "FaithfulnessCorrelation",
    "FaithfulnessEstimate",
    "Monotonicity",
    "MonotonicityCorrelation",
    "PixelFlipping",
    "faithfulness_correlation",
    "faithfulness_correlation_subsets",
    "faithfulness_estimate",
    "monotonicity",
    "monotonicity_correlation",
    "pearson",
    "pixel_flipping",
    "pixel_flipping_curve",
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
