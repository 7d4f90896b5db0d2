"""Two-process DDP on CPU (gloo): sharded probe, gathered to rank 0, equal to the single-process result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _lightning_models import read_events

SCRIPT = Path(__file__).resolve().parent / "ddp_run.py"


def _launch(out: Path, world: int, num_samples: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(world), str(num_samples), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang fails the test
    )


def _run(out: Path, world: int, num_samples: int, *extra: str) -> dict:
    proc = _launch(out, world, num_samples, *extra)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out / "result.pt", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize("num_samples", [5, 1], ids=["uneven-shares", "rank1-only-padding"])
def test_ddp_two_processes_equal_single_process(tmp_path, num_samples):
    single = _run(tmp_path / "single", 1, num_samples)
    ddp = _run(tmp_path / "ddp", 2, num_samples)
    assert ddp["world"] == 2
    assert single["world"] == 1

    assert ddp["maps"].keys() == single["maps"].keys()
    for label, maps in single["maps"].items():
        assert ddp["maps"][label].shape == maps.shape == (num_samples, 1, 16, 16)
        torch.testing.assert_close(ddp["maps"][label], maps, atol=1e-5, rtol=0)
    assert ddp["scores"].keys() == single["scores"].keys()
    for label, scores in single["scores"].items():
        assert set(scores) == {"deletion", "insertion", "average_drop", "model_randomisation"}
        for name, value in scores.items():
            assert ddp["scores"][label][name] == pytest.approx(value, abs=1e-5), (label, name)

    events = read_events(tmp_path / "ddp")
    assert len(events["images"]["saliency/overview"]) == 1  # rank 0 alone wrote images, once
    assert len(list((tmp_path / "ddp").rglob("events.out.tfevents.*"))) == 1
    assert events["scalars"]["saliency/gradcam/deletion"][0].value == pytest.approx(
        single["scores"]["gradcam"]["deletion"], abs=1e-5
    )


@pytest.mark.slow
def test_ddp_a_method_and_a_score_failing_on_one_rank_are_dropped_on_all_and_the_rest_is_logged(tmp_path):
    single = _run(tmp_path / "single", 1, 5)
    ddp = _run(tmp_path / "ddp", 2, 5, "fail")  # returns: nothing hung
    assert set(ddp["maps"]) == {"gradient", "gradcam", "smoothgrad"}  # flaky failed on rank 1: gone everywhere
    for label, maps in ddp["maps"].items():
        torch.testing.assert_close(maps, single["maps"][label], atol=1e-5, rtol=0)
    for label, scores in ddp["scores"].items():
        assert set(scores) == {"deletion", "average_drop", "model_randomisation"}, label  # insertion failed
        for name, value in scores.items():
            assert value == pytest.approx(single["scores"][label][name], abs=1e-5), (label, name)
    errors = ddp["errors"]  # rank 0 reported what failed on rank 1
    assert any(e.startswith("method 'flaky': RuntimeError: flaky exploded on rank 1") for e in errors), errors
    assert any("score 'insertion' of method 'gradient'" in e for e in errors), errors
    events = read_events(tmp_path / "ddp")
    assert "saliency/flaky" not in events["images"]
    assert len(events["images"]["saliency/gradcam"]) == 1
    assert "saliency/gradcam/insertion" not in events["scalars"]


@pytest.mark.slow
def test_ddp_under_a_budget_every_rank_follows_rank_zeros_plan_and_equals_one_process(tmp_path):
    single = _run(tmp_path / "single", 1, 5, "budget")
    ddp = _run(tmp_path / "ddp", 2, 5, "budget")
    assert ddp["plan"].curve_rows == single["plan"].curve_rows == 3  # rows 0-2: rank 0 has 0, 2; rank 1 has 1
    assert ddp["plan"].steps == 4
    for label, scores in single["scores"].items():
        for name, value in scores.items():
            assert ddp["scores"][label][name] == pytest.approx(value, abs=1e-5), (label, name)
    events = read_events(tmp_path / "ddp")
    assert len(events["scalars"]["saliency/time/budget_credit"]) == 2  # both epochs, rank 0 alone


@pytest.mark.slow
def test_ddp_under_a_budget_a_rank_failing_before_the_plan_fails_the_run_and_nothing_hangs(tmp_path):
    proc = _launch(tmp_path / "ddp", 2, 5, "budget-fail")
    assert proc.returncode != 0
    assert "flaky exploded on rank 1" in proc.stderr, proc.stderr[-4000:]
