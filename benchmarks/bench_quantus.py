"""Speed ratios of our batched torch scores against Quantus 0.6 on the same inputs, one row per metric.

Quantus runs numpy, image by image (its users report it slow: Quantus #96, #350). Ours run batched in torch on
the model's device. Model: torchvision ResNet-18 with random weights (seed 0), eval mode. Inputs: ``--images``
seeded noise images at ``--size`` px, targets the model's own predictions, maps from our ``Gradient`` method
(``[B, 1, H, W]`` in [0, 1]), one ground-truth box per image. Each side runs ``--repeats`` times after one
warm-up; the table reports the median and the ratio Quantus / ours, and how far the results are apart.

Usage: ``python benchmarks/bench_quantus.py [--images 8] [--size 64] [--repeats 3] [--families a,b] [--device cpu]``.
The cases live in ``benchmarks/quantus_cases/<family>.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from quantus_cases import (
    Case,
    Setup,
    axiomatic,
    complexity,
    faithfulness,
    faithfulness_regions,  # faithfulness (regions)
    localisation,
    randomisation,
    robustness,
)
from quantus_cases import to_numpy as _to_numpy
from torchvision.models import resnet18

from lightning_saliency.methods import Gradient

FAMILIES: dict[str, list[Case]] = {
    "faithfulness": faithfulness.CASES,
    "robustness": robustness.CASES,
    "localisation": localisation.CASES,
    "complexity": complexity.CASES,
    "randomisation": randomisation.CASES,
    "axiomatic": axiomatic.CASES,
    "faithfulness_regions": faithfulness_regions.CASES,  # faithfulness (regions)
}


def make_setup(images: int, size: int, device: str) -> Setup:
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval().to(device)
    inputs = torch.rand(images, 3, size, size, device=device)
    with torch.no_grad():
        targets = model(inputs).argmax(1)
    maps = Gradient()(model, inputs, targets).detach()  # [B,1,H,W]
    masks = torch.zeros(images, 1, size, size, dtype=torch.bool, device=device)
    masks[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return Setup(model=model, inputs=inputs, targets=targets, maps=maps, masks=masks)


def median_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of the families")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    wanted = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(wanted) - set(FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {unknown}; expected a subset of {sorted(FAMILIES)}")

    setup = make_setup(args.images, args.size, args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), resnet18(weights=None), "
        f"{args.images} x {args.size}px on {args.device}, median of {args.repeats}"
    )
    print()
    print("| family | metric | ours | Quantus | Quantus / ours | agreement |")
    print("|---|---|---|---|---|---|")
    for family in wanted:
        for case in FAMILIES[family]:
            t_ours = median_time(lambda c=case: c.ours(setup), args.repeats, args.device)
            t_q = median_time(lambda c=case: c.quantus(setup), args.repeats, args.device)
            agreement = case.agreement(_to_numpy(case.ours(setup)), _to_numpy(case.quantus(setup)))
            print(f"| {family} | {case.name} | {t_ours:.3f} s | {t_q:.3f} s | {t_q / t_ours:.1f}x | {agreement} |")


if __name__ == "__main__":
    main()
