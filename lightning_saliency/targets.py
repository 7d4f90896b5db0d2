"""What a saliency map explains: the one place that methods and scores ask about the model's output.

A :class:`Target` says, for each image of a batch and the model's output (logits ``[B, N]`` after
``output_adapter``):

* :meth:`Target.score`: the scalar ``[B]`` that gradient methods differentiate and perturbation methods read;
* :meth:`Target.confidence`: the probability ``[B]`` in [0, 1] that the faithfulness scores compare (deletion,
  insertion, average drop, ...);
* :meth:`Target.check`: a clear error, before any work, when the target does not fit the output.

Targets are indexed like tensors (``target[rows]``, rows a slice or an index tensor) to follow images through
chunks, repeats and subsets. Every function that takes targets takes a :class:`Target` or a class-index tensor
``[B]``, read as a :class:`ClassTarget` (:func:`as_target`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

__all__ = ["ClassTarget", "Target", "TargetLike", "as_target"]


class Target(ABC):
    """Per image of a batch, what is explained (see the module docstring)."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of images."""

    @abstractmethod
    def __getitem__(self, rows: slice | Tensor) -> Target:
        """The target of a subset (or repetition) of the images, like ``tensor[rows]``.

        A copy: ``target[:]`` made outside ``torch.inference_mode`` holds normal tensors again.
        """

    @abstractmethod
    def check(self, output: Tensor) -> None:
        """Raise a ``ValueError`` naming the target and the output's shape if this target does not fit ``output``."""

    @abstractmethod
    def score(self, output: Tensor) -> Tensor:
        """``[B]`` float32, differentiable: what gradient methods differentiate (summed over the batch)."""

    @abstractmethod
    def confidence(self, output: Tensor) -> Tensor:
        """``[B]`` float32 in [0, 1]: the probability the faithfulness scores read."""


class ClassTarget(Target):
    """The logit of one class per image; confidence: its softmax probability.

    What ``targets="label"``, ``"predicted"`` and a class index explain in a classifier, as in Simonyan et al.
    (2014) and Grad-CAM: the pre-softmax score of the class.

    Args:
        classes: ``[B]`` integer class indices.

    Example:
        >>> target = ClassTarget(torch.tensor([2, 0]))
        >>> logits = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
        >>> target.score(logits), target.confidence(logits).round(decimals=3)
        (tensor([3., 2.]), tensor([0.8440, 0.7870]))
        >>> target[torch.tensor([1, 1])].classes
        tensor([0, 0])
    """

    def __init__(self, classes: Tensor) -> None:
        if not isinstance(classes, Tensor) or classes.ndim != 1 or classes.is_floating_point():
            got = f"shape {tuple(classes.shape)}, dtype {classes.dtype}" if isinstance(classes, Tensor) else classes
            raise ValueError(f"ClassTarget needs an integer Tensor [B] of class indices, got {got}.")
        self.classes = classes.detach().long()

    def __len__(self) -> int:
        return self.classes.shape[0]

    def __getitem__(self, rows: slice | Tensor) -> ClassTarget:
        index = rows.to(self.classes.device) if isinstance(rows, Tensor) else rows
        return ClassTarget(self.classes[index].clone())

    def __repr__(self) -> str:
        return f"ClassTarget({self.classes.tolist()})"

    def check(self, output: Tensor) -> None:
        """Every class indexes a column of ``output [B, N]``."""
        n = output.shape[1]
        classes = self.classes
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n):
            bad = list(dict.fromkeys(classes[(classes < 0) | (classes >= n)].tolist()))  # in order, once each
            raise ValueError(f"targets must be class indices in [0, {n - 1}] for a model with {n} outputs, got {bad}.")

    def score(self, output: Tensor) -> Tensor:
        """The logit of each image's class, ``[B]``."""
        return output.float().gather(1, self.classes.to(output.device)[:, None])[:, 0]

    def confidence(self, output: Tensor) -> Tensor:
        """The softmax probability of each image's class, ``[B]``."""
        return output.float().softmax(1).gather(1, self.classes.to(output.device)[:, None])[:, 0]


TargetLike = Target | Tensor
"""A :class:`Target`, or class indices ``[B]`` (read as a :class:`ClassTarget`)."""


def as_target(targets: Any, batch: int, device: torch.device | None = None) -> Target:
    """``targets`` as a :class:`Target` for ``batch`` images, checked.

    Raises:
        ValueError: If ``targets`` is not a Target or an integer Tensor ``[batch]`` (on ``device``, if given).

    Example:
        >>> as_target(torch.tensor([1, 0]), batch=2)
        ClassTarget([1, 0])
    """
    if isinstance(targets, Target):
        if len(targets) != batch:
            raise ValueError(f"targets must have one entry per image (B={batch}), got {targets!r} of {len(targets)}.")
        return targets
    if not isinstance(targets, Tensor) or targets.shape != (batch,) or targets.is_floating_point():
        got = f"shape {tuple(targets.shape)}, dtype {targets.dtype}" if isinstance(targets, Tensor) else repr(targets)
        raise ValueError(f"targets must be an integer Tensor [B={batch}] of class indices or a Target, got {got}.")
    if device is not None and targets.device != device:
        raise ValueError(f"targets are on {targets.device} but inputs on {device}; put both on one device.")
    return ClassTarget(targets)
