"""Phase 2, compute maps: every method's maps of the probe, one failing method not taking the others."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run
from lightning_saliency.distributed import on_any_rank
from lightning_saliency.methods import GradientMethod, SaliencyMethod, compute_saliency
from lightning_saliency.monitoring.result import EpochResult, Failures
from lightning_saliency.targets import Target

__all__ = ["compute_maps", "method_groups", "now"]


def now(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def method_groups(methods: Sequence[SaliencyMethod]) -> list[tuple[str, list[SaliencyMethod]]]:
    """``(timing name, methods)`` per :func:`compute_saliency` call.

    One call for all methods sharing the gradient pass (timed as ``"gradient_pass"``), one per other method.

    Example:
        >>> from lightning_saliency.methods import GradCAM, Gradient, SmoothGrad
        >>> [(name, len(group)) for name, group in method_groups([Gradient(), SmoothGrad(), GradCAM()])]
        [('gradient_pass', 2), ('smoothgrad', 1)]
    """
    shared: list[SaliencyMethod] = [m for m in methods if isinstance(m, GradientMethod)]
    groups = [("gradient_pass" if len(shared) > 1 else shared[0].label, shared)] if shared else []
    return groups + [(m.label, [m]) for m in methods if m not in shared]


def compute_maps(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    methods: Sequence[SaliencyMethod],
    run: Run,
    result: EpochResult,
    failures: Failures,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Fill ``result.maps`` (label -> ``[B, 1, H, W]`` on the CPU, in ``methods`` order) and ``result.times``.

    A failed shared pass is retried method by method, so that (when failures are isolated) only the method that
    fails is lost, not the others sharing its pass; a failed method has no entry in ``result.maps``.
    """
    device = inputs.device

    def maps_of(group: list[SaliencyMethod]) -> dict[str, Tensor]:
        results = compute_saliency(
            model, inputs, targets, group, precision=run.precision, output_adapter=run.output_adapter
        )
        return {m.label: r.cpu() for m, r in zip(group, results, strict=True)}

    maps: dict[str, Tensor] = {}
    for timing_name, group in method_groups(methods):
        start = now(device)
        together: dict[str, Tensor] | None = None
        if len(group) > 1:
            try:
                together = maps_of(group)
            except Exception:
                if not failures.isolate:
                    raise
            if on_any_rank(together is None, device):  # a sharded model: all ranks retry, or none (same forwards)
                together = None
        if together is not None:
            maps.update(together)
        else:  # one method, or a shared pass that failed: method by method
            for method in group:
                with failures.attempt(("method", method.label, None)):
                    maps.update(maps_of([method]))
        result.times[timing_name] = now(device) - start
        progress(timing_name)
    result.maps = {m.label: maps[m.label] for m in methods if m.label in maps}
