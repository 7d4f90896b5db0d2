"""What a saliency map explains: the one place that methods and scores ask about the model's output.

A :class:`Target` says, for each image of a batch and the model's output (after ``output_adapter``):

* :meth:`Target.score`: the scalar ``[B]`` that gradient methods differentiate and perturbation methods read;
* :meth:`Target.confidence`: the probability ``[B]`` in [0, 1] that the faithfulness scores compare (deletion,
  insertion, average drop, ...); targets without one (regression, a callable) say so, and those scores are
  skipped for them with the reason;
* :meth:`Target.check`: a clear error, before any work, when the target does not fit the output.

The kinds, with what each explains and its confidence:

================================  =============================================  ==================================
target                            score (differentiated, read by perturbations)  confidence
================================  =============================================  ==================================
:class:`ClassTarget`              the logit of the class, output ``[B, N]``      its softmax probability
:class:`MultiLabelTarget`         the logit of the label, output ``[B, L]``      its sigmoid
:class:`SegmentationTarget`       the category's logits summed over the mask,    the category's mean softmax
                                  output ``[B, N, H, W]`` (or ``[B, N, D, H,     probability over the mask
                                  W]``)
:class:`RegressionTarget`         the output itself, ``[B]`` or ``[B, K]``       none (unbounded)
:class:`CallableTarget`           ``fn(output)``, any ``[B]``                    none
================================  =============================================  ==================================

Targets are indexed like tensors (``target[rows]``, rows a slice or an index tensor) to follow images through
chunks, repeats and subsets. Some are first *resolved* against the model's output on the clean inputs
(:meth:`Target.resolve`): a :class:`SegmentationTarget` without a mask takes the pixels predicted as its category,
once, so that perturbed inputs are scored on the same pixels. Every function that takes targets takes a
:class:`Target`, class indices ``[B]`` (a :class:`ClassTarget`), or a callable ``output -> Tensor[B]``
(a :class:`CallableTarget`), through :func:`as_target`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._runtime import Run, eval_mode

__all__ = [
    "CallableTarget",
    "resolved",
    "ClassTarget",
    "MultiLabelTarget",
    "RegressionTarget",
    "SegmentationTarget",
    "Target",
    "TargetLike",
    "UndefinedForTarget",
    "as_target",
]


class UndefinedForTarget(ValueError):
    """A method or score is undefined for this kind of target (e.g. a probability of a regression output)."""


class Target(ABC):
    """Per image of a batch, what is explained (see the module docstring)."""

    has_confidence: ClassVar[bool] = True
    """Whether :meth:`confidence` is defined (scores that compare probabilities need it)."""

    @property
    def needs_resolving(self) -> bool:
        """Whether :meth:`resolve` must fix something from the clean output before any perturbed forward."""
        return False

    def size(self) -> int | None:
        """The number of images it holds per-image state for, or ``None`` if it applies to any batch."""
        return None

    def __len__(self) -> int:
        size = self.size()
        if size is None:
            raise TypeError(f"{self!r} applies to any batch: it has no length.")
        return size

    def __getitem__(self, rows: slice | Tensor) -> Target:
        """The target of a subset (or repetition) of the images, like ``tensor[rows]``.

        A copy: ``target[:]`` made outside ``torch.inference_mode`` holds normal tensors again.
        """
        return self

    def resolve(self, output: Tensor) -> Target:
        """This target with what it fixes from the model's output on the clean inputs (default: itself)."""
        return self

    @abstractmethod
    def check(self, output: Tensor) -> None:
        """Raise a ``ValueError`` naming the target and the output's shape if this target does not fit ``output``."""

    @abstractmethod
    def score(self, output: Tensor) -> Tensor:
        """``[B]`` float32, differentiable: what gradient methods differentiate (summed over the batch)."""

    def confidence(self, output: Tensor) -> Tensor:
        """``[B]`` float32 in [0, 1]: the probability the faithfulness scores read."""
        raise UndefinedForTarget(
            f"{type(self).__name__} has no confidence (a probability in [0, 1]) for an output of shape "
            f"{tuple(output.shape)}: scores that compare probabilities (deletion, insertion, average drop, ...) "
            "are undefined for it."
        )

    def describe(self, row: int, names: Sequence[str] | None = None) -> str:
        """What row ``row``'s map explains, for captions (e.g. ``"class cat"``)."""
        return type(self).__name__


