"""Warnings raised by lightning-saliency (errors are plain ``ValueError``/``TypeError`` with full context)."""

from __future__ import annotations

__all__ = ["SaliencyWarning"]


class SaliencyWarning(UserWarning):
    """Something about the saliency setup the user should know, that does not stop training."""
