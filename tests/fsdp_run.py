"""Run SaliencyMonitor under FSDP2 (``ModelParallelStrategy`` + ``fully_shard``) on CPU (gloo); used by test_fsdp.py.

    python tests/fsdp_run.py OUT_DIR MODE [WEIGHTS]

``MODE``:

* ``monitor``: two processes, two epochs of ``fit`` with the monitor: Score-CAM and Ablation-CAM (their forward
  counts depend on the maps), the gradient, Grad-CAM, and ``flaky`` (a gradient that raises on rank 1 only, after
  the gradient pass); scores with the attack (early stopping per image), and ``insertion`` raising on rank 1
  only after its forwards. BatchNorm's running statistics are not synchronised by FSDP, so the ranks' models differ
  in eval mode: their maps, and the forward counts they would choose, differ.
* ``plain``: the same fit without the monitor (the weights must be bit-identical).
* ``validate``: two processes, ``validate`` with the monitor on the untrained model (not used by the tests: a
  manual check that the monitor runs outside ``fit`` under FSDP2).
* ``single``: one process, no strategy: ``validate`` with the monitor on the weights in ``WEIGHTS`` (the monitor
  run's full state dict after its fit, i.e. at its last validation), to compare with rank 0's maps and scores.

Rank 0 saves the monitor's last maps, scores, errors and notes, and the model's full state dict (gathered from the
shards) to OUT_DIR/result.pt; the TensorBoard events go to OUT_DIR/tb.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    if os.environ.get("FSDP_RUN_DUMP"):  # debugging a hang: every rank's stack after that many seconds
        faulthandler.dump_traceback_later(int(os.environ["FSDP_RUN_DUMP"]), exit=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lightning as L
    import torch
    from _lightning_models import TinyClassifier, make_data
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from torch.utils.data import DataLoader

    import lightning_saliency.monitoring.scoring as scoring_module
    from lightning_saliency import SaliencyMonitor
    from lightning_saliency.methods import Gradient

    def rank1() -> bool:
        return torch.distributed.is_initialized() and torch.distributed.get_rank() == 1

    class Flaky(Gradient):
        """The gradient, except that it raises on rank 1, after the shared gradient pass (its forwards) ran."""

        def from_pass(self, p, layer):
            if rank1():
                raise RuntimeError("flaky exploded on rank 1")
            return super().from_pass(p, layer)

    class Sharded(TinyClassifier):
        def configure_model(self) -> None:
            mesh = self.device_mesh["data_parallel"]
            for part in (self.features, self.head):
                fully_shard(part, mesh=mesh)

    out, mode = Path(sys.argv[1]), sys.argv[2]
    real = scoring_module.compute_scores

    def compute_scores(ctx, names, **kwargs):
        scores = real(ctx, names, **kwargs)  # the forwards ran on every rank
        if rank1() and "insertion" in names:
            raise RuntimeError("insertion exploded on rank 1")
        return scores

    scoring_module.compute_scores = compute_scores
    import lightning_saliency.distributed as distributed

    broadcast, overruled = distributed._broadcast, [0, 0]  # agreed decisions: all, and those rank 0 changed here

    def counted_broadcast(tensor):
        mine = tensor.clone()
        out = broadcast(tensor)
        overruled[0] += 1
        overruled[1] += int(not torch.equal(mine, out))
        return out

    distributed._broadcast = counted_broadcast
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    model = (TinyClassifier if mode == "single" else Sharded)()
    if mode == "single":
        model.load_state_dict(torch.load(sys.argv[3], weights_only=True))
    notes: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addHandler(handler)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.INFO)
    flaky = [Flaky(name="flaky")] if mode != "single" else []
    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam", "scorecam", "ablationcam", *flaky],
        num_samples=6,
        scores=["deletion", "insertion", "average_drop", "saliency_attack", "model_randomisation"],
        score_steps=4,
        expensive_every_n_epochs=2,
        mean=[0.0],
        std=[1.0],
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1 if mode == "single" else 2,
        strategy="auto" if mode == "single" else ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        callbacks=[] if mode == "plain" else [monitor],
        logger=TensorBoardLogger(str(out), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        max_epochs=2,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    val = DataLoader(make_data(24, seed=1), batch_size=8)
    if mode in ("single", "validate"):
        trainer.validate(model, val, verbose=False)
    else:
        trainer.fit(model, DataLoader(make_data(32, seed=2), batch_size=8), val)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = model.state_dict() if mode == "single" else get_model_state_dict(model, options=options)  # collective
    if mode != "single":
        torch.save(overruled, out / f"agreed_rank{trainer.global_rank}.pt")
    if trainer.is_global_zero:
        torch.save(
            {
                "maps": monitor.last_maps,
                "scores": monitor.last_scores,
                "world": trainer.world_size,
                "errors": sorted(monitor._errors),
                "notes": notes,
                "state": {k: v.detach().cpu().clone() for k, v in state.items()},
                "strategy": type(trainer.strategy).__name__,
            },
            out / "result.pt",
        )
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / "weights.pt")
