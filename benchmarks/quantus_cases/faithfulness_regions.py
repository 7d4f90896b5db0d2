"""Quantus' region faithfulness metrics against ours (see ``bench_quantus.py``): Region Perturbation, Selectivity,
IROF, Sensitivity-N, Sufficiency.

Both sides get the same inputs; the curves are compared point by point (``max abs diff`` over every image and
step). Quantus 0.6 needs two patches on today's stack: numpy 2.4 removed ``np.trapz`` (IROF's area), and its IROF
asserts a one-channel mask against three-channel images (the mask is broadcast here, nothing else changes).
Sensitivity-N gets per-channel attributions (the map times 1, 1.001, 1.002 per channel), because with one map
broadcast over channels the order of a pixel's three tied elements is up to numpy's unstable sort.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import quantus
import torch
import torchvision.transforms.functional as TF
from quantus.functions.perturb_func import baseline_replacement_by_mask

from lightning_saliency.metrics.functional import irof, region_perturbation, selectivity, sensitivity_n, sufficiency
from quantus_cases import Case, Setup, max_abs_diff

if not hasattr(np, "trapz"):  # numpy >= 2.4: Quantus 0.6 still calls np.trapz (np.trapezoid is the same rule)
    np.trapz = np.trapezoid  # type: ignore[attr-defined]

FEATURES_IN_STEP = 64  # Sensitivity-N: Quantus' default of 1 runs C * H * W forwards per image


def _mask_broadcast(arr: np.ndarray, mask: np.ndarray, **kwargs: object) -> np.ndarray:
    return baseline_replacement_by_mask(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kwargs)


def _quantus(metric: object, s: Setup, a: np.ndarray | None = None) -> np.ndarray:
    x, y, maps, _ = s.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a_batch = maps if a is None else a
        out = metric(model=s.model, x_batch=x, y_batch=y, a_batch=a_batch, device=str(s.inputs.device))  # type: ignore[operator]
    return np.asarray(out, dtype=np.float64)


def _per_channel(s: Setup) -> torch.Tensor:
    scale = torch.tensor([1.0, 1.001, 1.002], device=s.maps.device).view(1, 3, 1, 1)
    return s.maps.expand(-1, 3, -1, -1) * scale  # [B,3,H,W]


def _smooth(s: Setup) -> Setup:
    """IROF's case: blurred inputs (SLIC finds a single segment in the setup's uniform noise; Quantus asserts)."""
    return dataclasses.replace(s, inputs=TF.gaussian_blur(s.inputs, 9, 3.0))


def _q_kwargs() -> dict[str, object]:
    return {"disable_warnings": True}


CASES: list[Case] = [
    Case(
        "faithfulness_regions",
        "RegionPerturbation (patch 8, MoRF, black)",
        lambda s: region_perturbation(s.model, s.inputs, s.targets, s.maps),
        lambda s: _quantus(quantus.RegionPerturbation(**_q_kwargs()), s),
        max_abs_diff,
    ),
    Case(
        "faithfulness_regions",
        "Selectivity (patch 8, black)",
        lambda s: selectivity(s.model, s.inputs, s.targets, s.maps),
        lambda s: _quantus(quantus.Selectivity(**_q_kwargs()), s),
        max_abs_diff,
    ),
    Case(
        "faithfulness_regions",
        "IROF (SLIC, batch mean; blurred inputs)",
        lambda s: irof(s.model, _smooth(s).inputs, s.targets, s.maps),
        lambda s: _quantus(
            quantus.IROF(return_aggregate=False, perturb_func=_mask_broadcast, **_q_kwargs()), _smooth(s)
        ),
        max_abs_diff,
    ),
    Case(
        "faithfulness_regions",
        f"SensitivityN (features_in_step={FEATURES_IN_STEP})",
        lambda s: sensitivity_n(s.model, s.inputs, s.targets, _per_channel(s), features_in_step=FEATURES_IN_STEP),
        lambda s: _quantus(
            quantus.SensitivityN(return_aggregate=False, features_in_step=FEATURES_IN_STEP, **_q_kwargs()),
            s,
            _per_channel(s).cpu().numpy(),
        ),
        max_abs_diff,
    ),
    Case(
        "faithfulness_regions",
        "Sufficiency (seuclidean, 0.6)",
        lambda s: sufficiency(s.model, s.inputs, s.maps),
        lambda s: _quantus(quantus.Sufficiency(**_q_kwargs()), s),
        max_abs_diff,
    ),
]
