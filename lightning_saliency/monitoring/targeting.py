"""Phase 1b, what each row of the probe explains: the monitor's ``targets=`` resolved on the whole probe.

Every rank resolves the same targets on the same whole probe (one forward without gradients), so the rows, and so
the shards, are the same everywhere: a multi-label probe has one row per (image, positive label), chosen here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run, eval_mode, module_device, preserved_rng
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.probe import Probe
from lightning_saliency.render import row_labels
from lightning_saliency.targets import ClassTarget, MultiLabelTarget, SegmentationTarget, Target, as_target

__all__ = ["Explained", "TargetSpec", "explain"]

TargetSpec = Literal["label", "predicted"] | int | Target | Callable[[Tensor], Tensor]
"""What the monitor explains: ``"label"``, ``"predicted"``, a class index, a target, or ``output -> Tensor[B]``."""


@dataclass(frozen=True)
class Explained:
    """What the rows of one logged epoch explain.

    Attributes:
        rows: ``[R]`` the probe image of each row (one per image, one per (image, label) when multi-label, one per
            image showing the category when segmenting).
        target: What each of the ``R`` rows explains.
        captions: Each row's caption lines (position and index, truth, prediction or what it explains).
        probe: The probe's rows, with the ground-truth region of what each row explains: for a
            :class:`~lightning_saliency.targets.SegmentationTarget` and a probe with segmentation masks, the mask of
            the category (what the localisation scores compare the maps with); else the probe's boxes and masks.
    """

    rows: Tensor
    target: Target
    captions: list[list[str]]
    probe: Probe

    @property
    def identity(self) -> list[list[int]]:
        """What each row is: ``[image]``, or ``[image, label]`` for a multi-label target.

        The map history compares epochs only while this stays the same (a multi-label probe's predicted positives
        change as the model learns).
        """
        rows = self.rows.tolist()
        if isinstance(self.target, MultiLabelTarget) and self.target.labels is not None:
            return [[r, int(label)] for r, label in zip(rows, self.target.labels.tolist(), strict=True)]
        return [[r] for r in rows]


def explain(
    model: nn.Module, probe: Probe, spec: TargetSpec, run: Run, class_names: Sequence[str] | None = None
) -> Explained:
    """Resolve ``spec`` on ``probe``: the rows, their target, their captions.

    One forward without gradients, in eval mode, training's RNG streams untouched. A setup error (an output the
    target does not fit, a class out of range, ``"label"`` without labels) is raised here, before any method runs.

    Raises:
        ValueError: If the target does not fit the model's output or the probe.
    """
    device = module_device(model)
    with preserved_rng([device]), eval_mode(model), torch.no_grad():
        inputs = probe.inputs.to(device)
        output = run.output(model, inputs)  # [B,...]
    b = probe.inputs.shape[0]
    rows = torch.arange(b)
    if spec == "label":
        if probe.labels is None:
            raise ValueError(
                "targets='label' needs labels, but the probe has none (the validation samples carry no label, "
                "or `probe=` was given as inputs only). Use targets='predicted', a class index, a Target (e.g. "
                "MultiLabelTarget() for multi-hot labels, SegmentationTarget(category) for masks), or give "
                "`probe=(inputs, labels)`."
            )
        target: Target = ClassTarget(probe.labels)
    elif spec == "predicted":
        ClassTarget(torch.zeros(b, dtype=torch.long)).check(output)  # logits [B, N], or a clear error
        target = ClassTarget(output.float().argmax(1).cpu())
    elif isinstance(spec, int):
        target = ClassTarget(torch.full((b,), spec, dtype=torch.long))
    elif isinstance(spec, MultiLabelTarget):
        picked, target = spec.positives(output, probe.multi_hot)
        rows = picked.cpu()
    elif isinstance(spec, SegmentationTarget):
        truth = spec.mask is None and probe.segmentation is not None
        target = spec.with_mask(probe.segmentation) if truth else spec.resolve(output)  # type: ignore[arg-type]
        rows, target = _showing(target, truth)
    else:
        target = as_target(spec, b).resolve(output)
    target.check(output[rows.to(output.device)])
    view = probe.subset(rows)
    if isinstance(target, SegmentationTarget) and view.segmentation is not None:
        view.masks, view.boxes = view.segmentation == target.category, None  # the category's region, per row
    captions = _captions(probe, rows, target, output[rows.to(output.device)], spec, class_names)
    return Explained(rows, target, captions, view)


def _showing(target: SegmentationTarget, truth: bool) -> tuple[Tensor, SegmentationTarget]:
    """The images whose mask of the category is not empty, and their target; a warning names the others.

    An empty mask scores 0 whatever the input, so its maps would be empty: those images are left out, not drawn.
    """
    assert target.mask is not None
    present = target.mask.flatten(1).any(1).cpu()  # [B]
    where = "in the probe's ground truth" if truth else "predicted"
    if not present.any():
        raise ValueError(
            f"{target!r}: no probe image has pixels of category {target.category} {where}, so there is nothing to "
            "explain. Pick a probe showing it (probe=dataset indices) or another category."
        )
    rows = present.nonzero().flatten()
    if not present.all():
        absent = (~present).nonzero().flatten().tolist()
        warnings.warn(
            f"SaliencyMonitor leaves out the probe images at positions {absent}: they have no pixels of category "
            f"{target.category} {where}, so their maps would be empty.",
            SaliencyWarning,
            stacklevel=2,
        )
    return rows, target[rows]


def _captions(
    probe: Probe,
    rows: Tensor,
    target: Target,
    output: Tensor,
    spec: TargetSpec,
    names: Sequence[str] | None,
) -> list[list[str]]:
    """Each row's caption lines.

    A classifier's rows as :func:`~lightning_saliency.render.row_labels` writes them (truth, prediction and its
    probability, the explained class when another); other targets say what they explain and its confidence (or its
    score, for targets without one).
    """
    rows_list = rows.tolist()
    indices = None if probe.indices is None else [probe.indices[r] for r in rows_list]
    if isinstance(target, ClassTarget) and isinstance(spec, (str, int)):
        confidence, predicted = output.float().softmax(1).max(1)
        labels = None if probe.labels is None else probe.labels[rows]
        return row_labels(
            predicted.cpu(),
            confidence.cpu(),
            labels=labels,
            explained=target.classes,
            indices=indices,
            class_names=names,
        )
    values = (target.confidence(output) if target.has_confidence else target.score(output)).float().cpu()
    captions = []
    for i, row in enumerate(rows_list):
        lines = [f"#{row}" + (f" (index {indices[i]})" if indices is not None else "")]
        if probe.multi_hot is not None:
            positives = probe.multi_hot[row].nonzero().flatten().tolist()
            lines.append("true: " + (", ".join(_label(p, names) for p in positives) or "none"))
        what = "p" if target.has_confidence else "value"
        lines.append(f"explains: {target.describe(i, names)} ({what} {float(values[i]):.2f})")
        captions.append(lines)
    return captions


def _label(index: int, names: Sequence[str] | None) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else str(index)
