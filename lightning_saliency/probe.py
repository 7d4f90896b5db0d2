"""The probe batch: a fixed set of images whose saliency maps are followed from epoch to epoch.

It is chosen once, deterministically, and lives on the CPU as a normal tensor (never an inference-mode one,
so gradients can flow through it in ``trainer.validate``/``test``); it is moved to the trainer's device each
time it is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_saliency._runtime import preserved_rng
from lightning_saliency.exceptions import SaliencyWarning

__all__ = [
    "Probe",
    "balanced_positions",
    "data_class_names",
    "probe_from_dataloader",
    "probe_from_dataset",
    "probe_from_trainer",
    "split_sample",
]

_INPUT_KEYS = ("image", "images", "input", "inputs", "x", "pixel_values", "img")
_LABEL_KEYS = ("label", "labels", "target", "targets", "y", "class", "cls")
_BOX_KEYS = ("box", "boxes", "bbox")
_MASK_KEYS = ("mask", "masks", "segmentation")
_SCAN_FACTOR = 16  # candidates scanned per requested sample when balancing classes


@dataclass
class Probe:
    """A fixed batch of inputs with what the data says about them.

    Attributes:
        inputs: ``[B, C, H, W]`` images, or ``[B, C, D, H, W]`` volumes (video: ``[B, C, T, H, W]``), float, on the
            CPU.
        labels: ``[B]`` long class labels, or ``None`` if the data carried none.
        indices: The dataset indices the samples were taken from, if they came from a map-style dataset.
        boxes: ``[B, 4]`` ground-truth object boxes ``(x1, y1, x2, y2)`` in pixels (x = column; half-open), or
            ``[B, 6]`` ``(x1, y1, z1, x2, y2, z2)`` for volumes (z = depth), for localisation scores; ``None`` if
            unknown.
        masks: ``[B, H, W]`` (``[B, D, H, W]``) bool ground-truth object masks; ``None`` if unknown.
        multi_hot: ``[B, L]`` float ground-truth labels of a multi-label task (non-zero = positive), or ``None``.
        segmentation: ``[B, H, W]`` (``[B, D, H, W]``) long ground-truth category of each pixel, or ``None``.
    """

    inputs: Tensor
    labels: Tensor | None = None
    indices: list[int] | None = None
    boxes: Tensor | None = None
    masks: Tensor | None = None
    multi_hot: Tensor | None = None
    segmentation: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or self.inputs.ndim not in (4, 5):
            got = tuple(self.inputs.shape) if isinstance(self.inputs, Tensor) else type(self.inputs).__name__
            raise ValueError(f"probe inputs must be a Tensor [B, C, H, W], got {got} (volumes: [B, C, D, H, W]).")
        if not self.inputs.is_floating_point():
            raise ValueError(
                f"probe inputs must be floating point (as the model sees them), got dtype {self.inputs.dtype}. "
                "Convert uint8 images with the same transform the validation data uses."
            )
        with torch.inference_mode(False):
            self.inputs = self.inputs.detach().to("cpu", copy=True).contiguous()
            _warn_non_finite(self.inputs)
            b, spatial = self.inputs.shape[0], tuple(self.inputs.shape[2:])
            if self.labels is not None:
                labels = torch.as_tensor(self.labels)
                if labels.shape != (b,) or labels.is_floating_point():
                    raise ValueError(
                        f"probe labels must be integer class indices of shape [B={b}], got shape "
                        f"{tuple(labels.shape)} and dtype {labels.dtype}."
                    )
                self.labels = labels.detach().to("cpu", torch.long, copy=True)
            if self.boxes is not None:
                boxes = torch.as_tensor(self.boxes)
                corners = 2 * len(spatial)
                if boxes.shape != (b, corners):
                    want = "(x1, y1, x2, y2)" if corners == 4 else "(x1, y1, z1, x2, y2, z2)"
                    raise ValueError(
                        f"probe boxes must have shape [B={b}, {corners}] {want}, got {tuple(boxes.shape)}."
                    )
                self.boxes = boxes.detach().to("cpu", torch.float32, copy=True)
            self.masks = _checked_map(self.masks, b, spatial, torch.bool, "masks")
            self.segmentation = _checked_map(self.segmentation, b, spatial, torch.long, "segmentation")
            if self.multi_hot is not None:
                multi_hot = torch.as_tensor(self.multi_hot)
                if multi_hot.ndim != 2 or multi_hot.shape[0] != b:
                    raise ValueError(
                        f"probe multi_hot labels must have shape [B={b}, L], got {tuple(multi_hot.shape)}."
                    )
                self.multi_hot = multi_hot.detach().to("cpu", torch.float32, copy=True)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, rows: Sequence[int] | Tensor) -> Probe:
        """The probe restricted to ``rows`` (in that order; repeats allowed)."""
        idx = torch.as_tensor(rows if isinstance(rows, Tensor) else list(rows), dtype=torch.long).cpu()

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx]

        indices = None if self.indices is None else [self.indices[int(i)] for i in idx]
        with warnings.catch_warnings():  # this probe was checked (and warned about) when it was made
            warnings.simplefilter("ignore", SaliencyWarning)
            return Probe(
                self.inputs[idx],
                pick(self.labels),
                indices,
                pick(self.boxes),
                pick(self.masks),
                pick(self.multi_hot),
                pick(self.segmentation),
            )


def _checked_map(value: Any, b: int, spatial: tuple[int, ...], dtype: torch.dtype, arg: str) -> Tensor | None:
    """A per-pixel ground truth ``[B, *spatial]`` (``[B, 1, *spatial]`` accepted), as ``dtype`` on the CPU."""
    if value is None:
        return None
    values = torch.as_tensor(value)
    if values.ndim == len(spatial) + 2 and values.shape[1] == 1:
        values = values[:, 0]
    if tuple(values.shape) != (b, *spatial):
        want = ", ".join(f"{n}={v}" for n, v in zip(("D", "H", "W")[-len(spatial) :], spatial, strict=True))
        raise ValueError(f"probe {arg} must have shape [B={b}, {want}], got {tuple(values.shape)}.")
    return values.detach().to("cpu", dtype, copy=True)


def _warn_non_finite(inputs: Tensor) -> None:
    """Warn if some probe images contain NaN or Inf: their maps are then all zeros (never NaN) and meaningless."""
    bad = (~torch.isfinite(inputs)).flatten(1).any(1)  # [B]
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        warnings.warn(
            f"Saliency probe images {rows} contain NaN or Inf values; their maps and scores are meaningless (maps "
            "of non-finite values are set to 0). Check the data pipeline, or pass a clean `probe=`.",
            SaliencyWarning,
            stacklevel=3,
        )


def _warn_small(found: int, num_samples: int, where: str) -> None:
    if found < num_samples:
        warnings.warn(
            f"SaliencyMonitor asked for a probe of num_samples={num_samples} images, but the {where} has only "
            f"{found}; using all {found}.",
            SaliencyWarning,
            stacklevel=3,
        )


def split_sample(sample: Any) -> tuple[Tensor, Any]:
    """``(input, label or None)`` from a dataset sample or batch: a tensor, a tuple/list, or a dict.

    Raises:
        TypeError: If no input tensor can be found.

    Example:
        >>> x, y = split_sample({"image": torch.zeros(3, 2, 2), "label": 4})
        >>> tuple(x.shape), y
        ((3, 2, 2), 4)
    """
    if isinstance(sample, Tensor):
        return sample, None
    if isinstance(sample, (tuple, list)) and sample and isinstance(sample[0], Tensor):
        return sample[0], sample[1] if len(sample) > 1 else None
    if isinstance(sample, Mapping):
        x = next((sample[k] for k in _INPUT_KEYS if k in sample and isinstance(sample[k], Tensor)), None)
        y = next((sample[k] for k in _LABEL_KEYS if k in sample), None)
        if x is not None:
            return x, y
    raise TypeError(
        f"Cannot find the input image in a validation sample of type {type(sample).__name__}"
        f"{' with keys ' + str(list(sample)) if isinstance(sample, Mapping) else ''}. Expected a Tensor, a "
        f"(input, label) tuple, or a dict with one of the keys {_INPUT_KEYS}; or pass `probe=` explicitly."
    )


def _region(sample: Any, keys: tuple[str, ...]) -> Tensor | None:
    """A ground-truth box or mask carried by a dict sample (keys such as ``"box"`` or ``"mask"``), if any."""
    if not isinstance(sample, Mapping):
        return None
    value = next((sample[k] for k in keys if k in sample), None)
    return None if value is None else torch.as_tensor(value)


def _as_label(y: Any) -> int | None:
    if y is None:
        return None
    if isinstance(y, Tensor):
        return int(y.item()) if y.numel() == 1 and not y.is_floating_point() else None
    return int(y) if isinstance(y, int) else None


def balanced_positions(labels: Sequence[int | None], num: int) -> list[int]:
    """Positions of ``num`` items taken round-robin over the classes (in class order), earliest first.

    Without labels it is simply the first ``num``.

    Example:
        >>> balanced_positions([0, 0, 0, 1, 1, 2], 4)
        [0, 3, 5, 1]
    """
    if any(label is None for label in labels):
        return list(range(min(num, len(labels))))
    by_class: dict[int, list[int]] = {}
    for pos, label in enumerate(labels):
        assert label is not None
        by_class.setdefault(label, []).append(pos)
    queues = [by_class[c] for c in sorted(by_class)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < num and any(depth < len(q) for q in queues):
        chosen.extend(q[depth] for q in queues if depth < len(q) and len(chosen) < num)
        depth += 1
    return chosen


def _evenly_spaced(n: int, m: int) -> list[int]:
    if m >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(m - 1, 1)) for i in range(m)})


def probe_from_dataset(dataset: Any, num_samples: int, indices: Sequence[int] | None = None) -> Probe:
    """Take a probe from a map-style dataset, by ``indices`` or chosen deterministically and class-balanced.

    Without ``indices``, up to ``16 * num_samples`` evenly spaced samples are scanned and ``num_samples`` taken
    round-robin over their classes, so a dataset sorted by class still gives a mixed probe. Dict samples may
    carry a ground-truth ``"box"`` (x1, y1, x2, y2) or ``"mask"`` ([H, W]) for the localisation scores.

    Raises:
        ValueError: If the dataset is empty or an index is out of range.

    Warns:
        SaliencyWarning: If the dataset has fewer than ``num_samples`` samples (all are used), or probe images
            contain NaN/Inf.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("Cannot take a saliency probe from an empty validation dataset.")
    if indices is not None:
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"probe indices must be in [0, {n - 1}] for a dataset of {n} samples, got {bad}.")
        chosen = [int(i) for i in indices]
    else:
        candidates = _evenly_spaced(n, num_samples * _SCAN_FACTOR)
        labels = [_as_label(split_sample(dataset[i])[1]) for i in candidates]
        chosen = [candidates[p] for p in balanced_positions(labels, num_samples)]
        _warn_small(n, num_samples, "validation dataset")
    raw = [dataset[i] for i in chosen]
    return _stack(
        [split_sample(r) for r in raw],
        chosen,
        [_region(r, _BOX_KEYS) for r in raw],
        [_region(r, _MASK_KEYS) for r in raw],
    )


