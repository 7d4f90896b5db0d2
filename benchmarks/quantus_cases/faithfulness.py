"""Quantus faithfulness metrics against ours (see ``bench_quantus.py``)."""

from __future__ import annotations

from quantus_cases import Case

CASES: list[Case] = []
