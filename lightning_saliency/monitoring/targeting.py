"""Phase 1b, what each row of the probe explains: the monitor's ``targets=`` resolved on the whole probe.

Every rank resolves the same targets on the same whole probe (one forward without gradients), so the rows, and so
the shards, are the same everywhere: a multi-label probe has one row per (image, positive label), chosen here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run, eval_mode, module_device, preserved_rng
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
        rows: ``[R]`` the probe image of each row (one per image, or one per (image, label) when multi-label).
        target: What each of the ``R`` rows explains.
        captions: Each row's caption lines (position and index, truth, prediction or what it explains).
    """

    rows: Tensor
    target: Target
    captions: list[list[str]]


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
    elif isinstance(spec, SegmentationTarget) and spec.mask is None and probe.segmentation is not None:
        target = spec.with_mask(probe.segmentation)  # the probe's ground truth of the category
    else:
        target = as_target(spec, b).resolve(output)
    target.check(output[rows.to(output.device)])
    return Explained(rows, target, _captions(probe, rows, target, output[rows.to(output.device)], spec, class_names))


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