def _name(index: int, names: Sequence[str] | None) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def _indices(values: Tensor, what: str) -> Tensor:
    if not isinstance(values, Tensor) or values.ndim != 1 or values.is_floating_point():
        got = f"shape {tuple(values.shape)}, dtype {values.dtype}" if isinstance(values, Tensor) else values
        raise ValueError(f"{what} needs an integer Tensor [B] of indices, got {got}.")
    return values.detach().long()


def _index(values: Tensor, rows: slice | Tensor) -> Tensor:
    index = rows.to(values.device) if isinstance(rows, Tensor) else rows
    return values[index].clone()


def _check_columns(target: Target, output: Tensor, indices: Tensor, what: str, kind: str) -> None:
    """``output`` is ``[B, N]`` and every index is a column of it."""
    if output.ndim != 2:
        raise ValueError(
            f"{target!r} needs {kind} of shape [B={output.shape[0]}, {what}], got {tuple(output.shape)}; pass "
            "`output_adapter=` if the model returns more, or use the target that fits the output "
            "(SegmentationTarget for [B, N, H, W], RegressionTarget for [B] or [B, K])."
        )
    n = output.shape[1]
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
        bad = list(dict.fromkeys(indices[(indices < 0) | (indices >= n)].tolist()))  # in order, once each
        raise ValueError(f"targets must be class indices in [0, {n - 1}] for a model with {n} outputs, got {bad}.")


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
        self.classes = _indices(classes, "ClassTarget")

    def size(self) -> int:
        """The number of images."""
        return self.classes.shape[0]

    def __getitem__(self, rows: slice | Tensor) -> ClassTarget:
        return ClassTarget(_index(self.classes, rows))

    def __repr__(self) -> str:
        return f"ClassTarget({self.classes.tolist()})"

    def check(self, output: Tensor) -> None:
        """``output`` is logits ``[B, N]`` and every class indexes a column."""
        _check_columns(self, output, self.classes, "num_classes", "logits")

    def score(self, output: Tensor) -> Tensor:
        """The logit of each image's class, ``[B]``."""
        return output.float().gather(1, self.classes.to(output.device)[:, None])[:, 0]

    def confidence(self, output: Tensor) -> Tensor:
        """The softmax probability of each image's class, ``[B]``."""
        return output.float().softmax(1).gather(1, self.classes.to(output.device)[:, None])[:, 0]

    def describe(self, row: int, names: Sequence[str] | None = None) -> str:
        """``"class <name>"``."""
        return f"class {_name(int(self.classes[row]), names)}"


