"""ConfusionMatrix: definitions on a hand-computed example, nan for absent classes, ignore label, bad input."""

import math

import pytest
import torch

from deeplab_fast.metrics import ConfusionMatrix, format_table


def test_known_values():
    target = torch.tensor([[0, 0, 1, 1], [1, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred[:1], target[:1])
    cm.update(pred[1:], target[1:])
    # rows = target: class 0: [1, 1, 0], class 1: [1, 2, 0], class 2: [0, 0, 2]; class 3 absent everywhere
    assert cm.matrix[:3, :3].tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 2]]
    r = cm.compute()
    iou = [1 / 3, 2 / 4, 1.0]
    assert r["IoU"][:3] == pytest.approx(iou) and math.isnan(r["IoU"][3])
    assert r["mIoU"] == pytest.approx(sum(iou) / 3)  # nanmean: the absent class does not count as 0
    assert r["pixel_acc"] == pytest.approx(5 / 7)
    assert r["mean_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert r["fw_IoU"] == pytest.approx((2 * iou[0] + 3 * iou[1] + 2 * iou[2]) / 7)
    table = format_table(r, ["bg", "a", "b", "c"])
    assert "n/a" in table and f"{100 * r['mIoU']:6.2f}" in table


def test_class_only_in_prediction_counts_as_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    r = cm.compute()
    assert r["IoU"][2] == 0.0 and math.isnan(r["IoU"][1])
    assert r["mIoU"] == pytest.approx((0.5 + 0.0) / 2)


def test_bad_input():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="argmax"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target has class indices outside 0..2"):
        cm.update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 3, 255]))
    with pytest.raises(ValueError, match="pred has class"):
        cm.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    assert cm.matrix.sum() == 0  # failed updates add nothing
    cm.all_reduce()  # outside a distributed run: a no-op
    assert all(math.isnan(v) for k, v in cm.compute().items() if k != "IoU")
