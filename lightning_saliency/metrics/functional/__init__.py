"""Saliency scores as pure functions (torchmetrics' functional layout).

Every function returns one value per image (``[B]``; curves ``[B, steps + 1]``; the sanity check ``[S, B]``);
the paper's score is their mean, which the :mod:`lightning_saliency.metrics` classes accumulate.
"""

from lightning_saliency.metrics.functional.attack import masked_attack_norm, saliency_attack_score
from lightning_saliency.metrics.functional.correlation import map_stability, pearson, spearman

# faithfulness (Quantus): Faithfulness Correlation/Estimate, Monotonicity (Arya, Nguyen), Pixel-Flipping
from lightning_saliency.metrics.functional.faithfulness import (
    PerturbBaseline,
    faithfulness_correlation,
    faithfulness_correlation_subsets,
    faithfulness_estimate,
    monotonicity,
    monotonicity_correlation,
    pixel_flipping,
    pixel_flipping_curve,
)

# faithfulness (regions): Quantus' Region Perturbation, Selectivity, IROF, Sensitivity-N, Sufficiency
from lightning_saliency.metrics.functional.faithfulness_regions import (
    irof,
    region_perturbation,
    selectivity,
    sensitivity_n,
    slic_segments,
    sufficiency,
)
from lightning_saliency.metrics.functional.localisation import (
    energy_pointing_game,
    localisation_iou,
    pointing_game,
    region_masks,
)
from lightning_saliency.metrics.functional.perturbation import (
    DEFAULT_STEPS,
    average_drop,
    curve_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_curve,
    perturbation_baseline,
)
from lightning_saliency.metrics.functional.randomisation import (
    discrete_entropy,
    efficient_mprt,
    random_logit,
    random_off_classes,
    randomised_models,
    smooth_mprt,
    smooth_mprt_noise,
    structural_similarity,
)
from lightning_saliency.metrics.functional.road import (
    DEFAULT_PERCENTAGES,
    noisy_linear_imputation,
    road_curves,
    road_masks,
    road_score,
)

# Quantus robustness family (issue #18)
from lightning_saliency.metrics.functional.robustness import (
    avg_sensitivity,
    infidelity,
    sensitivity_max,
)
from lightning_saliency.metrics.functional.sanity import model_randomisation_score, randomisable_layers
from lightning_saliency.metrics.functional.stability import (
    continuity,
    hidden_layers,
    local_lipschitz_estimate,
    relative_stability,
    translations,
)

# isort: split
# Quantus' localisation, complexity and axiomatic scores (qloc)
from lightning_saliency.metrics.functional.axiomatic import (
    completeness,
    input_invariance,
    non_sensitivity,
    quantus_baseline,
)
from lightning_saliency.metrics.functional.complexity import complexity, effective_complexity, sparseness
from lightning_saliency.metrics.functional.localisation import (
    focus,
    localisation_auc,
    relevance_rank_accuracy,
    top_k_intersection,
)

__all__ = [
    "DEFAULT_PERCENTAGES",
    "DEFAULT_STEPS",
    "average_drop",
    "curve_auc",
    "deletion_curve",
    "energy_pointing_game",
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
    "road_masks",
    "road_score",
    "saliency_attack_score",
    "sensitivity_max",
    "spearman",
    # faithfulness (regions)
    "irof",
    "region_perturbation",
    "selectivity",
    "sensitivity_n",
    "slic_segments",
    "sufficiency",
    # Quantus' localisation, complexity and axiomatic scores (qloc)
    "completeness",
    "complexity",
    "effective_complexity",
    "focus",
    "input_invariance",
    "localisation_auc",
    "non_sensitivity",
    "quantus_baseline",
    "relevance_rank_accuracy",
    "sparseness",
    "top_k_intersection",
    # faithfulness (Quantus)
    "PerturbBaseline",
    "faithfulness_correlation",
    "faithfulness_correlation_subsets",
    "faithfulness_estimate",
    "monotonicity",
    "monotonicity_correlation",
    "pearson",
    "pixel_flipping",
    "pixel_flipping_curve",
    # Quantus robustness family (issue #18)
    "avg_sensitivity",
    "continuity",
    "hidden_layers",
    "local_lipschitz_estimate",
    "relative_stability",
    "translations",
    # Quantus randomisation family (issue #18)
    "discrete_entropy",
    "efficient_mprt",
    "random_logit",
    "random_off_classes",
    "randomised_models",
    "smooth_mprt",
    "smooth_mprt_noise",
    "structural_similarity",
]