def probe_from_dataloader(batches: Iterable[Any], num_samples: int) -> Probe:
    """Take a class-balanced probe from the first batches of a dataloader (for iterable datasets).

    Raises:
        ValueError: If the dataloader yields no samples.

    Warns:
        SaliencyWarning: If it yields fewer than ``num_samples`` samples (all are used), or images with NaN/Inf.
    """
    scanned: list[tuple[Tensor, Any]] = []
    for batch in batches:
        x, y = split_sample(batch)
        ys: list[Any] = list(y) if isinstance(y, (Tensor, list, tuple)) else [None] * x.shape[0]
        scanned.extend(zip(x.unbind(0), ys, strict=False))
        if len(scanned) >= num_samples * _SCAN_FACTOR:
            break
    if not scanned:
        raise ValueError("Cannot take a saliency probe: the validation dataloader yielded no samples.")
    _warn_small(len(scanned), num_samples, "validation dataloader")
    positions = balanced_positions([_as_label(y) for _, y in scanned], num_samples)
    return _stack([scanned[p] for p in positions], None)


def _stack(
    samples: list[tuple[Tensor, Any]],
    indices: list[int] | None,
    boxes: Sequence[Tensor | None] = (),
    masks: Sequence[Tensor | None] = (),
) -> Probe:
    """A probe from ``(input, target)`` samples, with the boxes and masks of dict samples.

    What each target is (a class, multi-hot labels, a per-pixel mask) is read from its shape; boxes, masks, labels
    come along when every sample has one.
    """
    with torch.inference_mode(False):
        inputs = torch.stack([x.detach().clone() for x, _ in samples])  # [B,C,H,W] or [B,C,D,H,W]
        ys = [y for _, y in samples]
        labels_list = [_as_label(y) for y in ys]
        labels = None if any(lab is None for lab in labels_list) else torch.tensor(labels_list, dtype=torch.long)
        spatial = inputs.ndim - 2
        multi_hot = _stacked([y if _is_multi_hot(y) else None for y in ys])
        per_pixel = [y if isinstance(y, Tensor) and y.ndim >= spatial else None for y in ys]
        regions = [m if m is not None else p for m, p in zip(list(masks) or [None] * len(ys), per_pixel, strict=True)]
        segmentation = _stacked([None if m is None else m.squeeze().long() for m in regions])
        found_boxes = _stacked([None if b is None else b.float().flatten()[: 2 * spatial] for b in boxes])
        return Probe(
            inputs=inputs,
            labels=labels,
            indices=indices,
            boxes=found_boxes,
            masks=None if segmentation is None else segmentation != 0,
            multi_hot=multi_hot,
            segmentation=segmentation,
        )


