"""Tolerances for comparisons with peer libraries, in float32 ulps of the compared attribution's magnitude."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

EPS32 = torch.finfo(torch.float32).eps  # 2**-23 ~ 1.19e-7: one ulp of 1.0


def assert_close_to_peer(ours: Tensor | np.ndarray, theirs: Tensor | np.ndarray, *, ulps: float, why: str = "") -> None:
    """Assert ``|ours - theirs| <= ulps * eps32 * max|theirs|`` elementwise (no relative term, shapes equal).

    The tolerance is absolute, relative to the magnitude of the peer's whole result: a float32 computation rounds
    each element by a few ulps of the magnitudes that were summed into it, not of the element itself (a near-zero
    pixel of a map is as uncertain as a bright one). Min-max-normalised maps in [0, 1] have magnitude 1.

    Choosing ``ulps``: a float32 reduction of ``n`` terms of size ``s`` rounds to ``~sqrt(n) * eps * s`` (random
    rounding) and at worst ``n * eps * s``; a chain of such reductions (conv layers, a backward pass, a resize, a
    min-max division by a range) multiplies the bounds of its links (a division by a range ``r`` of a map of
    magnitude ``m`` scales the error by ``m / r``). Estimate it, measure the actual maximum on a machine, and set
    ``ulps`` 10-100x above the measurement so that the test passes on other CPUs (other SIMD widths, other
    reduction orders) but still fails on a real difference; state both in a comment at the call.

    Only rounding belongs in ``ulps``: run ours on the same batches as the peer. Another batch size rounds a conv's
    last bits differently, and a max-pool's argmax or a ReLU kink turns that into an O(1) change of a gradient at
    isolated pixels (ResNet-18), which no float32 accumulation bound covers.
    """
    a = torch.as_tensor(ours).detach().cpu().double()
    b = torch.as_tensor(theirs).detach().cpu().double()
    assert a.shape == b.shape, f"shapes differ: ours {tuple(a.shape)}, theirs {tuple(b.shape)}. {why}"
    scale = float(b.abs().max()) if b.numel() else 0.0
    tol = ulps * EPS32 * scale
    diff = (a - b).abs()
    bad = ~(diff <= tol)  # NaN offends
    if bool(bad.any()):
        worst = float(diff.max())  # NaN if any element is NaN
        in_ulps = worst / (EPS32 * scale) if scale > 0 else float("inf")
        raise AssertionError(
            f"max |ours - theirs| = {worst:.3g} = {in_ulps:.3g} ulps of the scale max|theirs| = {scale:.3g}, "
            f"tolerance {ulps:g} ulps = {tol:.3g}: {int(bad.sum())} of {bad.numel()} elements offend "
            f"(shapes: ours {tuple(a.shape)}, theirs {tuple(b.shape)}). {why}".rstrip()
        )
