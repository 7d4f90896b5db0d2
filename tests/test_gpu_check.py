"""``benchmarks/gpu_check.py --smoke``: the GPU script's checks run (small, on the CPU) and pass, so that the one
call on a lent GPU does not fail on a typo; its timings are not asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_smoke_mode_runs_every_check_on_the_cpu_and_they_pass():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for precision in ("32-true", "bf16-mixed"):
        assert f"| training untouched, {precision} | bit-identical weights, BN statistics, momenta, RNG (ok) |" in out
        assert f"| no NaN in any map, {precision} | 4 methods finite (ok) |" in out
        assert f"| monitor / rest of fit, {precision} |" in out
    for ratio in ("shared pass / one forward+backward", "ScoreCAM / ours exact", "CAMERAS one image at a time"):
        assert ratio in out, out
    assert "FAILED" not in out
