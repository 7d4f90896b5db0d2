"""Run SaliencyMonitor under ``Trainer(strategy="ddp")`` on CPU (gloo) or on one process; used by test_ddp.py.

    python tests/ddp_run.py OUT_DIR WORLD_SIZE NUM_SAMPLES [fail | budget | budget-fail]

With ``fail``, a fourth method (``flaky``) raises on rank 1 only, and so does the ``insertion`` score. With
``budget``, two epochs of ``fit`` under a time budget whose plan is fixed (curves at 4 steps on the probe's first 3
rows), so that one and two processes plan the same. With ``budget-fail``, the same in ``strict`` mode with
``flaky``: rank 1 raises before the plan's collective, and the run must fail, not hang.

Lightning's DDP launcher re-executes this script for the other ranks. Rank 0 saves what the monitor logged
(maps and score means) to OUT_DIR/result.pt; the TensorBoard events go to OUT_DIR/tb.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lightning as L
    import torch
    from _lightning_models import TinyClassifier, make_data
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    import lightning_saliency.monitoring.scoring as scoring_module
    from lightning_saliency import SaliencyMonitor
    from lightning_saliency.methods import Gradient

    class Flaky(Gradient):
        """The gradient, except that it raises on rank 1 (where its share is padding when num_samples is 1)."""

        def from_pass(self, p, layer):
            if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
                raise RuntimeError("flaky exploded on rank 1")
            return super().from_pass(p, layer)

    out, world, num_samples = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else ""
    fail = mode in ("fail", "budget-fail")
    if mode.startswith("budget"):
        from lightning_saliency.monitoring.budget import Budget, Plan

        def fixed_plan(self, wanted, steps, *, rows, outside, elapsed, estimate=None):
            return Plan(tuple(wanted), 4, 3, ("curves on 3 rows",), 0.0, 1.0)

        Budget.plan = fixed_plan
        Budget.skip = lambda self, outside: None  # every epoch logged
    if mode == "fail":
        real = scoring_module.compute_scores

        def compute_scores(ctx, names, **kwargs):
            rank1 = torch.distributed.is_initialized() and torch.distributed.get_rank() == 1
            if rank1 and "insertion" in names:
                raise RuntimeError("insertion exploded on rank 1")
            return real(ctx, names, **kwargs)

        scoring_module.compute_scores = compute_scores
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    model = TinyClassifier()
    if mode.startswith("budget"):  # fit without learning: one and two processes must see the same model
        model.configure_optimizers = lambda: torch.optim.SGD(model.parameters(), lr=0.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.0  # running statistics unchanged by the ranks' different batches
    val = DataLoader(make_data(24, seed=1), batch_size=8)
    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam", "smoothgrad", *([Flaky(name="flaky")] if fail else [])],
        num_samples=num_samples,
        scores=["deletion", "insertion", "average_drop", "model_randomisation"],
        score_steps=4,
        budget=0.05 if mode.startswith("budget") else None,
        strict=mode == "budget-fail",
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        callbacks=[monitor],
        logger=TensorBoardLogger(str(out), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=2,
        num_sanity_val_steps=0,
    )
    if mode.startswith("budget"):
        trainer.fit(model, DataLoader(make_data(32, seed=2), batch_size=8), val)
    else:
        trainer.validate(model, val, verbose=False)
    if trainer.is_global_zero:
        torch.save(
            {
                "maps": monitor.last_maps,
                "scores": monitor.last_scores,
                "world": trainer.world_size,
                "errors": sorted(monitor._errors),
                "plan": monitor.last_plan,
            },
            out / "result.pt",
        )
