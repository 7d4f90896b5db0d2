"""The checks that need a GPU, in one script (under 5 minutes on one GPU); ``--smoke`` runs them small on the CPU.

    python benchmarks/gpu_check.py                 # on CUDA: 16-mixed and bf16-mixed
    python benchmarks/gpu_check.py --smoke         # on the CPU, tiny sizes, bf16-mixed and 32-true (a minute)

Checks (each prints one markdown row; the script exits non-zero if a check fails):

1. Training is untouched: a small CNN with BatchNorm and Dropout, fitted twice with the same seed, without and
   with the monitor (gradient, Grad-CAM, Grad-CAM++, SmoothGrad, default scores), under each precision, gives
   bit-identical weights, BatchNorm statistics and optimizer state. A second run without the monitor tells the
   platform's own nondeterminism apart (``Trainer(deterministic=True)``).
2. No NaN in any map under each precision.
3. GPU memory is back to its level after each logged epoch (``torch.cuda.memory_allocated`` before and after the
   monitor's hook; the first logged epoch may keep up to 16 MiB of library workspaces, no later one may keep a
   byte), and the monitor's peak (``torch.cuda.max_memory_allocated``) against training's.
4. Ratios, each against a baseline in the same run: the gradient family's shared pass against one
   forward+backward (``bench_gradient_pass.ratios``), exact Score-CAM against pytorch-grad-cam's, CAMERAS batched
   against the same images one at a time, and the monitor's time against the rest of ``fit`` under each precision.

Record the output in ``benchmarks/README.md`` (section "On a GPU"). CI never needs a GPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gradient_pass import ratios as gradient_pass_ratios
from bench_monitor import TimedMonitor

from lightning_saliency import SaliencyMonitor
from lightning_saliency.methods import CAMERAS, ScoreCAM

FAILED: list[str] = []


def row(check: str, result: str, ok: bool | None = None) -> None:
    """One line of the report; ``ok=False`` fails the script."""
    mark = "" if ok is None else (" (ok)" if ok else " (FAILED)")
    print(f"| {check} | {result}{mark} |", flush=True)
    if ok is False:
        FAILED.append(check)


class Net(L.LightningModule):
    """Conv + BatchNorm + Dropout: the RNG stream and BN statistics matter."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class MemoryAround(Callback):
    """Around the monitor's ``on_validation_epoch_end``: allocated bytes before and after, and its peak."""

    def __init__(self, before: bool, log: list[dict[str, int]]) -> None:
        self.before, self.log = before, log

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = pl_module.device
        if device.type != "cuda":
            return
        torch.cuda.synchronize(device)
        if self.before:
            self.log.append(
                {"before": torch.cuda.memory_allocated(device), "train_peak": torch.cuda.max_memory_allocated(device)}
            )
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self.log[-1].update(after=torch.cuda.memory_allocated(device), peak=torch.cuda.max_memory_allocated(device))
            torch.cuda.reset_peak_memory_stats(device)


def fit(args: argparse.Namespace, precision: str, monitor: SaliencyMonitor | None, memory: list) -> tuple[dict, float]:
    """Weights, BN statistics and optimizer state after ``fit``, and its wall time."""
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    n, size = args.images, args.size
    train = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))
    val = TensorDataset(torch.randn(32, 3, size, size, generator=g), torch.randint(0, 10, (32,), generator=g))
    model = Net()
    callbacks: list[Callback] = []
    if monitor is not None:
        callbacks = [MemoryAround(True, memory), monitor, MemoryAround(False, memory)]
    with tempfile.TemporaryDirectory() as logdir:
        trainer = L.Trainer(
            accelerator=args.device,
            devices=1,
            precision=precision,  # type: ignore[arg-type]
            max_epochs=args.epochs,
            callbacks=callbacks,
            logger=TensorBoardLogger(logdir),
            deterministic=True,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        trainer.fit(model, DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=32))
        wall = time.perf_counter() - start
        opt = trainer.optimizers[0].state_dict()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    momenta = [s["momentum_buffer"].cpu().clone() for s in opt["state"].values()]
    return {"state": state, "momenta": momenta, "rng": torch.get_rng_state()}, wall


def same(a: dict, b: dict) -> bool:
    return (
        all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
        and all(torch.equal(x, y) for x, y in zip(a["momenta"], b["momenta"], strict=True))
        and torch.equal(a["rng"], b["rng"])
    )