def _is_multi_hot(y: Any) -> bool:
    return isinstance(y, Tensor) and y.ndim == 1 and y.numel() > 1


def _stacked(parts: Sequence[Tensor | None]) -> Tensor | None:
    """The parts stacked (copies), when every sample has one."""
    if not parts or any(p is None for p in parts):
        return None
    return torch.stack([p.detach().clone() for p in parts if p is not None])


def _stage_loader(trainer: Any, stage: str) -> Any:
    """The first dataloader of ``stage`` (``"validate"`` or ``"test"``) of a Lightning trainer."""
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    if loader is None:
        raise ValueError(f"SaliencyMonitor needs {stage} data to take its probe from, or `probe=`.")
    return loader


def _map_style(dataset: Any) -> bool:
    return dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def probe_from_trainer(trainer: Any, stage: str, num_samples: int, indices: Sequence[int] | None = None) -> Probe:
    """The probe of a Lightning stage, taken from its first dataloader without touching training's RNG streams.

    From a map-style dataset by ``indices``, or ``num_samples`` chosen deterministically and class-balanced
    (:func:`probe_from_dataset`); from an iterable dataset, its first batches (:func:`probe_from_dataloader`).

    Raises:
        ValueError: If the stage has no data, or ``indices`` are given for an iterable dataset.
    """
    loader = _stage_loader(trainer, stage)
    dataset = getattr(loader, "dataset", None)
    with preserved_rng([trainer.strategy.root_device]), torch.inference_mode(False):
        if _map_style(dataset):
            return probe_from_dataset(dataset, num_samples, indices)
        if indices is not None:
            raise ValueError("probe indices need a map-style validation dataset (with __len__/__getitem__).")
        return probe_from_dataloader(loader, num_samples)


def data_class_names(trainer: Any, stage: str) -> list[str] | None:
    """The ``classes`` (a sequence of names) of the stage's dataset or of the datamodule, if either has one.

    Example:
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(dataset=SimpleNamespace(classes=["cat", "dog"]))
        >>> data_class_names(SimpleNamespace(val_dataloaders=data, datamodule=None), "validate")
        ['cat', 'dog']
    """
    dataset = getattr(_stage_loader(trainer, stage), "dataset", None)
    for owner in (dataset, getattr(trainer, "datamodule", None)):
        classes = getattr(owner, "classes", None)
        if isinstance(classes, Sequence) and not isinstance(classes, str) and all(isinstance(c, str) for c in classes):
            return list(classes)
    return None
