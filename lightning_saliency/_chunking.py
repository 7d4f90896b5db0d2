"""Chunked loops that survive running out of memory: on OOM the chunk is halved and retried.

Methods and scores that batch many inputs (Score-CAM's masked inputs, CAMERAS' images, SmoothGrad's noisy copies,
the perturbed images of the deletion/insertion scores) run their forwards through :func:`run_chunked`. Without an
out-of-memory error it calls ``fn`` on exactly the chunks the plain loop would, so results are unchanged; when a
chunk runs out of memory (``torch.OutOfMemoryError``, or a ``RuntimeError`` saying "out of memory", as some
backends raise), the CUDA cache is emptied and the same chunk is retried at half the size, which is then kept for
the rest of the loop. Only when a single item per call still fails is a clear error raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["is_out_of_memory", "run_chunked"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA, MPS, or a CPU allocator failure reported by torch).

    Example:
        >>> is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")), is_out_of_memory(
        ...     RuntimeError("shape mismatch"))
        (True, False)
    """
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_cached_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_chunked(fn: Callable[[int, int], T], n: int, batch_size: int, *, what: str = "items") -> list[T]:
    """``[fn(start, stop), ...]`` over ``range(n)`` in consecutive chunks of at most ``batch_size`` items.

    On an out-of-memory error in ``fn`` the cached CUDA memory is released and the failed chunk is retried with
    half the chunk size (which is kept for the remaining chunks), down to one item per call. ``fn`` must not
    leave partial effects that a retry of the same range would double (write results by index, or return them).

    Args:
        fn: Called with a half-open range ``[start, stop)`` of item indices.
        n: Number of items.
        batch_size: Largest chunk to try first (>= 1).
        what: What the items are, for the error message (e.g. ``"masked inputs"``).

    Returns:
        The results of ``fn`` in order, one per chunk actually run.

    Raises:
        torch.OutOfMemoryError: If a chunk of a single item still runs out of memory (chained to the original).
        ValueError: If ``batch_size < 1``.

    Example:
        >>> run_chunked(lambda a, b: list(range(a, b)), 5, 2)
        [[0, 1], [2, 3], [4]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    out: list[T] = []
    start, size = 0, batch_size
    while start < n:
        stop = min(start + size, n)
        failure: BaseException | None = None
        try:
            out.append(fn(start, stop))
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            if stop - start <= 1:
                raise torch.OutOfMemoryError(
                    f"Out of memory with a single one of {n} {what} per forward (first tried {batch_size} per "
                    f"forward, halving after each failure). Free memory, use smaller inputs, or run the saliency "
                    f"work on another device. Original error: {error}"
                ) from error
            failure = error
        if failure is not None:
            # Retry outside the `except` block, so the failed chunk's frames and tensors can be freed first.
            del failure
            _free_cached_memory()
            size = max(1, (stop - start) // 2)
            _log.info("Out of memory on %d %s per forward; retrying with %d.", stop - start, what, size)
            continue
        start = stop
    return out