class MultiLabelTarget(Target):
    """One label per row of a multi-label classifier (sigmoid outputs): its logit; confidence: its sigmoid.

    With ``labels`` it explains those labels (one per row). Without, it is a choice that :meth:`positives` turns
    into rows: each image's positive labels, from the ground truth (multi-hot labels ``[B, L]``) when known, else
    those predicted above ``threshold``, or the ``top_k`` highest; an image with none gets its highest label.

    Args:
        labels: ``[R]`` label indices, one per row; ``None`` to choose each image's positives.
        threshold: Sigmoid probability above which a label is predicted positive.
        top_k: Instead of the threshold, the ``top_k`` highest labels of each image.

    Example:
        >>> logits = torch.tensor([[2.0, -1.0, 3.0], [-2.0, 0.5, -1.0]])
        >>> rows, target = MultiLabelTarget().positives(logits)
        >>> rows.tolist(), target.labels.tolist()
        ([0, 0, 1], [0, 2, 1])
        >>> target.confidence(logits[rows]).round(decimals=2)
        tensor([0.8800, 0.9500, 0.6200])
    """

    def __init__(self, labels: Tensor | None = None, *, threshold: float = 0.5, top_k: int | None = None) -> None:
        self.labels = None if labels is None else _indices(labels, "MultiLabelTarget")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"threshold must be a probability in (0, 1), got {threshold!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}.")
        self.threshold, self.top_k = float(threshold), top_k

    def size(self) -> int | None:
        """The number of rows, or ``None`` before :meth:`positives` chose them."""
        return None if self.labels is None else self.labels.shape[0]

    def __getitem__(self, rows: slice | Tensor) -> MultiLabelTarget:
        if self.labels is None:
            return self
        return MultiLabelTarget(_index(self.labels, rows), threshold=self.threshold, top_k=self.top_k)

    def __repr__(self) -> str:
        if self.labels is None:
            return f"MultiLabelTarget(threshold={self.threshold}, top_k={self.top_k})"
        return f"MultiLabelTarget({self.labels.tolist()})"

    def positives(self, output: Tensor, multi_hot: Tensor | None = None) -> tuple[Tensor, MultiLabelTarget]:
        """``(rows [R], target)``: each image's positive labels, one row per (image, label), image-major.

        Args:
            output: ``[B, L]`` logits on the clean inputs.
            multi_hot: ``[B, L]`` ground truth (non-zero = positive); used when given.
        """
        if self.labels is not None:
            return torch.arange(len(self.labels), device=output.device), self
        _check_columns(self, output, torch.zeros(0, dtype=torch.long), "num_labels", "logits")
        scores = output.detach().float()
        if multi_hot is not None:
            if tuple(multi_hot.shape) != tuple(scores.shape):
                raise ValueError(
                    f"multi-hot labels of shape {tuple(multi_hot.shape)} do not fit the output {tuple(scores.shape)}."
                )
            chosen = multi_hot.to(scores.device) != 0
        elif self.top_k is not None:
            k = min(self.top_k, scores.shape[1])
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, 1).indices, True)
        else:
            chosen = scores.sigmoid() > self.threshold
        none = ~chosen.any(1)  # an image without positives: its highest label
        chosen[none, scores[none].argmax(1)] = True
        rows, labels = chosen.nonzero(as_tuple=True)  # image-major
        return rows, MultiLabelTarget(labels, threshold=self.threshold, top_k=self.top_k)

    def _labels(self) -> Tensor:
        if self.labels is None:
            raise ValueError(
                "MultiLabelTarget(labels=None) chooses several labels per image: call `rows, target = "
                "target.positives(model_output)` and explain `inputs[rows]` (SaliencyMonitor does this itself)."
            )
        return self.labels

    def check(self, output: Tensor) -> None:
        """``output`` is logits ``[B, L]`` and every label indexes a column."""
        _check_columns(self, output, self._labels(), "num_labels", "logits")

    def score(self, output: Tensor) -> Tensor:
        """The logit of each row's label, ``[B]``."""
        return output.float().gather(1, self._labels().to(output.device)[:, None])[:, 0]

    def confidence(self, output: Tensor) -> Tensor:
        """The sigmoid of each row's label, ``[B]``."""
        return self.score(output).sigmoid()

    def describe(self, row: int, names: Sequence[str] | None = None) -> str:
        """``"label <name>"``."""
        return f"label {_name(int(self._labels()[row]), names)}"


