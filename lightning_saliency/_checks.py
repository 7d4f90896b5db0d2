"""Argument checks shared by the callbacks and functions: each error names the argument, the value and the rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["check_inputs", "floats", "int_at_least", "non_empty_str", "normalisation", "positive_float"]


def check_inputs(inputs: Any) -> None:
    """Raise a clear error unless ``inputs`` is a floating-point Tensor ``[B, C, H, W]`` (or ``[B, C, D, H, W]``)."""
    if not isinstance(inputs, Tensor) or inputs.ndim not in (4, 5) or not inputs.is_floating_point():
        got = (
            f"{type(inputs).__name__} of shape {tuple(inputs.shape)} and dtype {inputs.dtype}"
            if isinstance(inputs, Tensor)
            else type(inputs).__name__
        )
        raise ValueError(f"inputs must be a floating-point Tensor [B, C, H, W], got {got} (volumes: [B, C, D, H, W]).")


def int_at_least(value: Any, minimum: int, arg: str, meaning: str = "") -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``; ``meaning`` says in the error what it counts.

    Example:
        >>> int_at_least(0, 1, "every_n_epochs")
        Traceback (most recent call last):
        ...
        ValueError: every_n_epochs must be an int >= 1, got 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        aside = f" ({meaning})" if meaning else ""
        raise ValueError(f"{arg} must be an int >= {minimum}{aside}, got {value!r}.")
    return value


def an_int(value: Any, arg: str) -> int:
    """``value`` if it is an int (not a bool), e.g. a seed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{arg} must be an int, got {value!r}.")
    return value


def noise_sampling(num_samples: Any, noise_level: Any, batch_size: Any, seed: Any) -> tuple[int, float, int, int]:
    """The arguments of the methods that average over noisy copies (SmoothGrad and its kin), checked.

    Example:
        >>> noise_sampling(16, 0.15, 64, 0)
        (16, 0.15, 64, 0)
        >>> noise_sampling(16, 12, 64, 0)
        Traceback (most recent call last):
        ...
        ValueError: noise_level must be a float in [0, 10) (a fraction of the value range), got 12.
    """
    int_at_least(num_samples, 1, "num_samples")
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not 0 <= noise_level < 10:
        raise ValueError(
            f"noise_level must be a float in [0, 10) (a fraction of the value range), got {noise_level!r}."
        )
    return num_samples, float(noise_level), int_at_least(batch_size, 1, "batch_size"), an_int(seed, "seed")


def positive_float(value: Any, arg: str) -> float:
    """``value`` as a float if it is a number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{arg} must be a float > 0, got {value!r}.")
    return float(value)


def non_empty_str(value: Any, arg: str) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{arg} must be a non-empty string, got {value!r}.")
    return value


def floats(values: Sequence[float] | None, arg: str) -> list[float] | None:
    """``values`` as a non-empty list of floats (one per channel), or ``None``."""
    if values is None:
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a sequence of floats (one per channel), got {values!r}.") from None
    if not out:
        raise ValueError(f"{arg} must have one value per input channel, got an empty sequence.")
    return out


def normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float] | None, list[float] | None]:
    """Checked ``(mean, std)`` of an input normalisation: same lengths, positive ``std``.

    Example:
        >>> normalisation([0.5, 0.5], [0.2])
        Traceback (most recent call last):
        ...
        ValueError: mean and std must have the same length, got mean=[0.5, 0.5] and std=[0.2].
    """
    m, s = floats(mean, "mean"), floats(std, "std")
    if m is not None and s is not None and len(m) != len(s):
        raise ValueError(f"mean and std must have the same length, got mean={m} and std={s}.")
    if s is not None and any(v <= 0 for v in s):
        raise ValueError(f"std must be positive, got {s}.")
    return m, s
