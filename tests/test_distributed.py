"""The rule of ``lightning_saliency.distributed``: every rank runs the same collectives in the same order.

Two ranks are simulated by two threads, each with its own model replica and monitor, whose collectives meet at a
barrier (as real ones do): each thread records the sequence of collectives it called (which one, what shape).
Whatever fails on which rank, both threads finish (a mismatch would break the barrier instead of hanging) and the
sequences are equal. The real two-process runs are in ``test_ddp.py``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from _lightning_models import TinyClassifier, make_data
from lightning.pytorch.plugins.precision import Precision as PrecisionPlugin
from torch import Tensor
from torch.utils.data import DataLoader

import lightning_saliency.distributed as distributed
from lightning_saliency import SaliencyMonitor
from lightning_saliency.distributed import shard
from lightning_saliency.methods import Gradient

WORLD = 2


class FakeCollectives:
    """``all_gather_objects`` and ``gather_rows`` across threads, recording each rank's calls."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(WORLD, timeout=60)
        self.slots: list[Any] = [None] * WORLD
        self.calls: dict[int, list[tuple[str, tuple[int, ...]]]] = {r: [] for r in range(WORLD)}

    def _exchange(self, rank: int, value: Any) -> list[Any]:
        self.barrier.wait()  # everyone arrived: the previous exchange was read by all
        self.slots[rank] = value
        self.barrier.wait()  # everyone deposited
        return list(self.slots)

    def all_gather_objects(self, trainer: Any, obj: Any) -> list[Any]:
        self.calls[trainer.global_rank].append(("all_gather_objects", ()))
        return copy.deepcopy(self._exchange(trainer.global_rank, obj))

    def broadcast(self, tensor: Tensor) -> Tensor:  # distributed._broadcast (sharded models)
        rank = int(threading.current_thread().name)
        self.calls[rank].append(("broadcast", tuple(tensor.shape)))
        return self._exchange(rank, tensor.clone())[0].clone()

    def all_reduce_max(self, tensor: Tensor) -> Tensor:  # distributed._all_reduce_max (sharded models)
        rank = int(threading.current_thread().name)
        self.calls[rank].append(("all_reduce_max", tuple(tensor.shape)))
        return torch.stack(self._exchange(rank, tensor.clone())).amax(0)

    def all_gather_object(self, obj: Any) -> list[Any]:  # distributed._all_gather_object (sharded models)
        rank = int(threading.current_thread().name)
        self.calls[rank].append(("all_gather_object", ()))
        return copy.deepcopy(self._exchange(rank, obj))

    def gather_rows(self, trainer: Any, local: Tensor, size: int) -> Tensor:
        self.calls[trainer.global_rank].append(("gather_rows", tuple(local.shape)))
        shares = self._exchange(trainer.global_rank, local.detach().cpu().clone())
        return torch.cat(shares)[:size]


class ModelParallelStrategy(SimpleNamespace):
    """Named as Lightning's: a sharded strategy (``distributed.is_sharded`` goes by the class name)."""


def fake_trainer(rank: int, val: DataLoader, root: str, sharded: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        default_root_dir=root,  # rank 0 writes its files here (no logger)
        world_size=WORLD,
        global_rank=rank,
        is_global_zero=rank == 0,
        strategy=(ModelParallelStrategy if sharded else SimpleNamespace)(root_device=torch.device("cpu")),
        precision_plugin=PrecisionPlugin(),
        val_dataloaders=val,
        test_dataloaders=None,
        datamodule=None,
        progress_bar_callback=None,
        loggers=[],
        state=SimpleNamespace(fn="validate"),
        current_epoch=0,
        global_step=0,
        sanity_checking=False,
    )


class Flaky(Gradient):
    """The gradient, raising on the ranks in ``ranks`` (set through the thread's name)."""

    def __init__(self, ranks: tuple[int, ...]) -> None:
        super().__init__(name="flaky")
        self.ranks = ranks

    def from_pass(self, p: Any, layers: Any) -> Tensor:
        if int(threading.current_thread().name) in self.ranks:
            raise RuntimeError("flaky exploded")
        return super().from_pass(p, layers)


