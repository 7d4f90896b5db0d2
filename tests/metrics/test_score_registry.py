"""Every registered score obeys the same contract (parametrised over ``SCORES``, as the methods' conformance test).

The names are read from the registry at collection time, so a score registered later is tested automatically:
shape ``[B]``, finite on valid input, deterministic, the model untouched, and its declared needs honoured (a
context without what it needs skips it with a reason instead of failing or guessing).
"""

from __future__ import annotations

import dataclasses
import inspect
import random

import numpy as np
import pytest
import torch
from test_hardening import assert_untouched, snapshot

import lightning_saliency.metrics.functional as functional
from lightning_saliency import SaliencyMonitor
from lightning_saliency.methods import Gradient, IntegratedGradients
from lightning_saliency.metrics import SCORES, ScoreContext, compute_scores, default_scores
from lightning_saliency.targets import ClassTarget, MultiLabelTarget, RegressionTarget

NAMES = list(SCORES)
CHEAP_OPT_IN = {  # cheap (maps only, or a few forwards) but not computed by default: the Quantus families' cheap ones
    "faithfulness_estimate",
    "monotonicity",
    "pixel_flipping",
    "sufficiency",
    "top_k_intersection",
    "relevance_rank_accuracy",
    "localisation_auc",
    "focus",
    "sparseness",
    "complexity",
    "effective_complexity",
}


@pytest.fixture
def context(tiny_cnn, probe_batch) -> ScoreContext:
    inputs, targets = probe_batch  # [4,3,32,32], [4]
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 1, 32, 32, generator=generator)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 32.0, 32.0], [0.0, 4.0, 20.0, 30.0], [2.0, 2.0, 9.0, 9.0]])
    return ScoreContext(
        maps=maps,
        model=tiny_cnn,
        inputs=inputs,
        targets=ClassTarget(targets),
        method=Gradient(),
        boxes=boxes,
        previous_maps=torch.rand(4, 1, 32, 32, generator=generator),
        input_bounds=(-2.0, 2.0),
        steps=4,
        batch_size=8,
        quadrants=torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]]),
    )


def meeting(name: str, context: ScoreContext) -> ScoreContext:
    """``context`` with a method that has raw attributions where the score needs them (the fixture's has none)."""
    if "attributions" in SCORES[name].needs:
        return dataclasses.replace(context, method=IntegratedGradients(steps=4))
    return context


@pytest.mark.parametrize("name", NAMES)
def test_every_score_is_finite_per_image_deterministic_and_leaves_the_model_alone(name, context):
    context = meeting(name, context)
    before = snapshot(context.model)
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = compute_scores(context, [name])
    assert set(first) - {f"{name}_curve"} == {name}, first.keys()
    values = first[name]
    assert values.shape == (4,), name
    assert values.dtype == torch.float32
    assert torch.isfinite(values).all(), (name, values)
    again = compute_scores(context, [name])[name]
    torch.testing.assert_close(again, values, rtol=0, atol=0)  # deterministic (seeded noise and perturbations)
    assert_untouched(before, context.model)
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert np.array_equal(np.random.get_state()[1], rng[1])
    assert random.getstate() == rng[2]


class _Uncopyable(RuntimeError):
    pass


@pytest.mark.parametrize("name", NAMES)
def test_copies_model_says_exactly_which_scores_copy_the_model(name, context):
    """Sharded models cannot be copied (FSDP refuses ``deepcopy``): the monitor skips the scores marked so."""
    context = meeting(name, context)
    model = context.model

    class NoCopy(type(model)):
        def __deepcopy__(self, memo):
            raise _Uncopyable("this model cannot be copied")

    model.__class__ = NoCopy
    try:
        compute_scores(context, [name])
        copied = False
    except _Uncopyable:
        copied = True
    finally:
        model.__class__ = NoCopy.__bases__[0]
    assert copied == SCORES[name].copies_model, (name, copied)


@pytest.mark.parametrize("name", NAMES)
def test_a_context_without_what_a_score_needs_skips_it_with_the_reason(name, context):
    info = SCORES[name]
    lacking = {
        "regions": {"boxes": None, "masks": None},
        "previous_maps": {"previous_maps": None},
        "method": {"method": None},
        "model": {"model": None},
        "confidence": {"targets": RegressionTarget(0)},  # a regression output has no probability
        "classes": {"targets": MultiLabelTarget(torch.tensor([0, 1, 2, 3]))},
        "images": {"inputs": context.inputs[:, :, None], "maps": context.maps[:, :, None]},  # volumes of depth 1
        "attributions": {"method": Gradient()},  # maps only, no raw attributions against a baseline
        "quadrants": {"quadrants": None},
    }
    context = meeting(name, context)
    for need in sorted(info.needs - {"input_bounds"}):
        result = compute_scores(dataclasses.replace(context, **lacking[need]), [name])
        assert name not in result, (name, need)
        assert result.skipped[name].startswith("needs "), result.skipped
    if "input_bounds" in info.needs:  # optional: used when known
        assert name in compute_scores(dataclasses.replace(context, input_bounds=None), [name])


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_names_its_public_function_and_a_schedule_the_monitor_accepts(name):
    info = SCORES[name]
    assert getattr(functional, info.function.__name__) is info.function, "the functional is public"
    assert inspect.getdoc(info.function), "and documented"
    assert info.schedule in ("every_epoch", "costly")
    if name in CHEAP_OPT_IN:
        assert info.schedule == "every_epoch", "cheap"
        assert not info.default, "but opt-in"
    else:
        assert info.default == (info.schedule == "every_epoch"), "cheap scores by default, costly ones opt-in"
    assert info.description
    assert SaliencyMonitor(scores=[name]).scores == [name]


def test_groups_share_one_computation_and_defaults_come_from_the_registry(context):
    assert SCORES["increase_in_confidence"].compute is SCORES["average_drop"].compute
    groups = []
    result = compute_scores(context, ["increase_in_confidence", "average_drop"], on_group=groups.append)
    assert groups == [["average_drop", "increase_in_confidence"]]  # one call for both
    assert set(result) == {"average_drop", "increase_in_confidence"}
    alone = compute_scores(context, ["increase_in_confidence"])
    assert set(alone) == {"increase_in_confidence"}  # the group mate is not reported unasked
    torch.testing.assert_close(alone["increase_in_confidence"], result["increase_in_confidence"])
    assert list(default_scores()) == [n for n, i in SCORES.items() if i.default]
    assert SaliencyMonitor().scores == list(default_scores())
