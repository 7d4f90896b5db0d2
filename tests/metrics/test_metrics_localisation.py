import pytest
import torch

from lightning_saliency.metrics import (
    EnergyPointingGame,
    PointingGame,
    energy_pointing_game,
    pointing_game,
    region_masks,
)

CPU = torch.device("cpu")


def peak_map(row: int, col: int, size: int = 6) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[0, 0, row, col] = 1.0
    return m


def test_box_convention_x_is_column_half_open():
    mask = region_masks((1, 4, 5), boxes=torch.tensor([[1, 2, 3, 4]]), device=CPU)[0]
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[2:4, 1:3] = True  # rows y1:y2, columns x1:x2
    assert torch.equal(mask, expected)
    whole = region_masks((1, 4, 5), boxes=torch.tensor([[0, 0, 5, 4]]), device=CPU)
    assert whole.all()
    clipped = region_masks((1, 4, 5), boxes=torch.tensor([[-3, -3, 1, 1]]), device=CPU)[0]
    assert clipped.sum() == 1
    assert clipped[0, 0]


def test_pointing_game_hits_misses_and_tolerance():
    maps = torch.cat([peak_map(1, 4), peak_map(4, 1), peak_map(1, 2)])
    boxes = torch.tensor([[3, 0, 6, 3]] * 3)  # columns 3..5, rows 0..2
    torch.testing.assert_close(pointing_game(maps, boxes=boxes), torch.tensor([1.0, 0.0, 0.0]))
    # (1, 2) is 1 px left of the box; (4, 1) is sqrt(2^2 + 2^2) from the corner (2, 3)
    torch.testing.assert_close(pointing_game(maps, boxes=boxes, tolerance=1), torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(pointing_game(maps, boxes=boxes, tolerance=2.9), torch.tensor([1.0, 1.0, 1.0]))
    masks = region_masks((3, 6, 6), boxes=boxes, device=CPU)
    torch.testing.assert_close(pointing_game(maps, masks=masks), pointing_game(maps, boxes=boxes))


def test_constant_and_empty_cases_never_nan():
    zeros = torch.zeros(2, 1, 4, 4)
    boxes = torch.tensor([[0, 0, 4, 4], [0, 0, 0, 0]])
    assert torch.equal(pointing_game(zeros, boxes=boxes), torch.zeros(2))  # a constant map points nowhere
    assert torch.equal(energy_pointing_game(zeros, boxes=boxes), torch.zeros(2))
    ones = torch.ones(2, 1, 4, 4)
    torch.testing.assert_close(energy_pointing_game(ones, boxes=boxes), torch.tensor([1.0, 0.0]))  # empty box
    assert torch.equal(pointing_game(peak_map(0, 0, 4).repeat(2, 1, 1, 1), boxes=boxes), torch.tensor([1.0, 0.0]))


def test_energy_matches_scorecam_formula():
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 8, 10)
    boxes = torch.tensor([[1, 2, 5, 7], [0, 0, 10, 8], [6, 1, 9, 3]])
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        # Score-CAM utils/energyPointGame.py: empty[x1:x2, y1:y2] = 1 on a map indexed [x, y]; here map[row=y, col=x]
        empty = torch.zeros(10, 8)
        empty[x1:x2, y1:y2] = 1
        sal = maps[i, 0].T
        expected = (sal * empty).sum() / sal.sum()
        assert energy_pointing_game(maps[i : i + 1], boxes=boxes[i : i + 1]).item() == pytest.approx(expected.item())


def test_negative_values_count_as_zero():
    m = torch.tensor([[[[-5.0, 1.0], [1.0, 0.0]]]])
    torch.testing.assert_close(energy_pointing_game(m, boxes=torch.tensor([[1, 0, 2, 1]])), torch.tensor([0.5]))


def test_errors():
    with pytest.raises(ValueError, match="exactly one of boxes"):
        pointing_game(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"boxes must have shape \[B, 4\]"):
        pointing_game(torch.rand(2, 1, 4, 4), boxes=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="masks must have shape"):
        energy_pointing_game(torch.rand(2, 1, 4, 4), masks=torch.ones(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="tolerance must be"):
        PointingGame(tolerance=-1)


def test_functional_equals_modular_and_ddp_sum():
    torch.manual_seed(0)
    batches = [(torch.rand(n, 1, 6, 6), torch.randint(0, 3, (n, 4)).sort(1).values * 2) for n in (3, 2)]
    boxes_of = [torch.stack([b[:, 0], b[:, 1], b[:, 3], b[:, 2]], 1) for _, b in batches]  # valid-ish boxes
    for cls, fn in [(PointingGame, pointing_game), (EnergyPointingGame, energy_pointing_game)]:
        whole, r0, r1 = cls(), cls(), cls()
        for (maps, _), boxes in zip(batches, boxes_of, strict=True):
            whole.update(maps, boxes=boxes)
        r0.update(batches[0][0], boxes=boxes_of[0])
        r1.update(batches[1][0], boxes=boxes_of[1])
        expected = torch.cat([fn(m, boxes=b) for (m, _), b in zip(batches, boxes_of, strict=True)]).mean()
        torch.testing.assert_close(whole.compute(), expected)
        r0.merge_state(r1)
        torch.testing.assert_close(r0.compute(), expected)
        assert cls.higher_is_better is True


def test_localisation_iou_functional_equals_modular_and_handles_masks_and_empty():
    from lightning_saliency.metrics import LocalisationIoU, localisation_iou

    maps = torch.zeros(3, 1, 10, 10)
    maps[0, 0, 1:5, 2:6] = 1.0  # box (2, 1, 6, 5)
    maps[1, 0, 5:, 5:] = 1.0  # box (5, 5, 10, 10)
    # image 2: constant map -> empty prediction -> IoU 0
    boxes = torch.tensor([[2.0, 1.0, 6.0, 5.0], [5.0, 5.0, 10.0, 8.0], [0.0, 0.0, 4.0, 4.0]])
    iou = localisation_iou(maps, boxes=boxes)
    assert iou.tolist() == pytest.approx([1.0, 15 / 25, 0.0])
    metric = LocalisationIoU()
    metric.update(maps[:2], boxes=boxes[:2])
    metric.update(maps[2:], boxes=boxes[2:])
    assert metric.compute().item() == pytest.approx(iou.mean().item())
    masks = maps[:, 0] > 0
    assert localisation_iou(maps, masks=masks).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="needs boxes"):
        localisation_iou(maps)
