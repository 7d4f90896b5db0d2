"""Phase 1c, plan: what a logged epoch computes when the monitor has a time budget (``SaliencyMonitor(budget=...)``).

The budget is a fraction of the trainer's time outside the monitor (training, validation, other callbacks),
accounted over the whole ``fit``: each logged epoch may spend the credit accrued so far, ``budget * time outside
the monitor - time the monitor spent``. Each epoch's scores are planned once its maps are made (their time is then
known): from the previous epoch's measured costs, or, on the first, from the time of one forward of the probe
(:meth:`Costs.estimate`), cutting in this order until the estimate fits the credit:

1. the costly scores (``expensive_every_n_epochs``) are postponed to an epoch whose credit covers them;
2. the deletion/insertion curves take fewer steps (halved, down to :data:`MIN_STEPS`);
3. the curves run on the first images of the probe only (the others' curve scores are NaN, left out of means);
4. the other scores are left out;
5. last, the maps: when the credit cannot pay for an epoch's maps (with its rendering and writing), that epoch is
   not logged (:meth:`Budget.skip`), and one warning says so.

Every rank follows rank 0's decisions (the monitor broadcasts them), so the ranks run the same work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from lightning.pytorch.utilities import rank_zero_warn

from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.metrics.registry import SCORES

__all__ = ["CURVES", "MIN_STEPS", "Budget", "BudgetKeeper", "Costs", "Plan"]

CURVES = ("deletion", "insertion")
MIN_STEPS = 4


@dataclass(frozen=True)
class Plan:
    """What one logged epoch computes.

    Attributes:
        scores: The scores computed on the probe (the registry's names; the summary's scores come later).
        steps: Steps of the deletion/insertion curves.
        curve_rows: The curves run on the probe's first ``curve_rows`` rows; ``None`` for all.
        reduced: What the budget cut, in words (empty when nothing was).
        estimate: The estimated seconds of the plan (``nan`` before anything was measured).
        credit: The seconds the budget allowed for this epoch (``nan`` without a budget).
    """

    scores: tuple[str, ...]
    steps: int
    curve_rows: int | None = None
    reduced: tuple[str, ...] = ()
    estimate: float = math.nan
    credit: float = math.nan


@dataclass
class Costs:
    """Measured (or, before the first measurement, estimated) seconds of one logged epoch's parts, on rank 0.

    Attributes:
        maps: Every method's maps.
        scores: Per score name: its share of its group's seconds (summed over methods).
        after: The work after the scores (summary, rendering, writing).
        steps: The curve steps the curves were measured with.
        rows: The rows the curves were measured on.
        base: The whole epoch without its scores (probe, maps, summary, rendering, writing): what a logged epoch
            costs at the least.
    """

    maps: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    after: float = 0.0
    steps: int = 1
    rows: int = 1
    base: float = 0.0

    @classmethod
    def of(
        cls, times: Mapping[str, float], methods: Sequence[str], after: float, steps: int, rows: int, total: float
    ) -> Costs:
        """The parts of an epoch of ``total`` seconds from its ``times`` (``saliency/time/*``) and ``after`` seconds.

        Keys ``<method>/<score+score>`` are score groups (split evenly among their scores); the others are maps.
        """
        scores: dict[str, float] = {}
        maps = 0.0
        for key, seconds in times.items():
            label, _, group = key.rpartition("/")
            if label in methods and group:
                names = group.split("+")
                for name in names:
                    scores[name] = scores.get(name, 0.0) + seconds / len(names)
            elif key != "total":
                maps += seconds
        return cls(maps, scores, max(0.0, after), steps, rows, max(0.0, total - sum(scores.values())))

    @classmethod
    def estimate(cls, names: Sequence[str], forward: float, methods: int, steps: int, rows: int) -> Costs:
        """First estimates of ``names`` from the seconds of one ``forward`` of one image, before any measurement.

        Each score costs its :attr:`~lightning_saliency.metrics.registry.ScoreInfo.forwards` per image, per method;
        scores of unknown cost (the costly ones) are left to their first run, which measures them.

        Example:
            >>> Costs.estimate(["deletion", "average_drop"], forward=0.01, methods=2, steps=9, rows=4).scores
            {'deletion': 0.8, 'average_drop': 0.08}
        """
        scores = {}
        for name in names:
            forwards = SCORES[name].forwards
            if forwards is not None:
                scores[name] = forwards(steps) * forward * methods * rows
        return cls(0.0, scores, 0.0, steps, rows)

    def score(self, name: str, steps: int, rows: int) -> float:
        """The estimated seconds of ``name`` with ``steps`` curve steps on ``rows`` rows (curves scale with both)."""
        seconds = self.scores.get(name, 0.0)
        if name in CURVES:
            seconds *= (steps + 1) / (self.steps + 1) * rows / max(self.rows, 1)
        return seconds


class Budget:
    """The accounting and the planner (see the module docstring).

    Args:
        fraction: The monitor's time as a fraction of the trainer's time outside it, in ``(0, 1]``.

    Example:
        >>> budget = Budget(0.1)
        >>> budget.account(outside=100.0, spent=2.0, costs=Costs(maps=1.0, scores={"deletion": 1.0}, steps=16, rows=8))
        >>> budget.credit  # 10 % of 100 s, less the 2 s spent
        8.0
        >>> budget.plan(("deletion",), 16, rows=8, outside=0.0, elapsed=1.0).reduced
        ()
    """

    def __init__(self, fraction: float) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"budget must be a fraction of training time in (0, 1], got {fraction!r}.")
        self.fraction = float(fraction)
        self.allowed = 0.0  # fraction * the trainer's time outside the monitor, so far
        self.spent = 0.0  # the monitor's time, so far
        self.costs: Costs | None = None
        self.expensive_costs: dict[str, float] = {}  # the costly scores' seconds when they last ran

    @property
    def credit(self) -> float:
        """The seconds the monitor may still spend: ``allowed - spent``."""
        return self.allowed - self.spent

    @property
    def overhead(self) -> float:
        """The monitor's time so far as a fraction of the trainer's time outside it (``nan`` before any)."""
        outside = self.allowed / self.fraction
        return self.spent / outside if outside > 0 else math.nan

    def account(self, outside: float, spent: float, costs: Costs | None = None) -> None:
        """Record the trainer's ``outside`` seconds, the monitor's ``spent`` seconds and what the parts ``costs``."""
        self.allowed += self.fraction * max(0.0, outside)
        self.spent += max(0.0, spent)
        if costs is not None:
            for name, seconds in costs.scores.items():
                if SCORES[name].schedule != "every_epoch":
                    self.expensive_costs[name] = seconds
            self.costs = costs

    def skip(self, outside: float) -> Plan | None:
        """Before an epoch's work: a plan that logs nothing when the credit cannot pay even for its maps, else ``None``.

        The last cut: such epochs are not logged until the credit covers one again (the maps are measured, so this
        never happens to the first logged epoch).

        Example:
            >>> budget = Budget(0.1)
            >>> budget.account(outside=10.0, spent=3.0, costs=Costs(base=2.0))
            >>> budget.credit  # 10 % of 10 s, less 3 s spent
            -2.0
            >>> budget.skip(outside=10.0).reduced  # -2 s + 1 s against the maps' 2 s
            ('epoch not logged: its maps, rendering and writing take about 2.00 s, 0.00 s available',)
            >>> budget.skip(outside=40.0) is None  # -2 s + 4 s: the maps are paid for
            True
        """
        credit = self.credit + self.fraction * max(0.0, outside)
        if self.costs is None or credit >= self.costs.base:
            return None
        base = self.costs.base
        said = f"epoch not logged: its maps, rendering and writing take about {base:.2f} s, {max(credit, 0):.2f} s"
        said += " available"
        return Plan((), self.costs.steps, None, (said,), base, credit)

    def plan(
        self,
        wanted: Sequence[str],
        steps: int,
        *,
        rows: int,
        outside: float,
        elapsed: float,
        estimate: Costs | None = None,
    ) -> Plan:
        """The scores of this epoch, planned once its maps are made: ``wanted`` at ``steps`` on ``rows``, cut to fit.

        Args:
            wanted: The scores asked for, in order.
            steps: The curve steps asked for.
            rows: The probe's rows.
            outside: The trainer's seconds since the monitor's last work (their allowance adds to the credit).
            elapsed: The seconds this epoch's work has taken so far (the probe and the maps).
            estimate: The costs of the scores never measured (:meth:`Costs.estimate`); without it the first
                epoch runs as asked.
        """
        credit = self.credit + self.fraction * max(0.0, outside)
        costs = self.costs
        if estimate is not None:  # for the scores never measured (all of them on the first epoch)
            if costs is None:
                costs = estimate
            else:
                unmeasured = {n: estimate.score(n, costs.steps, costs.rows) for n in estimate.scores}
                costs = replace(costs, scores={**unmeasured, **costs.scores})
        if costs is None:  # nothing measured and nothing to estimate from: run as asked, and measure
            return Plan(tuple(wanted), steps, None, (), math.nan, credit)
        expensive = [n for n in wanted if SCORES[n].schedule != "every_epoch"]
        cheap = [n for n in wanted if n not in expensive]
        curves = [n for n in cheap if n in CURVES]
        others = [n for n in cheap if n not in CURVES]
        reduced: list[str] = []
        spent = elapsed + costs.after  # what this epoch costs without any score
        left = credit - spent
        if left < 0:
            reduced.append("every score left out: the maps alone exceed the budget")
            return Plan((), steps, None, tuple(reduced), spent, credit)

        def cost(names: Sequence[str], s: int, r: int) -> float:
            return sum(costs.score(n, s, r) for n in names)

        kept_expensive: list[str] = []
        if cost(cheap, steps, rows) <= left:
            left -= cost(cheap, steps, rows)
            for name in expensive:  # in the order asked, while the credit covers them
                seconds = self.expensive_costs.get(name, 0.0)  # unmeasured: its first run measures it
                if seconds <= left:
                    kept_expensive.append(name)
                    left -= seconds
            postponed = [n for n in expensive if n not in kept_expensive]
            if postponed:
                reduced.append(f"costly scores postponed: {', '.join(postponed)}")
            scores = tuple(n for n in wanted if n in cheap or n in kept_expensive)
            return Plan(scores, steps, None, tuple(reduced), credit - left, credit)
        if expensive:
            reduced.append(f"costly scores postponed: {', '.join(expensive)}")
        left_for_curves = left - cost(others, steps, rows)
        s, r = steps, rows
        while curves and s > MIN_STEPS and cost(curves, s, r) > left_for_curves:
            s = max(MIN_STEPS, s // 2)
        if curves and s != steps:
            reduced.append(f"curve steps {steps} -> {s}")
        if curves and cost(curves, s, r) > left_for_curves:
            per_row = cost(curves, s, 1)
            r = int(left_for_curves // per_row) if per_row > 0 else rows
            if r >= 1:
                reduced.append(f"curves on {r} of {rows} rows")
        kept = list(cheap)
        if curves and r < 1:
            kept = [n for n in kept if n not in CURVES]
            reduced.append(f"curves left out: {', '.join(curves)}")
            r = rows
        if cost(kept, s, r) > left:
            kept = [n for n in kept if n in CURVES]
            dropped = [n for n in others if n not in kept]
            if dropped:
                reduced.append(f"scores left out: {', '.join(dropped)}")
        scores = tuple(n for n in wanted if n in kept)
        return Plan(scores, s, None if r >= rows else r, tuple(reduced), spent + cost(kept, s, r), credit)


class BudgetKeeper:
    """The monitor's side of a budget over one ``fit``: its clock, the costly scores it owes, its one warning.

    The callback asks it, on every rank, whether an epoch is skipped (:meth:`skip`, before the work) and what its
    scores are (:meth:`plan`, once the maps are made), broadcasts rank 0's answers, and tells it what the epoch cost
    (:meth:`account`, on every rank).

    Args:
        fraction: The budget (:class:`Budget`).
        scores: The monitor's scores, in its order.
        steps: The curve steps asked for.
        methods: The methods' labels (to read their timings).
    """

    def __init__(self, fraction: float, scores: Sequence[str], steps: int, methods: Sequence[str]) -> None:
        self.budget = Budget(fraction)
        self.scores, self.steps, self.methods = tuple(scores), steps, list(methods)
        self.mark: float | None = None  # when the monitor's last work ended (or training started)
        self.owed: list[str] = []  # costly scores postponed: wanted until they run
        self.warned = False

    def start(self) -> None:
        """Start the clock: the trainer's time outside the monitor counts from now."""
        self.mark = time.perf_counter()

    def _outside(self, start: float) -> float:
        return start - self.mark if self.mark is not None else 0.0

    def skip(self, start: float) -> Plan | None:
        """Before the work of an epoch begun at ``start``: a plan that logs nothing, when it cannot pay for its maps."""
        plan = self.budget.skip(self._outside(start))
        if plan is not None:
            self._warn(plan)
        return plan

    def plan(
        self, names: Sequence[str], rows: int, start: float, forward: Callable[[], float], maps: int
    ) -> Plan | None:
        """Once ``maps`` methods made their maps: this epoch's scores (of ``names``, on ``rows``), or ``None``.

        ``forward()`` times one forward of the probe per row: the estimate of the scores never measured. ``None``
        (with a warning) when planning failed: the plan's collective must still run on every rank.
        """
        try:
            wanted = [n for n in self.scores if n in names or n in self.owed]  # postponed costly scores stay wanted
            measured = self.budget.costs.scores if self.budget.costs is not None else {}
            estimate = None
            if any(n not in measured and SCORES[n].forwards is not None for n in wanted):
                estimate = Costs.estimate(wanted, forward(), maps, self.steps, rows)
            elapsed = time.perf_counter() - start
            plan = self.budget.plan(
                wanted, self.steps, rows=rows, outside=self._outside(start), elapsed=elapsed, estimate=estimate
            )
        except Exception as exc:
            rank_zero_warn(f"SaliencyMonitor could not plan within its budget: {exc!r}", category=SaliencyWarning)
            return None
        self.owed = [n for n in wanted if SCORES[n].schedule != "every_epoch" and n not in plan.scores]
        if any("maps alone exceed" in r for r in plan.reduced):
            self._warn(plan)
        return plan

    def account(self, start: float, scored: float, plan: Plan, times: Mapping[str, float], rows: int) -> None:
        """After an epoch's work (begun at ``start``, scores done at ``scored``; its ``times``, ``rows`` probe rows).

        No maps (``rows == 0``: the epoch was skipped or failed) keeps the last measures.
        """
        end = time.perf_counter()
        costs = None
        if rows:
            curve_rows = plan.curve_rows if plan.curve_rows is not None else rows
            costs = Costs.of(times, self.methods, end - scored, plan.steps, max(curve_rows, 1), end - start)
            if not any("/" in key for key in times) and self.budget.costs is not None:  # no score ran this time
                last = self.budget.costs
                costs.scores, costs.steps, costs.rows = last.scores, last.steps, last.rows
        self.budget.account(self._outside(start), end - start, costs)
        self.mark = end

    def entries(self, prefix: str, epoch: int, plan: Plan) -> tuple[dict[str, float], dict[str, str]]:
        """The scalars (``time/budget_credit``, ``time/overhead``) and text (what was cut) of one epoch."""
        scalars = {f"{prefix}/time/budget_credit": plan.credit}
        if not math.isnan(self.budget.overhead):
            scalars[f"{prefix}/time/overhead"] = self.budget.overhead
        texts = {}
        if plan.reduced:
            texts[f"{prefix}/budget"] = (
                f"epoch {epoch}: within the budget ({self.budget.fraction:.0%} of training time; "
                f"{max(plan.credit, 0):.2f} s available, about {plan.estimate:.2f} s planned): "
                + "; ".join(plan.reduced)
            )
        return scalars, texts

    def _warn(self, plan: Plan) -> None:
        if self.warned:
            return
        self.warned = True
        rank_zero_warn(
            f"SaliencyMonitor's maps alone take more than its budget ({self.budget.fraction:.0%} of training time: "
            f"about {plan.estimate:.2f} s against {max(plan.credit, 0):.2f} s): while that lasts it leaves out every "
            "score, and logs an epoch only when the budget has paid for it (saliency/budget says which). Use fewer "
            "or cheaper methods, a smaller probe, a larger budget, or every_n_epochs.",
            category=SaliencyWarning,
        )