class SegmentationTarget(Target):
    """The logits of one category summed over a mask (pytorch-grad-cam's ``SemanticSegmentationTarget``).

    ``score = sum over the mask of output[:, category]``, the output ``[B, N, H, W]`` (or ``[B, N, D, H, W]``);
    confidence: the mean softmax probability of the category over the mask (0 for an empty mask). Without a
    ``mask``, :meth:`resolve` takes the pixels predicted as ``category`` on the clean inputs (or, in the monitor,
    the probe's ground-truth mask of that category when the probe carries masks); a mask at another resolution
    than the output is resized (nearest).

    Args:
        category: The category explained.
        mask: ``[B, H, W]`` (``[B, D, H, W]``) bool pixels to sum over, or ``None``.

    Example:
        >>> out = torch.zeros(1, 2, 2, 2)
        >>> out[0, 1, 0, 0] = 4.0  # category 1 wins one pixel
        >>> target = SegmentationTarget(1).resolve(out)
        >>> target.mask.tolist(), target.score(out).tolist()
        ([[[True, False], [False, False]]], [4.0])
    """

    def __init__(self, category: int, mask: Tensor | None = None) -> None:
        if isinstance(category, bool) or not isinstance(category, int) or category < 0:
            raise ValueError(f"category must be a class index >= 0, got {category!r}.")
        if mask is not None and (not isinstance(mask, Tensor) or mask.ndim not in (3, 4)):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"SegmentationTarget mask must be a Tensor [B, H, W] or [B, D, H, W], got {got}.")
        self.category = category
        self.mask = None if mask is None else mask.detach().bool()

    @property
    def needs_resolving(self) -> bool:
        """Without a mask: the pixels predicted as the category are taken from the clean output."""
        return self.mask is None

    def size(self) -> int | None:
        """The number of images of the mask, or ``None`` before :meth:`resolve`."""
        return None if self.mask is None else self.mask.shape[0]

    def __getitem__(self, rows: slice | Tensor) -> SegmentationTarget:
        return self if self.mask is None else SegmentationTarget(self.category, _index(self.mask, rows))

    def __repr__(self) -> str:
        pixels = "" if self.mask is None else f", mask of {self.mask.flatten(1).sum(1).tolist()} px"
        return f"SegmentationTarget({self.category}{pixels})"

    def resolve(self, output: Tensor) -> SegmentationTarget:
        """With the pixels predicted as the category (when no mask was given), at the output's resolution."""
        self._check_output(output)
        if self.mask is None:
            return SegmentationTarget(self.category, output.detach().argmax(1) == self.category)
        return SegmentationTarget(self.category, self._mask_for(output))

    def with_mask(self, categories: Tensor) -> SegmentationTarget:
        """With the ground truth ``categories`` ``[B, H, W]`` (integer per pixel): the pixels of this category."""
        return SegmentationTarget(self.category, categories == self.category)

    def _check_output(self, output: Tensor) -> None:
        if output.ndim not in (4, 5):
            raise ValueError(
                f"{self!r} needs a per-pixel output [B, N, H, W] (or [B, N, D, H, W]), got shape "
                f"{tuple(output.shape)}; use ClassTarget or MultiLabelTarget for [B, N] outputs."
            )
        if self.category >= output.shape[1]:
            raise ValueError(
                f"{self!r}: category {self.category} is not one of the output's {output.shape[1]} categories "
                f"(output shape {tuple(output.shape)})."
            )

    def _mask_for(self, output: Tensor) -> Tensor:
        assert self.mask is not None
        mask = self.mask.to(output.device)
        if tuple(mask.shape[1:]) != tuple(output.shape[2:]):
            mask = F.interpolate(mask[:, None].float(), size=tuple(output.shape[2:]), mode="nearest")[:, 0] > 0.5
        return mask

    def check(self, output: Tensor) -> None:
        """A per-pixel output with the category, and a mask (see :meth:`resolve`) for every image."""
        self._check_output(output)
        if self.mask is None:
            raise ValueError(f"{self!r} has no mask yet: resolve it against the clean output first.")
        if self.mask.shape[0] != output.shape[0]:
            raise ValueError(f"{self!r}: the mask holds {self.mask.shape[0]} images, the output {output.shape[0]}.")

    def score(self, output: Tensor) -> Tensor:
        """The category's logits summed over each image's mask, ``[B]``."""
        mask = self._mask_for(output)
        return (output[:, self.category].float() * mask).flatten(1).sum(1)

    def confidence(self, output: Tensor) -> Tensor:
        """The category's mean softmax probability over each image's mask, ``[B]`` (0 for an empty mask)."""
        mask = self._mask_for(output).float()
        probs = output.float().softmax(1)[:, self.category]  # [B,H,W]
        return (probs * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)

    def describe(self, row: int, names: Sequence[str] | None = None) -> str:
        """``"category <name> (<pixels> px)"``."""
        pixels = "" if self.mask is None else f" ({int(self.mask[row].sum())} px)"
        return f"category {_name(self.category, names)}{pixels}"


