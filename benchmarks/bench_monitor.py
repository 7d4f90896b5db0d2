"""What one logged epoch of SaliencyMonitor costs, as a ratio to a training epoch measured in the same run; and
its overhead over whole ``fit`` runs under a time budget (``--budgets``).

    python benchmarks/bench_monitor.py [--size 112] [--train-images 1024]
    python benchmarks/bench_monitor.py --budgets 0.2,0.1,0.05 [--epochs 6]

Model: torchvision ResNet-18 (random weights, 10 classes) at ``--size`` px on the CPU. Baseline: one training
epoch over ``--train-images`` images (batch 64, SGD). Monitor: the defaults (8-image probe; gradient, Grad-CAM,
Grad-CAM++ sharing one pass; the default scores with 16 steps), then with `scores=()` (maps only). Prints a
markdown table: the monitor's time as a fraction of the training epoch, and its own breakdown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18

from lightning_saliency import Precision, Probe, SaliencyMonitor
from lightning_saliency._runtime import Run
from lightning_saliency.monitoring.budget import Plan
from lightning_saliency.monitoring.result import Failures
from lightning_saliency.monitoring.targeting import explain


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(images), 64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(images[i : i + 64]), labels[i : i + 64]).backward()
        opt.step()
    return time.perf_counter() - start


class TimedMonitor(SaliencyMonitor):
    """The monitor, timing its own work: ``seconds`` over the run, and each call's ``(start, seconds)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.calls: list[tuple[float, float]] = []
        self.plans: list[Plan] = []

    def _run(self, trainer, pl_module, stage):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            super()._run(trainer, pl_module, stage)
        finally:
            if pl_module.device.type == "cuda":  # its queued kernels are part of its time
                torch.cuda.synchronize(pl_module.device)
            self.calls.append((start, time.perf_counter() - start))
            self.seconds += self.calls[-1][1]
            if self.last_plan is not None:
                self.plans.append(self.last_plan)


class ResNetModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = resnet18(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _setups(args: argparse.Namespace) -> list[tuple[str, Callable[[], tuple], Callable[..., SaliencyMonitor]]]:
    """(name, () -> (module, train loader, val loader), **budget -> monitor) of the demo and ResNet-18."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from shapes import MEAN, STD, ShapesDataset
    from train_shapes import SmallCNN

    def demo() -> tuple:
        train = DataLoader(ShapesDataset(1536, seed=0, marker=1.0), batch_size=64, shuffle=True)
        return SmallCNN(), train, DataLoader(ShapesDataset(256, seed=1, marker=0.0), batch_size=128)

    def demo_monitor(**kwargs: object) -> SaliencyMonitor:
        methods = ["gradient", "smoothgrad", "gradcam", "gradcam++"]
        return TimedMonitor(methods, num_samples=6, targets="predicted", mean=MEAN, std=STD, **kwargs)

    def resnet() -> tuple:
        g = torch.Generator().manual_seed(0)
        n, size = args.resnet_images, args.size
        train = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
        val = TensorDataset(torch.randn(64, 3, size, size, generator=g), torch.randint(0, 10, (64,), generator=g))
        return ResNetModule(), DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=64)

    demo_name = "demo (train_shapes.py: 1,536 images of 64 px; 4 methods, 6 probe images)"
    resnet_name = f"ResNet-18 ({args.resnet_images} images of {args.size} px; defaults)"
    return [(demo_name, demo, demo_monitor), (resnet_name, resnet, lambda **kw: TimedMonitor(**kw))]


def _fit(setup: Callable[[], tuple], monitor: SaliencyMonitor | None, epochs: int) -> tuple[float, float]:
    """``fit``'s wall time and when it started."""
    L.seed_everything(0, verbose=False)
    module, train, val = setup()
    with tempfile.TemporaryDirectory() as logdir:
        trainer = L.Trainer(
            max_epochs=epochs,
            callbacks=[monitor] if monitor is not None else [],
            logger=TensorBoardLogger(logdir),
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(module, train, val)
        return time.perf_counter() - start, start


def budgets(args: argparse.Namespace) -> None:
    """The overhead of whole ``fit`` runs against each budget (see the module docstring)."""
    fractions = [float(b) for b in args.budgets.split(",")]
    for name, setup, make in _setups(args):
        base, _ = _fit(setup, None, args.epochs)
        print(f"\n{name}, {args.epochs} epochs; fit without the monitor: {base:.1f} s\n")
        print(
            "| budget | monitor / rest of fit | bound: budget + 1st logged epoch / rest of fit | epochs logged "
            "| fit / fit without monitor | last epoch: steps, curve rows, cut |"
        )
        print("|---|---|---|---|---|---|")
        for fraction in [None, *fractions]:
            monitor = make(budget=fraction)
            wall, _ = _fit(setup, monitor, args.epochs)
            spent = monitor.seconds  # type: ignore[attr-defined]
            rest = wall - spent
            first = monitor.calls[0][1]  # type: ignore[attr-defined]
            # the first logged epoch runs before anything is measured; after it, the budget's planning holds
            bound = "-" if fraction is None else f"{fraction + first / rest:.3f}"
            logged = sum(not p.reduced or not p.reduced[0].startswith("epoch not logged") for p in monitor.plans)  # type: ignore[attr-defined]
            plan = monitor.last_plan
            assert plan is not None
            last = f"{plan.steps}, {plan.curve_rows or 'all'}, {'; '.join(plan.reduced) or '-'}"
            label = "none" if fraction is None else f"{fraction:.2f}"
            print(
                f"| {label} | {spent / rest:.3f} | {bound} | {logged} of {args.epochs} | {wall / base:.3f} | {last} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--budgets", default="", help="comma-separated fractions: the budget study instead")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--resnet-images", type=int, default=512)
    args = parser.parse_args()
    if args.budgets:
        budgets(args)
        return
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
        run = Run(Precision(), None)
        explained = explain(model, probe, monitor.targets, run, None)

        args_ = (model, explained.probe, explained.target, run, Failures(isolate=False), scores)
        monitor._run_work(*args_)  # warm-up (auto layer)
        start = time.perf_counter()
        result = monitor._run_work(*args_)
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
