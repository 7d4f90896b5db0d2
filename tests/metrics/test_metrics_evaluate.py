import pytest
import torch

from lightning_saliency import metrics
from lightning_saliency.metrics import (
    IROF,
    SCORES,
    AverageDrop,
    Completeness,
    Complexity,
    DeletionAUC,
    EffectiveComplexity,
    EnergyPointingGame,
    FaithfulnessCorrelation,
    FaithfulnessEstimate,
    Focus,
    IncreaseInConfidence,
    Infidelity,
    InputInvariance,
    InsertionAUC,
    LocalisationAUC,
    LocalisationIoU,
    MapStability,
    ModelRandomisation,
    Monotonicity,
    MonotonicityCorrelation,
    NonSensitivity,
    PixelFlipping,
    PointingGame,
    RegionPerturbation,
    RelevanceRankAccuracy,
    ROADCombined,
    SaliencyAttack,
    Selectivity,
    SensitivityMax,
    SensitivityN,
    Sparseness,
    Sufficiency,
    TopKIntersection,
    average_drop,
    curve_auc,
    deletion_curve,
    energy_pointing_game,
    evaluate_scores,
    increase_in_confidence,
    insertion_curve,
    pointing_game,
)

CHEAP = [
    "deletion",
    "insertion",
    "average_drop",
    "increase_in_confidence",
    "pointing_game",
    "energy_pointing_game",
    "localisation_iou",
    # faithfulness (Quantus)
    "faithfulness_estimate",
    "monotonicity",
    "pixel_flipping",
]
QUANTUS_CHEAP = [  # Quantus' localisation and complexity scores (qloc): opt-in, not in CHEAP's default-run tests
    "top_k_intersection",
    "relevance_rank_accuracy",
    "localisation_auc",
    "sparseness",
    "complexity",
    "effective_complexity",
]


def test_scores_equal_the_functions_under_inference_mode(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    maps = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 16, 16], [8, 8, 32, 32], [0, 16, 32, 32], [4, 4, 8, 8]])
    modes = [m.training for m in tiny_cnn.modules()]
    with torch.inference_mode():
        x = inputs.clone()  # an inference tensor, as Lightning hands over in validate/test
        scores = evaluate_scores(tiny_cnn, x, targets, maps, CHEAP, boxes=boxes, steps=5, batch_size=7)
    assert [m.training for m in tiny_cnn.modules()] == modes
    assert set(scores) == {*CHEAP, "deletion_curve", "insertion_curve"}
    assert scores.skipped == {}
    torch.testing.assert_close(scores["deletion_curve"], deletion_curve(tiny_cnn, inputs, targets, maps, steps=5))
    torch.testing.assert_close(scores["insertion_curve"], insertion_curve(tiny_cnn, inputs, targets, maps, steps=5))
    torch.testing.assert_close(scores["deletion"], curve_auc(scores["deletion_curve"]))
    torch.testing.assert_close(scores["insertion"], curve_auc(scores["insertion_curve"]))
    torch.testing.assert_close(scores["average_drop"], average_drop(tiny_cnn, inputs, targets, maps))
    torch.testing.assert_close(
        scores["increase_in_confidence"], increase_in_confidence(tiny_cnn, inputs, targets, maps)
    )
    torch.testing.assert_close(scores["pointing_game"], pointing_game(maps, boxes=boxes))
    torch.testing.assert_close(scores["energy_pointing_game"], energy_pointing_game(maps, boxes=boxes))
    for name in CHEAP:
        assert scores[name].shape == (4,)
        assert not torch.isnan(scores[name]).any()


