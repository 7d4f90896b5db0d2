"""Long runs (issue 8): 50 logged validation epochs with every registered method leave nothing growing behind."""

from __future__ import annotations

import gc
import os
import warnings

import pytest
import torch
from _lightning_models import TinyClassifier, loaders, trainer
from lightning.pytorch import Callback
from test_hardening import CNN_NAMES, assert_no_hooks, build

from lightning_saliency import Alarm, SaliencyMonitor

EPOCHS = 50
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident set size now (not the peak), from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def _tensors() -> list[torch.Tensor]:
    with warnings.catch_warnings():  # isinstance() on some deprecated torch.distributed aliases warns
        warnings.simplefilter("ignore", FutureWarning)
        return [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]


def graph_tensors() -> int:
    """Live tensors that are part of an autograd graph (a retained graph would keep some alive)."""
    return sum(1 for t in _tensors() if t.grad_fn is not None)


def live_tensors() -> int:
    return len(_tensors())


class Recorder(Callback):
    """After the monitor's work each epoch: RSS, and at epochs 10 and the last the live tensors."""

    def __init__(self) -> None:
        self.rss: dict[int, float] = {}
        self.tensors: dict[int, tuple[int, int]] = {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if epoch in (10, EPOCHS - 1):
            gc.collect()
            self.tensors[epoch] = (live_tensors(), graph_tensors())
        self.rss[epoch] = rss_mb()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:SaliencyMonitor alarm")
def test_fifty_epochs_with_every_method_keep_memory_flat_and_leave_nothing_behind(tmp_path):
    train, val = loaders(n=16, size=(16, 16), batch_size=8)
    methods = [build(name) for name in CNN_NAMES]
    monitor = SaliencyMonitor(
        methods=methods,
        num_samples=2,
        scores=("average_drop",),
        score_batch_size=4,
        alarms=[Alarm("average_drop", above=-1.0)],  # fires for every method and image at every epoch
        history_size=3,
        min_display_size=16,
        localisation=False,
        strict=True,
    )
    recorder = Recorder()
    model = TinyClassifier()
    tr = trainer(tmp_path, [monitor, recorder], max_epochs=EPOCHS, limit_train_batches=1, limit_val_batches=1)
    tr.fit(model, train, val)

    assert tr.current_epoch == EPOCHS
    assert sorted(recorder.rss) == list(range(EPOCHS)), "the monitor ran every epoch"
    growth = recorder.rss[EPOCHS - 1] - recorder.rss[10]
    assert growth < 50, f"RSS grew {growth:.1f} MB between epoch 10 and {EPOCHS - 1}"
    (live_10, graph_10), (live_end, graph_end) = recorder.tensors[10], recorder.tensors[EPOCHS - 1]
    assert live_end - live_10 < 100, f"live tensors grew from {live_10} to {live_end}"
    assert graph_end <= graph_10

    assert_no_hooks(model)
    gc.collect()
    assert graph_tensors() == 0, "an autograd graph outlived the run"
    assert set(monitor.history) == set(CNN_NAMES)
    assert all(len(entries) == 3 for entries in monitor.history.values())
    assert [epoch for epoch, _ in monitor.history["gradcam"]] == [EPOCHS - 3, EPOCHS - 2, EPOCHS - 1]
    assert len(monitor.alarm_log) == 100
    assert monitor.alarm_log[-1].startswith(f"epoch {EPOCHS - 1}: average_drop")
    assert len(monitor._errors) == 0