def run_ranks(
    monkeypatch,
    make_monitor: Callable[[], SaliencyMonitor],
    model_for: Callable[[int], Any],
    root: str,
    sharded: bool = False,
):
    """Run one logged epoch of ``make_monitor()`` on two simulated ranks; the collectives and what each raised."""
    fakes = FakeCollectives()
    monkeypatch.setattr(distributed, "all_gather_objects", fakes.all_gather_objects)
    monkeypatch.setattr(distributed, "gather_rows", fakes.gather_rows)
    monkeypatch.setattr(distributed, "_broadcast", fakes.broadcast)
    monkeypatch.setattr(distributed, "_all_reduce_max", fakes.all_reduce_max)
    monkeypatch.setattr(distributed, "_all_gather_object", fakes.all_gather_object)
    val = DataLoader(make_data(12, seed=1), batch_size=6)
    monitors = [make_monitor() for _ in range(WORLD)]
    raised: dict[int, BaseException | None] = {}

    def rank_main(rank: int) -> None:
        try:
            monitors[rank]._run(fake_trainer(rank, val, root, sharded), model_for(rank), "validate")
            raised[rank] = None
        except BaseException as exc:  # recorded: the test decides what is expected
            raised[rank] = exc

    threads = [threading.Thread(target=rank_main, args=(r,), name=str(r)) for r in range(WORLD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a rank is still waiting: the collectives did not match"
    return fakes.calls, raised, monitors


class FailingForward(TinyClassifier):
    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("forward exploded on this rank")


@pytest.mark.filterwarnings("ignore::lightning_saliency.SaliencyWarning")
@pytest.mark.parametrize(
    ("case", "failing"),
    [
        ("nothing fails", ()),
        ("a method fails on rank 1", (1,)),
        ("a method fails on rank 0", (0,)),
        ("a method fails everywhere", (0, 1)),
    ],
)
def test_every_rank_runs_the_same_collectives_whatever_fails_where(monkeypatch, tmp_path, case, failing):
    torch.manual_seed(0)
    base = TinyClassifier()

    def make() -> SaliencyMonitor:
        return SaliencyMonitor(
            methods=["gradient", "gradcam", Flaky(failing)], num_samples=5, scores=("deletion",), score_steps=2
        )

    calls, raised, monitors = run_ranks(monkeypatch, make, lambda rank: copy.deepcopy(base), str(tmp_path))
    assert raised == {0: None, 1: None}, case
    assert calls[0] == calls[1], case
    assert calls[0][0] == ("all_gather_objects", ())  # the agreement comes first, once
    assert sum(name == "all_gather_objects" for name, _ in calls[0]) == 1
    expected = {"gradient", "gradcam"} | (set() if failing else {"flaky"})
    assert set(monitors[0].last_maps) == expected, case  # what failed anywhere is dropped everywhere
    assert all(m.shape[0] == 5 for m in monitors[0].last_maps.values())  # the whole probe, gathered
    assert not monitors[1].last_maps, "rank 1 renders nothing"


@pytest.mark.filterwarnings("ignore::lightning_saliency.SaliencyWarning")  # warnings from threads: see _errors
def test_a_rank_failing_as_a_whole_makes_every_rank_skip_after_one_collective(monkeypatch, tmp_path):
    torch.manual_seed(0)
    base = TinyClassifier()
    broken = FailingForward()
    make = lambda: SaliencyMonitor(methods=["gradient"], num_samples=5, scores=())  # noqa: E731
    calls, raised, monitors = run_ranks(monkeypatch, make, lambda rank: broken if rank == 1 else base, str(tmp_path))
    assert raised == {0: None, 1: None}
    assert calls[0] == calls[1] == [("all_gather_objects", ())]  # the agreement, then no gathering
    assert not monitors[0].last_maps
    assert monitors[0]._errors == {
        "RuntimeError: SaliencyMonitor failed on rank(s) [1]: RuntimeError: forward exploded on this rank"
    }  # rank 0 reports what failed on rank 1

    strict = lambda: SaliencyMonitor(methods=["gradient"], num_samples=5, scores=(), strict=True)  # noqa: E731
    calls, raised, _ = run_ranks(monkeypatch, strict, lambda rank: broken if rank == 1 else base, str(tmp_path))
    assert calls[0] == calls[1] == [("all_gather_objects", ())]
    assert isinstance(raised[1], RuntimeError)
    assert "forward exploded" in str(raised[1])
    assert isinstance(raised[0], RuntimeError)  # every rank raises, none waits
    assert "failed on rank(s) [1]" in str(raised[0])


@pytest.mark.filterwarnings("ignore::lightning_saliency.SaliencyWarning")
def test_sharded_models_every_rank_runs_the_same_forwards_on_the_whole_probe(monkeypatch, tmp_path):
    # Under FSDP every forward is a collective. The ranks' models differ here (as FSDP leaves BatchNorm statistics
    # unsynchronised), so Score-CAM's channels and the attack's early stops differ too: rank 0's decide.
    torch.manual_seed(0)
    models = [TinyClassifier().eval(), None]
    models[1] = copy.deepcopy(models[0])
    with torch.no_grad():
        models[1].features[1].running_mean.add_(torch.randn(8))  # type: ignore[union-attr]
    forwards = {0: 0, 1: 0}
    for rank, model in enumerate(models):
        model.register_forward_pre_hook(lambda *_, rank=rank: forwards.__setitem__(rank, forwards[rank] + 1))

    def make() -> SaliencyMonitor:
        return SaliencyMonitor(
            methods=["gradient", "scorecam", "ablationcam", Flaky((1,))],
            num_samples=5,
            scores=("deletion", "saliency_attack", "model_randomisation"),
            score_steps=2,
            mean=[0.0],
            std=[1.0],
        )

    calls, raised, monitors = run_ranks(monkeypatch, make, lambda rank: models[rank], str(tmp_path), sharded=True)
    assert raised == {0: None, 1: None}
    assert calls[0] == calls[1]
    assert forwards[0] == forwards[1] > 0  # the same forwards, whatever each rank's data said
    assert ("gather_rows", ()) not in {(name, ()) for name, _ in calls[0]}  # nothing gathered: rank 0 has it all
    assert sum(name == "broadcast" for name, _ in calls[0]) > 0
    assert set(monitors[0].last_maps) == {"gradient", "scorecam", "ablationcam"}  # flaky failed on rank 1
    assert all(m.shape[0] == 5 for m in monitors[0].last_maps.values())
    alone = SaliencyMonitor(methods=["gradient", "scorecam", "ablationcam"], num_samples=5)
    for label, maps in alone.compute(models[0], monitors[0]._probes["validate"]).items():
        torch.testing.assert_close(monitors[0].last_maps[label], maps)  # rank 0's own model's maps
    scores = monitors[0].last_scores["scorecam"]
    assert set(scores) == {"deletion", "saliency_attack"}  # model_randomisation copies the model: skipped


def test_shards_cover_the_probe_in_order_with_equal_sizes():
    for size in (1, 2, 5, 8):
        for world in (1, 2, 3):
            shares = [shard(size, world, r) for r in range(world)]
            assert len({len(s) for s in shares}) == 1  # equal shapes for the gathers
            assert [i for s in shares for i in s][:size] == list(range(size))  # flattening restores the order
