"""What saliency costs on a 3-D model: the fused gradient family against one plain forward and backward.

Model: torchvision's ``r3d_18`` (``weights=None``; the cost does not depend on the weights), a clip batch
``[B, 3, T, H, W]``. The reference is what any gradient method must do at least: one forward and one
``torch.autograd.grad`` of the target logits with respect to the input. Against it: ``Gradient``, ``GradCAM`` and
``GradCAMPlusPlus`` in one :func:`~lightning_saliency.methods.compute_saliency` call (one shared pass, CAMs
upsampled trilinearly to the clip), and each alone. Medians of ``--repeats`` runs after one warm-up; only ratios
are printed (a markdown table).

Usage: ``python benchmarks/bench_volumes.py [--batch 2] [--frames 8] [--size 112] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models.video import r3d_18

from lightning_saliency.methods import GradCAM, GradCAMPlusPlus, Gradient, compute_saliency


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: oneDNN kernels, layer resolution
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = r3d_18(weights=None).eval()
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    targets = torch.arange(args.batch) % 400

    def reference() -> torch.Tensor:
        x = clips.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
        return grad

    methods = [Gradient(), GradCAM(), GradCAMPlusPlus()]  # made once, as the monitor does (layers resolved once)
    runs = {
        "forward + autograd.grad to the input (reference)": reference,
        "Gradient + GradCAM + GradCAM++, one call": lambda: compute_saliency(model, clips, targets, methods),
        "Gradient alone": lambda: compute_saliency(model, clips, targets, methods[:1]),
        "GradCAM alone": lambda: compute_saliency(model, clips, targets, methods[1:2]),
    }
    times = {name: median_time(fn, args.repeats) for name, fn in runs.items()}
    maps = compute_saliency(model, clips, targets, methods[1:2])[0]
    base = times["forward + autograd.grad to the input (reference)"]
    print(f"r3d_18, clips {tuple(clips.shape)}, maps {tuple(maps.shape)}, median of {args.repeats}\n")
    print("| run | time / reference |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
