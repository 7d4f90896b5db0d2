"""Phase 3, score: every method's scores of this epoch, per image, dispatched from the score registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.methods import SaliencyMethod
from lightning_saliency.metrics.functional._common import _scoring
from lightning_saliency.metrics.registry import SCORES, ScoreContext, Scores, compute_scores, score_groups
from lightning_saliency.monitoring.budget import CURVES
from lightning_saliency.monitoring.maps import now
from lightning_saliency.monitoring.result import EpochResult, Failures
from lightning_saliency.probe import Probe
from lightning_saliency.targets import Target

__all__ = ["forward_seconds", "scheduled_scores", "score_maps"]


def _on_rows(ctx: ScoreContext, group: list[str], rows: Tensor, steps: int) -> Scores:
    """``group`` on the ``rows`` (``[B]`` bool) of ``ctx`` only, NaN elsewhere (values ``[B]``, curves too)."""
    b = len(rows)
    index = rows.nonzero().flatten()
    part = compute_scores(ctx.rows(index), group) if len(index) else Scores()
    out = Scores()
    out.skipped = dict(part.skipped)
    for name in group:
        if name in out.skipped:
            continue
        for key, width in ((name, None), (f"{name}_curve", steps + 1 if name in CURVES else None)):
            if key != name and width is None:
                continue
            full = torch.full((b,) if width is None else (b, width), float("nan"))
            if key in part:
                full[index] = part[key].float().cpu()
            out[key] = full
    return out


def forward_seconds(model: nn.Module, inputs: Tensor, run: Run) -> float:
    """Seconds of one scoring forward of ``inputs`` (eval, inference mode), per row: a time budget's first estimate."""
    with _scoring(model, inputs):
        begin = now(inputs.device)
        run.output(model, inputs)
        return (now(inputs.device) - begin) / max(len(inputs), 1)


def scheduled_scores(names: Sequence[str], *, expensive: bool) -> list[str]:
    """The scores of ``names`` that run on the probe this epoch: the cheap ones, and the costly ones when ``expensive``.

    Scores that need the previous epoch's maps run later, in the summary (on rank 0).

    Example:
        >>> scheduled_scores(["deletion", "road", "map_stability"], expensive=False)
        ['deletion']
    """
    return [
        n
        for n in names
        if (SCORES[n].schedule == "every_epoch" or expensive) and "previous_maps" not in SCORES[n].needs
    ]


def score_maps(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    probe: Probe,
    methods: Sequence[SaliencyMethod],
    names: Sequence[str],
    result: EpochResult,
    failures: Failures,
    *,
    run: Run,
    steps: int,
    batch_size: int,
    input_bounds: tuple[float, float] | None,
    note: Callable[[str], None],
    progress: Callable[[str], None] = lambda _: None,
    curve_rows: Tensor | None = None,
) -> None:
    """Fill ``result.scores`` (label -> name -> ``[B]`` on the CPU), ``result.curves`` and ``result.times``.

    Each group of scores that share forwards is one attempt: when failures are isolated, a failing group is
    recorded and the other scores are still computed. Skipped scores (no boxes or masks) are noted once. With
    ``curve_rows`` (``[B]`` bool, a time budget's cut) the deletion and insertion curves run on those rows only;
    the other rows' values and curves are NaN (the same shapes on every rank).
    """
    device = inputs.device
    for method in methods:
        label = method.label
        if label not in result.maps:
            continue  # the method failed: nothing to score
        ctx = ScoreContext(
            maps=result.maps[label].to(device),
            model=model,
            inputs=inputs,
            targets=targets,
            run=run,
            method=method,
            boxes=probe.boxes,
            masks=probe.masks,
            input_bounds=input_bounds,
            steps=steps,
            batch_size=batch_size,
        )
        values: dict[str, Tensor] = {}  # name -> [S] per image
        for group in score_groups(names):
            start = now(device)
            with failures.attempt(*[("score", label, name) for name in group]):
                if curve_rows is not None and any(name in CURVES for name in group):
                    scores = _on_rows(ctx, group, curve_rows, steps)
                else:
                    scores = compute_scores(ctx, group)
                values.update({name: scores[name].float().cpu() for name in group if name in scores})
                for mode in ("deletion", "insertion"):
                    if f"{mode}_curve" in scores:
                        result.curves.setdefault(mode, {})[label] = scores[f"{mode}_curve"].float().cpu()
                for name, reason in scores.skipped.items():
                    note(f"SaliencyMonitor skips the score {name!r}: {reason} (give them with the probe).")
                if any(name in scores for name in group):
                    result.times[f"{label}/{'+'.join(group)}"] = now(device) - start
        result.scores[label] = values
        progress(f"scores of {label}")
