"""What the gradient family costs: one shared pass against one plain forward and backward, on 2-D and 3-D nets.

The reference is what any gradient method must do at least: one forward and one ``torch.autograd.grad`` of the
target logits with respect to the input. Against it: ``Gradient``, ``GradCAM`` and ``GradCAMPlusPlus`` in one
:func:`~lightning_saliency.methods.compute_saliency` call (one shared pass; CAMs upsampled bilinearly, or
trilinearly for volumes), ``Gradient`` alone and ``GradCAM`` alone (its autograd starts at the target layer, so it
is cheaper than the reference). Models: torchvision's ``resnet18`` on images ``[B, 3, 224, 224]`` and ``r3d_18`` on
clips ``[B, 3, T, 112, 112]`` (``weights=None``: the cost does not depend on the weights). The runs are interleaved
(reference, fused, ...; ``--repeats`` rounds after one warm-up round) so that drift of a shared machine's speed
hits all of them alike; medians; only ratios are printed (a markdown table).

Usage: ``python benchmarks/bench_gradient_pass.py [--device cpu|cuda] [--batch 2] [--frames 8] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.video import r3d_18

from lightning_saliency.methods import GradCAM, GradCAMPlusPlus, Gradient, compute_saliency


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ratios(model: nn.Module, inputs: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median time of each run over the reference's, interleaved runs."""
    targets = torch.arange(inputs.shape[0], device=inputs.device) % 400
    methods = [Gradient(), GradCAM(), GradCAMPlusPlus()]  # made once, as the monitor does (layers resolved once)

    def reference() -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
        return grad

    runs: dict[str, Callable[[], object]] = {
        "forward + autograd.grad to the input (reference)": reference,
        "Gradient + GradCAM + GradCAM++, one call": lambda: compute_saliency(model, inputs, targets, methods),
        "Gradient alone": lambda: compute_saliency(model, inputs, targets, methods[:1]),
        "GradCAM alone": lambda: compute_saliency(model, inputs, targets, methods[1:2]),
    }
    return interleaved_ratios(runs, inputs.device, repeats)


def interleaved_ratios(runs: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median time of each run over the first run's (the reference), in ``repeats`` interleaved rounds after a warm-up
    round (kernels, layer resolution)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats + 1):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(next(iter(times.values())))
    return {name: statistics.median(t) / base for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    cases = {
        f"resnet18, images ({args.batch}, 3, 224, 224)": (resnet18(), torch.randn(args.batch, 3, 224, 224)),
        f"r3d_18, clips ({args.batch}, 3, {args.frames}, 112, 112)": (
            r3d_18(),
            torch.randn(args.batch, 3, args.frames, 112, 112),
        ),
    }
    results = {}
    for case, (model, inputs) in cases.items():
        results[case] = ratios(model.eval().to(device), inputs.to(device), args.repeats)
    names = list(next(iter(results.values())))
    print(f"device {device}, median of {args.repeats} interleaved rounds; time / reference\n")
    print("| run | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
