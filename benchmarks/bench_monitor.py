"""What one logged epoch of SaliencyMonitor costs, as a ratio to a training epoch measured in the same run.

    python benchmarks/bench_monitor.py [--size 112] [--train-images 1024]

Model: torchvision ResNet-18 (random weights, 10 classes) at ``--size`` px on the CPU. Baseline: one training
epoch over ``--train-images`` images (batch 64, SGD). Monitor: the defaults (8-image probe; gradient, Grad-CAM,
Grad-CAM++ sharing one pass; the default scores with 16 steps), then with `scores=()` (maps only). Prints a
markdown table: the monitor's time as a fraction of the training epoch, and its own breakdown.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torchvision.models import resnet18

from lightning_saliency import Precision, Probe, SaliencyMonitor
from lightning_saliency.monitoring.result import Failures


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(images), 64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(images[i : i + 64]), labels[i : i + 64]).backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--train-images", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    images = torch.randn(args.train_images, 3, args.size, args.size)
    labels = torch.randint(0, 10, (args.train_images,))
    probe = Probe(images[:8].clone(), labels[:8].clone())
    baseline = train_epoch(model, images, labels)

    rows = []
    for title, kwargs in [("defaults (maps + scores)", {}), ("maps only (scores=())", {"scores": ()})]:
        monitor = SaliencyMonitor(**kwargs)
        scores = monitor.scores  # the cheap ones (the costly ones are opt-in)
        monitor._run_work(model, probe, Precision(), Failures(isolate=False), scores)  # warm-up (auto layer)
        start = time.perf_counter()
        result = monitor._run_work(model, probe, Precision(), Failures(isolate=False), scores)
        seconds = time.perf_counter() - start
        rows.append((title, seconds, result.times))

    print(f"Training epoch ({args.train_images} images, {args.size} px): {baseline:.1f} s = 1.00\n")
    print("| monitor, one logged epoch | time / training epoch |")
    print("|---|---|")
    for title, seconds, _ in rows:
        print(f"| {title} | {seconds / baseline:.3f} |")
    print("\n| part (defaults) | time / training epoch |")
    print("|---|---|")
    for name, seconds in sorted(rows[0][2].items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds / baseline:.3f} |")


if __name__ == "__main__":
    main()
