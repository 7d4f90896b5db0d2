"""Probe selection: deterministic, class-balanced, regions from dict samples, never an inference tensor."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_saliency.probe import Probe, balanced_positions, probe_from_dataloader, probe_from_dataset


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        mask = torch.zeros(6, 5, dtype=torch.bool)
        mask[: 1 + i % 4, :2] = True
        return {"image": torch.full((1, 6, 5), float(i)), "label": i // 5, "box": [0, 0, 2, 1 + i % 4], "mask": mask}


def test_balanced_positions_round_robin_and_unlabelled():
    assert balanced_positions([2, 2, 1, 1, 0], 3) == [4, 2, 0]
    assert balanced_positions([0, 0, 0], 5) == [0, 1, 2]
    assert balanced_positions([None, 1, 2], 2) == [0, 1]


def test_probe_from_dict_dataset_takes_boxes_and_masks_balanced():
    probe = probe_from_dataset(DictDataset(20), 4)
    assert probe.inputs.shape == (4, 1, 6, 5)
    assert sorted(probe.labels.tolist()) == [0, 1, 2, 3]  # 4 classes of 5 samples each
    assert probe.boxes.shape == (4, 4)
    assert probe.masks.shape == (4, 6, 5)
    assert probe.masks.dtype == torch.bool
    i = probe.indices[1]
    assert probe.inputs[1].eq(float(i)).all()
    assert probe.boxes[1].tolist() == [0, 0, 2, 1 + i % 4]
    assert probe_from_dataset(DictDataset(20), 4).indices == probe.indices  # deterministic


def test_probe_indices_errors_and_empty_dataset():
    with pytest.raises(ValueError, match=r"probe indices must be in \[0, 19\].*got \[25\]"):
        probe_from_dataset(DictDataset(20), 2, indices=[1, 25])
    with pytest.raises(ValueError, match="empty validation dataset"):
        probe_from_dataset(DictDataset(0), 2)


def test_probe_from_iterable_dataloader():
    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(40):
                yield torch.randn(3, 4, 4), i % 2

    probe = probe_from_dataloader(DataLoader(Stream(), batch_size=8), 4)
    assert probe.inputs.shape == (4, 3, 4, 4)
    assert probe.labels.tolist() == [0, 1, 0, 1]
    assert probe.indices is None


def test_probe_made_from_inference_tensors_is_a_normal_tensor():
    with torch.inference_mode():
        x = torch.randn(2, 3, 4, 4)
        probe = Probe(x, torch.tensor([0, 1]))
    assert not torch.is_inference(probe.inputs)
    assert not torch.is_inference(probe.labels)
    probe.inputs.requires_grad_(True)  # would raise for an inference tensor


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": torch.tensor([0.5, 1.0])}, r"labels must be integer class indices of shape \[B=2\]"),
        ({"boxes": torch.zeros(2, 3)}, r"probe boxes must have shape \[B=2, 4\].*got \(2, 3\)"),
        ({"masks": torch.zeros(2, 4, 5)}, r"probe masks must have shape \[B=2, H=4, W=4\], got \(2, 4, 5\)"),
    ],
)
def test_probe_validates_shapes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Probe(torch.zeros(2, 3, 4, 4), **kwargs)