def training_checks(args: argparse.Namespace) -> None:
    for precision in args.precisions:
        base, t_base = fit(args, precision, None, [])
        again, _ = fit(args, precision, None, [])
        memory: list[dict[str, int]] = []
        monitor = TimedMonitor(["gradient", "gradcam", "gradcam++", "smoothgrad"], num_samples=8)
        watched, wall = fit(args, precision, monitor, memory)
        deterministic = same(base, again)
        row(
            f"training untouched, {precision}",
            "bit-identical weights, BN statistics, momenta, RNG" if same(base, watched) else "differs",
            same(base, watched) if deterministic else None,
        )
        if not deterministic:
            row(f"platform deterministic, {precision}", "two runs without the monitor differ", None)
        finite = all(bool(torch.isfinite(m).all()) for m in monitor.last_maps.values()) and bool(monitor.last_maps)
        row(f"no NaN in any map, {precision}", f"{len(monitor.last_maps)} methods finite" if finite else "NaN", finite)
        if memory:
            leaks = [m["after"] - m["before"] for m in memory]
            peaks = [m["peak"] - m["before"] for m in memory]
            train_peak = max(m["train_peak"] for m in memory)
            row(
                f"GPU memory after each logged epoch, {precision}",
                f"allocated after - before: {max(leaks)} B max over {len(memory)} epochs; monitor peak above its "
                f"start {max(peaks) / 2**20:.1f} MiB, training peak {train_peak / 2**20:.1f} MiB",
                max(leaks[1:], default=0) <= 0 and leaks[0] <= 16 * 2**20,  # the first may create workspaces
            )
        row(
            f"monitor / rest of fit, {precision}",
            f"{monitor.seconds / (wall - monitor.seconds):.3f} (fit without: {t_base:.1f} s)",
        )


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def ratio_checks(args: argparse.Namespace) -> None:
    device = torch.device(args.device if args.device != "gpu" else "cuda")
    torch.manual_seed(0)
    model = resnet18(num_classes=1000).eval().to(device)
    x = torch.randn(args.batch, 3, args.ratio_size, args.ratio_size, device=device)
    r = gradient_pass_ratios(model, x, repeats=args.repeats)
    fused = r["Gradient + GradCAM + GradCAM++, one call"]
    row("gradient family's shared pass / one forward+backward (ResNet-18)", f"{fused:.2f}")

    targets = torch.arange(len(x), device=device) % 1000
    ours = ScoreCAM(target_layer="layer4", batch_size=64, weights="softmax_over_channels")
    t_ours = timed(lambda: ours(model, x, targets), device, 1)
    try:
        from pytorch_grad_cam import ScoreCAM as PGCScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        pgc_model = copy.deepcopy(model)

        def run_pgc() -> object:
            with PGCScoreCAM(model=pgc_model, target_layers=[pgc_model.layer4]) as cam:
                cam.batch_size = 64
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])

        t_pgc = timed(run_pgc, device, 1)
        row("pytorch-grad-cam ScoreCAM / ours exact (ResNet-18 layer4)", f"{t_pgc / t_ours:.2f}")
    except ImportError:
        row("pytorch-grad-cam ScoreCAM / ours exact", "pytorch-grad-cam not installed")

    xc = torch.randn(8, 3, args.cameras_size, args.cameras_size, device=device)
    tc = torch.arange(8, device=device)
    batched, single = CAMERAS(target_layer="layer4", batch_size=8), CAMERAS(target_layer="layer4", batch_size=1)
    t_batched = timed(lambda: batched(model, xc, tc), device, args.repeats)
    t_loop = timed(lambda: [single(model, xc[i : i + 1], tc[i : i + 1]) for i in range(8)], device, args.repeats)
    row("CAMERAS one image at a time / batched (8 images)", f"{t_loop / t_batched:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="on the CPU, tiny sizes: that the script runs")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.device = args.device or ("cpu" if args.smoke or not cuda else "cuda")
    big = not args.smoke
    args.images, args.size, args.epochs = (512, 64, 3) if big else (64, 16, 2)
    args.batch, args.ratio_size, args.cameras_size, args.repeats = (8, 224, 224, 5) if big else (2, 64, 32, 1)
    args.precisions = ["16-mixed", "bf16-mixed"] if args.device == "cuda" else ["32-true", "bf16-mixed"]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"gpu_check on {name} (torch {torch.__version__}){' smoke mode' if args.smoke else ''}\n")
    print("| check | result |\n|---|---|")
    training_checks(args)
    ratio_checks(args)
    if FAILED:
        print(f"\nFAILED: {', '.join(FAILED)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
