"""The time budget (``SaliencyMonitor(budget=...)``): the planner's cuts in order, the accounting, the callback
following the plan (the same work on every rank), and training untouched."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from _lightning_models import TinyClassifier, assert_same_training, loaders, read_events, train_state, trainer

from lightning_saliency import SaliencyMonitor
from lightning_saliency.monitoring.budget import MIN_STEPS, Budget, Costs, Plan

WANTED = ("deletion", "insertion", "average_drop", "increase_in_confidence", "road")


def _budget(credit: float, **scores: float) -> Budget:
    """A budget with ``credit`` seconds left; measured: after the scores 0.5 s, ``scores`` (16 steps, 8 rows)."""
    budget = Budget(0.5)
    costs = Costs(maps=1.0, scores=dict(scores), after=0.5, steps=16, rows=8)
    budget.account(outside=2 * credit, spent=0.0, costs=costs)
    return budget


def test_without_measurement_or_estimate_the_epoch_runs_as_asked():
    plan = Budget(0.05).plan(WANTED, 16, rows=8, outside=10.0, elapsed=0.1)
    assert (plan.scores, plan.steps, plan.curve_rows, plan.reduced) == (WANTED, 16, None, ())
    assert math.isnan(plan.estimate)  # nothing measured yet
    assert plan.credit == pytest.approx(0.5)  # 5 % of 10 s


def test_the_first_epoch_is_planned_from_one_forward():
    # 10 ms a forward per image, 2 methods, 8 rows: deletion and insertion 17 forwards each (2.72 s each),
    # average drop and increase 1 each (0.16 s each); road unknown (costly: its first run measures it)
    estimate = Costs.estimate(WANTED, forward=0.01, methods=2, steps=16, rows=8)
    assert estimate.scores == pytest.approx(
        {"deletion": 2.72, "insertion": 2.72, "average_drop": 0.16, "increase_in_confidence": 0.16}
    )
    budget = Budget(0.1)
    plan = budget.plan(WANTED, 16, rows=8, outside=30.0, elapsed=0.5, estimate=estimate)  # 3 s credit
    assert plan.steps == MIN_STEPS  # 2 x 5 forwards x 2 methods x 8 rows = 1.6 s, + 0.32 s + 0.5 s spent
    assert "costly scores postponed: road" in plan.reduced
    assert plan.estimate <= plan.credit
    plan = budget.plan(WANTED, 16, rows=8, outside=1000.0, elapsed=0.5, estimate=estimate)
    assert (plan.scores, plan.steps, plan.reduced) == (WANTED, 16, ())  # plenty: as asked, road measured


def test_enough_credit_cuts_nothing():
    budget = _budget(10.0, deletion=1.0, insertion=1.0, average_drop=0.2, increase_in_confidence=0.2, road=2.0)
    budget.expensive_costs["road"] = 2.0
    plan = budget.plan(WANTED, 16, rows=8, outside=0.0, elapsed=1.0)
    assert plan.scores == WANTED
    assert (plan.steps, plan.curve_rows, plan.reduced) == (16, None, ())
    assert plan.estimate == pytest.approx(1.5 + 4.4)


def test_costly_scores_are_postponed_first():
    budget = _budget(4.5, deletion=1.0, insertion=1.0, average_drop=0.2, increase_in_confidence=0.2)
    budget.expensive_costs["road"] = 2.0  # 1 s of maps + 0.5 s after + 2.4 cheap fit in 4.5 s, road's 2 s do not
    plan = budget.plan(WANTED, 16, rows=8, outside=0.0, elapsed=1.0)
    assert plan.scores == WANTED[:4]
    assert plan.reduced == ("costly scores postponed: road",)
    assert plan.steps == 16


def test_then_fewer_curve_steps_then_fewer_rows_then_no_curves():
    costs = {"deletion": 2.0, "insertion": 2.0, "average_drop": 0.1, "increase_in_confidence": 0.1}
    # 1 s of maps + 0.5 s after + 0.2 s others leave 1.3 s for curves of 4 s at 16 steps: 8 steps cost
    # 4 * 9/17 = 2.1, 4 steps 4 * 5/17 = 1.18: fits
    plan = _budget(3.0, **costs).plan(WANTED[:4], 16, rows=8, outside=0.0, elapsed=1.0)
    assert (plan.steps, plan.curve_rows) == (MIN_STEPS, None)
    assert plan.reduced == ("curve steps 16 -> 4",)
    # 0.8 s for curves: at 4 steps 1.18 s for 8 rows, 0.147 s a row: 5 rows
    plan = _budget(2.5, **costs).plan(WANTED[:4], 16, rows=8, outside=0.0, elapsed=1.0)
    assert (plan.steps, plan.curve_rows) == (MIN_STEPS, 5)
    assert plan.reduced == ("curve steps 16 -> 4", "curves on 5 of 8 rows")
    # 0.05 s for curves: not one row: the curves are left out, the other scores stay
    plan = _budget(1.75, **costs).plan(WANTED[:4], 16, rows=8, outside=0.0, elapsed=1.0)
    assert plan.scores == ("average_drop", "increase_in_confidence")
    assert plan.reduced[-1] == "curves left out: deletion, insertion"


def test_maps_are_cut_last_and_said():
    plan = _budget(1.0, deletion=1.0).plan(("deletion",), 16, rows=8, outside=0.0, elapsed=1.0)
    assert plan.scores == ()
    assert plan.reduced == ("every score left out: the maps alone exceed the budget",)


def test_accounting_and_overhead():
    budget = Budget(0.1)
    budget.account(outside=50.0, spent=1.0)
    budget.account(outside=50.0, spent=3.0)
    assert budget.credit == pytest.approx(10.0 - 4.0)
    assert budget.overhead == pytest.approx(4.0 / 100.0)
    with pytest.raises(ValueError, match=r"budget must be a fraction of training time in \(0, 1\], got 1.5"):
        Budget(1.5)
    with pytest.raises(ValueError, match="got True"):
        SaliencyMonitor(budget=True)  # type: ignore[arg-type]


def test_costs_are_read_from_the_monitors_timings():
    times = {
        "gradient_pass": 0.4,
        "scorecam": 1.0,
        "gradcam/deletion": 0.6,
        "gradcam/average_drop+increase_in_confidence": 0.2,
        "gradient/deletion": 0.4,
        "total": 9.9,
    }
    costs = Costs.of(times, ["gradient", "gradcam", "scorecam"], after=0.3, steps=8, rows=4, total=3.0)
    assert costs.maps == pytest.approx(1.4)
    assert costs.scores == pytest.approx({"deletion": 1.0, "average_drop": 0.1, "increase_in_confidence": 0.1})
    assert costs.after == pytest.approx(0.3)
    assert costs.base == pytest.approx(3.0 - 1.2)  # the epoch without its scores
    assert costs.score("deletion", 16, 2) == pytest.approx(1.0 * 17 / 9 * 2 / 4)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_tight_budget_cuts_and_says_so_and_training_is_untouched(tmp_path):
    base = train_state(tmp_path / "base", [], max_epochs=3)
    monitor = SaliencyMonitor(["gradient", "gradcam"], num_samples=4, budget=0.01, score_steps=16)
    assert_same_training(base, train_state(tmp_path / "budget", [monitor], max_epochs=3))
    plan = monitor.last_plan
    assert plan is not None
    assert plan.reduced  # 1 % of a few tiny batches: something had to go
    assert plan.steps < 16 or plan.curve_rows is not None or "deletion" not in plan.scores


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_budget_is_logged_and_curves_on_part_of_the_probe_are_nan_elsewhere(tmp_path, monkeypatch):
    def tight(
        self, wanted, steps, *, rows, outside, elapsed, estimate=None
    ):  # a plan that cuts the curves to 2 rows, at 4 steps
        return Plan(tuple(wanted), 4, 2, ("curve steps 16 -> 4", "curves on 2 of 4 rows"), 0.5, 0.4)

    monkeypatch.setattr(Budget, "plan", tight)
    monkeypatch.setattr(Budget, "skip", lambda self, outside: None)  # every epoch logged
    L.seed_everything(0)
    train, val = loaders(n=32)
    monitor = SaliencyMonitor(["gradient"], num_samples=4, budget=0.05, scores=("deletion", "average_drop"))
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    tr.fit(TinyClassifier(), train, val)
    events = read_events(tr.logger.log_dir)
    assert "saliency/time/budget_credit" in events["scalars"]
    assert "saliency/time/overhead" in events["scalars"]
    deletion = monitor.last_scores["gradient"]["deletion"]
    assert not math.isnan(deletion)  # the mean over the 2 rows that ran
    assert monitor.last_plan.curve_rows == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tr.logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    assert "saliency/budget/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("saliency/budget/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "curves on 2 of 4 rows" in text


def test_validate_runs_in_full_whatever_the_budget(tmp_path):
    _, val = loaders(n=32)
    monitor = SaliencyMonitor(["gradient"], num_samples=4, budget=0.0001, scores=("deletion",))
    tr = trainer(tmp_path, [monitor], max_epochs=1)
    tr.validate(TinyClassifier(), val)
    assert monitor.last_plan.reduced == ()
    assert "deletion" in monitor.last_scores["gradient"]


def test_curves_on_some_rows_are_the_same_as_on_all_there_and_nan_elsewhere():
    from conftest import make_probe, make_tiny_cnn

    from lightning_saliency.metrics.registry import ScoreContext, compute_scores
    from lightning_saliency.monitoring.scoring import _on_rows
    from lightning_saliency.targets import ClassTarget

    model = make_tiny_cnn().eval()
    inputs, targets = make_probe(batch=3, height=16, width=16)
    maps = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ctx = ScoreContext(maps=maps, model=model, inputs=inputs, targets=ClassTarget(targets), steps=4, batch_size=8)
    full = compute_scores(ctx, ["deletion"])
    part = _on_rows(ctx, ["deletion"], torch.tensor([True, False, True]), steps=4)
    assert torch.allclose(part["deletion"][[0, 2]], full["deletion"][[0, 2]], atol=1e-6)
    assert part["deletion"][1].isnan()
    assert part["deletion_curve"].shape == (3, 5)
    assert part["deletion_curve"][1].isnan().all()
    none = _on_rows(ctx, ["deletion"], torch.zeros(3, dtype=torch.bool), steps=4)  # a rank with no such rows
    assert none["deletion"].isnan().all()
    assert none["deletion_curve"].shape == (3, 5)


def test_when_the_maps_alone_exceed_the_budget_epochs_are_skipped_with_one_warning(tmp_path):
    from lightning_saliency.exceptions import SaliencyWarning

    L.seed_everything(0)
    train, val = loaders(n=32)
    monitor = SaliencyMonitor(["gradient", "smoothgrad"], num_samples=4, budget=0.001, scores=("deletion",))
    tr = trainer(tmp_path, [monitor], max_epochs=4)
    with pytest.warns(SaliencyWarning, match="maps alone take more than its budget") as record:
        tr.fit(TinyClassifier(), train, val)
    assert sum("maps alone take more" in str(w.message) for w in record) == 1  # one warning, not one per epoch
    events = read_events(tr.logger.log_dir)
    assert len(events["images"]["saliency/overview"]) == 1  # the first epoch measured; 0.1 % pays for no other
    assert len(events["scalars"]["saliency/time/budget_credit"]) == 4  # every epoch says where the budget stands
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(tr.logger.log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("saliency/budget/text_summary")]
    assert sum("epoch not logged" in t for t in texts) == 3, texts
    assert monitor.last_plan.scores == ()
