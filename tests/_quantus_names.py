"""Quantus' keyword arguments under this package's names, for tests that pass one dict to both."""

from __future__ import annotations

from typing import Any

OURS = {"abs": "absolute"}
"""Quantus' name -> ours, where they differ (``abs`` would shadow the builtin)."""


def ours(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with Quantus' names renamed to ours."""
    return {OURS.get(name, name): value for name, value in kwargs.items()}