def test_localisation_skipped_without_regions_and_constant_maps(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    scores = evaluate_scores(tiny_cnn, inputs, targets, torch.zeros(4, 1, 32, 32), CHEAP, steps=2)
    assert set(scores.skipped) == {"pointing_game", "energy_pointing_game", "localisation_iou"}
    assert "pointing_game" not in scores
    assert all(not torch.isnan(v).any() for v in scores.values())
    torch.testing.assert_close(scores["average_drop"] >= 0, torch.ones(4, dtype=torch.bool))


def test_name_errors(tiny_cnn, probe_batch):
    inputs, targets = probe_batch
    maps = torch.rand(4, 1, 32, 32)
    with pytest.raises(ValueError, match="Unknown score 'roar'"):
        evaluate_scores(tiny_cnn, inputs, targets, maps, ["roar"])
    with pytest.raises(ValueError, match="model_randomisation_score instead"):
        evaluate_scores(tiny_cnn, inputs, targets, maps, ["model_randomisation"])


def test_registry_agrees_with_metric_classes():
    classes = {
        "deletion": DeletionAUC,
        "insertion": InsertionAUC,
        "average_drop": AverageDrop,
        "increase_in_confidence": IncreaseInConfidence,
        "pointing_game": PointingGame,
        "energy_pointing_game": EnergyPointingGame,
        "localisation_iou": LocalisationIoU,
        "model_randomisation": ModelRandomisation,
        "saliency_attack": SaliencyAttack,
        "map_stability": MapStability,
        "road": ROADCombined,
        "infidelity": Infidelity,
        "sensitivity_max": SensitivityMax,
        # faithfulness (regions)
        "region_perturbation": RegionPerturbation,
        "selectivity": Selectivity,
        "irof": IROF,
        "sensitivity_n": SensitivityN,
        "sufficiency": Sufficiency,
        # Quantus' localisation, complexity and axiomatic scores (qloc)
        "top_k_intersection": TopKIntersection,
        "relevance_rank_accuracy": RelevanceRankAccuracy,
        "localisation_auc": LocalisationAUC,
        "focus": Focus,
        "sparseness": Sparseness,
        "complexity": Complexity,
        "effective_complexity": EffectiveComplexity,
        "completeness": Completeness,
        "non_sensitivity": NonSensitivity,
        "input_invariance": InputInvariance,
        # faithfulness (Quantus)
        "faithfulness_correlation": FaithfulnessCorrelation,
        "faithfulness_estimate": FaithfulnessEstimate,
        "monotonicity": Monotonicity,
        "monotonicity_correlation": MonotonicityCorrelation,
        "pixel_flipping": PixelFlipping,
        # Quantus robustness and randomisation families (issue #18)
        "local_lipschitz_estimate": metrics.LocalLipschitzEstimate,
        "avg_sensitivity": metrics.AvgSensitivity,
        "continuity": metrics.Continuity,
        "relative_input_stability": metrics.RelativeInputStability,
        "relative_output_stability": metrics.RelativeOutputStability,
        "relative_representation_stability": metrics.RelativeRepresentationStability,
        "random_logit": metrics.RandomLogit,
        "smooth_mprt": metrics.SmoothMPRT,
        "efficient_mprt": metrics.EfficientMPRT,
    }
    assert set(SCORES) == set(classes)
    for name, cls in classes.items():
        assert SCORES[name].higher_is_better == cls.higher_is_better, name
        assert cls.full_state_update is False
    in_evaluate = [n for n, info in SCORES.items() if info.in_evaluate_scores]  # in the registry's order
    assert in_evaluate == [*CHEAP[:7], "sufficiency", *QUANTUS_CHEAP, *CHEAP[7:]]


def test_mixed_precision_run(tiny_cnn, probe_batch):
    from lightning_saliency import Precision
    from lightning_saliency.methods import Run
    from lightning_saliency.metrics import saliency_attack_score

    inputs, targets = probe_batch
    maps = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    entered = []

    def autocast():
        entered.append(1)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    run = Run(precision=Precision(forward_context=autocast))
    scores = evaluate_scores(tiny_cnn, inputs, targets, maps, ["deletion", "average_drop"], run=run, steps=4)
    assert entered
    assert scores["deletion_curve"].dtype == torch.float32
    fp32 = evaluate_scores(tiny_cnn, inputs, targets, maps, ["deletion"], steps=4)
    torch.testing.assert_close(scores["deletion_curve"], fp32["deletion_curve"], atol=0.05, rtol=0)
    ratio = saliency_attack_score(tiny_cnn, inputs, targets, maps, max_steps=3, run=run)
    assert torch.isfinite(ratio).all()