class RegressionTarget(Target):
    """A scalar output: ``output[:, index]`` of ``[B, K]``, or ``output`` itself when it is ``[B]``.

    It has no confidence: a probability of an unbounded output is undefined, so the scores that compare
    probabilities are skipped for it (the localisation scores and ``map_stability`` still apply).

    Args:
        index: The output column explained.

    Example:
        >>> RegressionTarget(1).score(torch.tensor([[0.5, 2.0], [1.0, -3.0]]))
        tensor([ 2., -3.])
    """

    has_confidence = False

    def __init__(self, index: int = 0) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"index must be an output column >= 0, got {index!r}.")
        self.index = index

    def __repr__(self) -> str:
        return f"RegressionTarget({self.index})"

    def check(self, output: Tensor) -> None:
        """``output`` is ``[B]``, or ``[B, K]`` with ``index < K``."""
        if output.ndim == 1 and self.index == 0:
            return
        if output.ndim != 2 or self.index >= output.shape[1]:
            raise ValueError(
                f"{self!r} needs an output of shape [B] or [B, K > {self.index}], got {tuple(output.shape)}."
            )

    def score(self, output: Tensor) -> Tensor:
        """The output (its column ``index``), ``[B]``."""
        return output.float() if output.ndim == 1 else output[:, self.index].float()

    def describe(self, row: int, names: Sequence[str] | None = None) -> str:
        """``"output <name>"``."""
        return f"output {_name(self.index, names)}"


class CallableTarget(Target):
    """Any function of the output to one scalar per image, ``fn(output) -> Tensor[B]`` (differentiable).

    It has no confidence (see :class:`RegressionTarget`).

    Example:
        >>> CallableTarget(lambda out: out[:, :2].sum(1)).score(torch.ones(3, 4))
        tensor([2., 2., 2.])
    """

    has_confidence = False

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        if not callable(fn):
            raise TypeError(f"CallableTarget needs a callable output -> Tensor[B], got {fn!r}.")
        self.fn = fn

    def __repr__(self) -> str:
        return f"CallableTarget({getattr(self.fn, '__name__', repr(self.fn))})"

    def check(self, output: Tensor) -> None:
        """``fn(output)`` is a Tensor ``[B]``."""
        value = self.fn(output)
        if not isinstance(value, Tensor) or tuple(value.shape) != (output.shape[0],):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{self!r} must return a Tensor [B={output.shape[0]}] for the output, got {got}.")

    def score(self, output: Tensor) -> Tensor:
        """``fn(output)``, ``[B]``."""
        return self.fn(output).float()


TargetLike = Target | Tensor | Callable[[Tensor], Tensor]
"""A :class:`Target`, class indices ``[B]`` (read as a :class:`ClassTarget`), or ``output -> Tensor[B]``."""


def as_target(targets: Any, batch: int, device: torch.device | None = None) -> Target:
    """``targets`` as a :class:`Target` for ``batch`` images, checked.

    Raises:
        ValueError: If ``targets`` is not a Target, an integer Tensor ``[batch]`` (on ``device``, if given) or a
            callable, or holds another number of images.

    Example:
        >>> as_target(torch.tensor([1, 0]), batch=2)
        ClassTarget([1, 0])
    """
    if isinstance(targets, Target):
        size = targets.size()
        if size is not None and size != batch:
            raise ValueError(f"targets must have one entry per image (B={batch}), got {targets!r} of {size}.")
        return targets
    if callable(targets) and not isinstance(targets, Tensor):
        return CallableTarget(targets)
    if not isinstance(targets, Tensor) or targets.shape != (batch,) or targets.is_floating_point():
        got = f"shape {tuple(targets.shape)}, dtype {targets.dtype}" if isinstance(targets, Tensor) else repr(targets)
        raise ValueError(
            f"targets must be an integer Tensor [B={batch}] of class indices, a Target or a callable, got {got}."
        )
    if device is not None and targets.device != device:
        raise ValueError(f"targets are on {targets.device} but inputs on {device}; put both on one device.")
    return ClassTarget(targets)


def resolved(target: Target, model: nn.Module, inputs: Tensor, run: Run) -> Target:
    """``target`` resolved (:meth:`Target.resolve`) against the model's output on the clean ``inputs``, when needed.

    One forward without gradients, in eval mode (each submodule's mode restored), for targets that need it.
    """
    if not target.needs_resolving:
        return target
    with eval_mode(model), torch.no_grad():
        output = run.output(model, inputs)
    return target.resolve(output)
