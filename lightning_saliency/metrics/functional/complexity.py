"""Complexity of explanations (Quantus 0.6's ``Sparseness``, ``Complexity``, ``EffectiveComplexity``): maps only.

Each reads the attributions alone, after Quantus' preprocessing (by default ``absolute=True, normalise=True``: each
image divided by its largest magnitude, then magnitudes; see :mod:`._quantus` for the one difference, per image
where Quantus' default divides by the batch's maximum). Any shape ``[B, ...]`` is accepted (maps ``[B, 1, H, W]``,
raw attributions ``[B, C, H, W]``, volumes); each image's values are flattened, as Quantus does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_saliency.metrics.functional._quantus import _prepared

__all__ = ["complexity", "effective_complexity", "sparseness"]


def sparseness(maps: Tensor, *, absolute: bool = True, normalise: bool = True) -> Tensor:
    """Sparseness per image (Chalasani et al. 2020): the Gini index of the attributions, higher is sparser.

    ``sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))`` over the ``n`` values sorted ascending (``i = 1..n``), after
    ``1e-7`` is added to every value (so that an all-zero map scores 0, not NaN), as Quantus' ``Sparseness``.
    In ``[0, 1)``: 0 when every value is equal, near 1 when one value holds all the mass.

    Args:
        maps: ``[B, ...]`` attributions or maps.
        absolute: Take magnitudes (Quantus' default ``True``).
        normalise: Divide each image by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32.

    Example:
        >>> maps = torch.zeros(2, 1, 2, 2)
        >>> maps[0, 0, 0, 0] = 1.0
        >>> sparseness(maps)
        tensor([0.7500, 0.0000])
    """
    a = (_prepared(maps, absolute=absolute, normalise=normalise).flatten(1) + 1e-7).double()  # [B,N] the add in float32
    n = a.shape[1]
    ordered = a.sort(1).values
    weights = 2 * torch.arange(1, n + 1, device=a.device, dtype=torch.float64) - n - 1  # [N]
    return ((weights * ordered).sum(1) / (n * ordered.sum(1))).float()


def complexity(maps: Tensor, *, absolute: bool = True, normalise: bool = True) -> Tensor:
    """Complexity per image (Bhatt et al. 2020): the entropy of the attributions' share of the total, lower is simpler.

    ``-sum_i p_i log(p_i + 1e-12)`` with ``p_i = a_i / sum_j |a_j|``, as Quantus' ``Complexity``: 0 when one value
    holds all the mass, ``log n`` when all ``n`` are equal. An all-zero map has no distribution: NaN (the
    :class:`~lightning_saliency.metrics.Complexity` metric leaves it out).

    Args:
        maps: ``[B, ...]`` attributions or maps.
        absolute: Take magnitudes (Quantus' default ``True``; with ``False`` negative values give NaN, as in Quantus).
        normalise: Divide each image by its largest magnitude first (no effect but rounding: ``p`` is scale-free).

    Returns:
        ``[B]`` float32.

    Example:
        >>> maps = torch.ones(2, 1, 2, 2)
        >>> maps[1] = 0.0
        >>> maps[1, 0, 0] = 1.0  # two of four
        >>> complexity(maps)  # log 4, log 2
        tensor([1.3863, 0.6931])
    """
    a = _prepared(maps, absolute=absolute, normalise=normalise).flatten(1).double()  # [B,N]
    p = a / a.abs().sum(1, keepdim=True)
    return (-(p * torch.log(p + 1e-12)).sum(1)).float()


def effective_complexity(maps: Tensor, *, eps: float = 1e-5, absolute: bool = True, normalise: bool = True) -> Tensor:
    """Effective complexity per image (Nguyen & Martinez 2020): how many values exceed ``eps``, lower is simpler.

    Counted after the preprocessing (so ``eps`` is a fraction of each image's largest magnitude), as Quantus'
    ``EffectiveComplexity``. A count of pixels (of features for ``[B, C, H, W]`` attributions), not a fraction: it
    grows with the image size.

    Args:
        maps: ``[B, ...]`` attributions or maps.
        eps: The threshold (Quantus' default ``1e-5``).
        absolute: Take magnitudes (Quantus' default ``True``).
        normalise: Divide each image by its largest magnitude first (Quantus' default ``True``).

    Returns:
        ``[B]`` float32 counts.

    Raises:
        ValueError: If ``eps`` is not a number >= 0.

    Example:
        >>> effective_complexity(torch.tensor([[[[0.0, 0.5], [1.0, 1e-6]]]]))
        tensor([2.])
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0 (a fraction of the largest value), got {eps!r}.")
    a = _prepared(maps, absolute=absolute, normalise=normalise).flatten(
        1
    )  # [B,N] float32, compared in float32 as Quantus
    return (a > eps).sum(1).float()
