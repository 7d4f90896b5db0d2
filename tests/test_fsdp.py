"""Sharded training: FSDP2 (``ModelParallelStrategy`` + ``fully_shard``) on two CPU processes (gloo).

Every rank runs the whole probe (the same forwards in the same order: each forward all-gathers the parameters),
nothing is gathered, rank 0 logs. Three subprocess runs in all (``fsdp_run.py``): the monitored fit, the same fit
without the monitor, and one process validating the monitored fit's final weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _lightning_models import read_events

from lightning_saliency import SaliencyMonitor
from lightning_saliency.distributed import agreed, is_sharded

SCRIPT = Path(__file__).resolve().parent / "fsdp_run.py"
ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, mode: str, *extra: str) -> dict:
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),  # this checkout's package
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), mode, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a hang fails the test
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / "result.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("fsdp")
    sharded = _run(root / "sharded", "monitor")
    plain = _run(root / "plain", "plain")
    single = _run(root / "single", "single", str(root / "sharded" / "weights.pt"))
    return SimpleNamespace(root=root, sharded=sharded, plain=plain, single=single)


@pytest.mark.slow
def test_fsdp2_maps_and_scores_equal_one_process_on_the_same_weights(runs):
    sharded, single = runs.sharded, runs.single
    assert (sharded["world"], sharded["strategy"]) == (2, "ModelParallelStrategy")
    assert single["world"] == 1
    methods = {"gradient", "gradcam", "scorecam", "ablationcam"}
    assert set(sharded["maps"]) == methods  # flaky failed on rank 1: gone everywhere
    assert set(single["maps"]) == methods
    for label in methods:
        assert sharded["maps"][label].shape == (6, 1, 16, 16)
        torch.testing.assert_close(sharded["maps"][label], single["maps"][label], atol=1e-5, rtol=0)
    for label in methods:
        # insertion failed on rank 1 (after its forwards); model_randomisation copies the model: skipped
        assert set(sharded["scores"][label]) == {"deletion", "average_drop", "saliency_attack"}, label
        assert {"insertion", "model_randomisation"} <= set(single["scores"][label])
        for name, value in sharded["scores"][label].items():
            assert value == pytest.approx(single["scores"][label][name], abs=1e-5), (label, name)
    assert any("skips the score(s) ['model_randomisation'] under ModelParallelStrategy" in n for n in sharded["notes"])
    # FSDP does not synchronise BatchNorm statistics: rank 1's model differs, and so did some of its decisions on
    # how many forwards to run (channels, early stops), which it took from rank 0 instead
    agreed0, agreed1 = (torch.load(runs.root / "sharded" / f"agreed_rank{r}.pt") for r in (0, 1))
    assert agreed0[0] == agreed1[0] > 0  # the same agreements on both ranks
    assert agreed0[1] == 0 < agreed1[1]  # rank 0 keeps its own; rank 1 was overruled at least once
    events = read_events(runs.root / "sharded")
    assert len(events["images"]["saliency/overview"]) == 2  # rank 0 alone wrote images, once per epoch
    assert len(list((runs.root / "sharded").rglob("events.out.tfevents.*"))) == 1
    assert events["scalars"]["saliency/scorecam/deletion"][-1].value == pytest.approx(
        single["scores"]["scorecam"]["deletion"], abs=1e-5
    )


@pytest.mark.slow
def test_fsdp2_a_method_and_a_score_failing_on_one_rank_are_dropped_on_all_and_the_rest_is_logged(runs):
    errors = runs.sharded["errors"]  # the run returned: nothing hung
    assert any(e.startswith("method 'flaky': RuntimeError: flaky exploded on rank 1") for e in errors), errors
    assert any("score 'insertion' of method 'gradient'" in e for e in errors), errors
    events = read_events(runs.root / "sharded")
    assert "saliency/flaky" not in events["images"]
    assert len(events["images"]["saliency/scorecam"]) == 2
    assert "saliency/gradcam/insertion" not in events["scalars"]
    assert len(events["scalars"]["saliency/gradcam/deletion"]) == 2


@pytest.mark.slow
def test_fsdp2_training_is_bit_identical_with_and_without_the_monitor(runs):
    with_monitor, without = runs.sharded["state"], runs.plain["state"]
    assert with_monitor.keys() == without.keys()
    assert any("running_mean" in k for k in with_monitor)  # BatchNorm statistics are compared too
    for key, value in without.items():
        assert torch.equal(with_monitor[key], value), key


def test_deepspeed_is_refused_at_setup_with_the_reason():
    from lightning.pytorch.strategies import DeepSpeedStrategy

    strategy = DeepSpeedStrategy.__new__(DeepSpeedStrategy)  # the deepspeed package need not be installed
    with pytest.raises(ValueError, match=r"does not support strategy=DeepSpeedStrategy.*ZeRO.*Use FSDP"):
        SaliencyMonitor().setup(SimpleNamespace(strategy=strategy, loggers=[]), None, "fit")


def test_sharded_strategies_run_replicated_and_agreed_is_free_outside_them():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    assert is_sharded(FSDPStrategy())
    assert is_sharded(ModelParallelStrategy())
    assert not is_sharded(DDPStrategy())
    mask = torch.tensor([True, False, True])
    assert agreed(mask) is mask  # no broadcast outside a sharded monitor run
