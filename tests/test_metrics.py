import math

import pytest
import torch

from ftkit.metrics import ClassificationMetrics, SegmentationMetrics


def _seg(target: list[list[int]], preds: list[list[int]], num_classes: int = 3) -> dict:
    m = SegmentationMetrics(num_classes)
    m.update(torch.tensor([preds]), torch.tensor([target]))
    return m.compute()


def test_perfect_prediction():
    target = [[0, 1], [2, 2]]
    r = _seg(target, target)
    assert r["miou"] == r["pixel_accuracy"] == r["mean_accuracy"] == r["dice"] == 1.0
    assert r["iou_per_class"] == r["accuracy_per_class"] == r["dice_per_class"] == [1.0] * 3
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_three_class_example():
    target = [[0, 0, 1], [1, 1, 2], [2, 2, 2]]
    preds = [[0, 1, 1], [1, 0, 2], [2, 1, 0]]
    r = _seg(target, preds)
    # rows = truth, cols = prediction
    assert r["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [1, 1, 2]]
    # TP = [1, 2, 2], truth totals = [2, 3, 4], predicted totals = [3, 4, 2]
    # IoU = TP / (truth + pred - TP) = 1/(2+3-1), 2/(3+4-2), 2/(4+2-2)
    assert r["iou_per_class"] == pytest.approx([1 / 4, 2 / 5, 1 / 2])
    assert r["miou"] == pytest.approx(23 / 60)  # (15/60 + 24/60 + 30/60) / 3
    assert r["pixel_accuracy"] == pytest.approx(5 / 9)  # (1 + 2 + 2) / 9
    # recall = TP / truth = 1/2, 2/3, 2/4
    assert r["accuracy_per_class"] == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert r["mean_accuracy"] == pytest.approx(5 / 9)  # (1/2 + 2/3 + 1/2) / 3
    # Dice = 2 TP / (truth + pred) = 2/(2+3), 4/(3+4), 4/(4+2)
    assert r["dice_per_class"] == pytest.approx([2 / 5, 4 / 7, 2 / 3])
    assert r["dice"] == pytest.approx(172 / 315)  # (42/105 + 60/105 + 70/105) / 3


def test_ignored_pixels_do_not_count():
    # uint8 masks are the common on-disk format; 255 marks "void".
    target = torch.tensor([[[0, 255, 1], [255, 1, 255]]], dtype=torch.uint8)
    preds = torch.tensor([[[0, 1, 1], [2, 1, 0]]])
    m = SegmentationMetrics(3)
    m.update(preds, target)
    r = m.compute()
    # Only (0,0), (1,1), (1,1) remain: 3 pixels, all correct.
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert r["pixel_accuracy"] == 1.0
    assert r["miou"] == 1.0  # class 2 was only predicted on ignored pixels, so it is absent


def test_absent_class_is_nan_and_predicted_only_class_has_iou_zero():
    # class 2 only predicted, class 3 in neither truth nor prediction
    r = _seg([[0, 0, 1, 1]], [[0, 2, 1, 1]], num_classes=4)
    iou = r["iou_per_class"]
    # IoU = 1/(2+1-1), 2/(2+2-2), 0/(0+1-0), 0/0
    assert iou[:3] == pytest.approx([1 / 2, 1.0, 0.0])
    assert math.isnan(iou[3])
    assert r["miou"] == pytest.approx(1 / 2)  # (1/2 + 1 + 0) / 3, class 3 left out
    acc = r["accuracy_per_class"]
    assert acc[:2] == pytest.approx([1 / 2, 1.0])
    assert math.isnan(acc[2]) and math.isnan(acc[3])  # neither is in the truth
    assert r["mean_accuracy"] == pytest.approx(3 / 4)  # (1/2 + 1) / 2
    # Dice = 2/(2+1), 4/(2+2), 0/(0+1)
    assert r["dice_per_class"][:3] == pytest.approx([2 / 3, 1.0, 0.0])
    assert math.isnan(r["dice_per_class"][3])
    assert r["dice"] == pytest.approx(5 / 9)  # (2/3 + 1 + 0) / 3


def test_logits_equal_argmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=gen)
    target = torch.randint(0, 4, (2, 5, 6), generator=gen)
    from_logits, from_ids = SegmentationMetrics(4), SegmentationMetrics(4)
    from_logits.update(logits, target)
    from_ids.update(logits.argmax(dim=1), target)
    assert torch.equal(from_logits.state, from_ids.state)
    assert from_logits.state.sum() == 2 * 5 * 6


def test_accumulation_equals_one_update_on_concatenation():
    gen = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 3, (6, 4, 4), generator=gen)
    target = torch.randint(0, 3, (6, 4, 4), generator=gen)
    target[target == 2] = 255
    batched, whole = SegmentationMetrics(3), SegmentationMetrics(3)
    for chunk in range(3):
        batched.update(preds[2 * chunk : 2 * chunk + 2], target[2 * chunk : 2 * chunk + 2])
    whole.update(preds, target)
    assert torch.equal(batched.state, whole.state)
    assert batched.compute()["miou"] == whole.compute()["miou"]


@pytest.mark.parametrize("bad", [3, -1, 254])
def test_target_out_of_range_raises(bad):
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=rf"target values \[{bad}\]"):
        m.update(torch.tensor([[0, 1]]), torch.tensor([[0, bad]]))
    assert m.state.sum() == 0  # a rejected batch leaves no partial counts


def test_bad_inputs_raise():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"prediction values \[7\]"):
        m.update(torch.tensor([[0, 7]]), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="integer class ids"):
        m.update(torch.tensor([[0, 1]]), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="logits"):
        m.update(torch.zeros(1, 4, 1, 2), torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1]]))


def test_no_pixels_gives_nan_not_error():
    m = SegmentationMetrics(2)
    m.update(torch.tensor([[0, 1]]), torch.tensor([[255, 255]]))
    r = m.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_accuracy"]) and math.isnan(r["dice"])
    assert r["confusion_matrix"] == [[0, 0], [0, 0]]


def test_reset_and_summed_state():
    a, b, both = SegmentationMetrics(3), SegmentationMetrics(3), SegmentationMetrics(3)
    a.update(torch.tensor([[0, 1]]), torch.tensor([[0, 2]]))
    b.update(torch.tensor([[2, 2]]), torch.tensor([[2, 1]]))
    both.update(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 2, 2, 1]]))
    a.load_state(a.state + b.state)  # what all_reduce(SUM) across two ranks does
    assert torch.equal(a.state, both.state)
    a.reset()
    assert a.state.sum() == 0
    assert math.isnan(a.compute()["miou"])


# Six classes, so a target can fall outside the top 5; logit values are distinct ranks.
_LOGITS = torch.tensor(
    [
        [5.0, 4, 3, 2, 1, 0],  # target 0: predicted 0, top-5 hit
        [0.0, 4, 5, 3, 2, 1],  # target 1: predicted 2, ranked 2nd, top-5 hit
        [1.0, 2, 0, 3, 4, 5],  # target 2: predicted 5, ranked last, top-5 miss
        [0.0, 5, 1, 2, 3, 4],  # target 1: predicted 1, top-5 hit
    ]
)
_TARGET = torch.tensor([0, 1, 2, 1])


def test_classification_example():
    m = ClassificationMetrics(6)
    m.update(_LOGITS, _TARGET)
    r = m.compute()
    assert r["accuracy"] == 2 / 4
    assert r["top5"] == 3 / 4
    # TP = [1, 1, 0, 0, 0, 0], truth = [1, 2, 1, 0, 0, 0], predicted = [1, 1, 1, 0, 0, 1]
    # F1 = 2 TP / (truth + pred) = 2/2, 2/3, 0/2, 0/0, 0/0, 0/1
    f1 = r["f1_per_class"]
    assert f1[:3] == pytest.approx([1.0, 2 / 3, 0.0]) and f1[5] == 0.0
    assert math.isnan(f1[3]) and math.isnan(f1[4])
    assert r["macro_f1"] == pytest.approx(5 / 12)  # (1 + 2/3 + 0 + 0) / 4
    assert r["confusion_matrix"][1] == [0, 1, 1, 0, 0, 0]
    assert r["confusion_matrix"][2] == [0, 0, 0, 0, 0, 1]


def test_classification_accumulates_and_resets():
    m = ClassificationMetrics(6)
    m.update(_LOGITS[:1], _TARGET[:1])
    m.update(_LOGITS[1:], _TARGET[1:])
    whole = ClassificationMetrics(6)
    whole.update(_LOGITS, _TARGET)
    assert torch.equal(m.state, whole.state)
    m.reset()
    r = m.compute()
    assert m.state.sum() == 0
    assert math.isnan(r["accuracy"]) and math.isnan(r["top5"]) and math.isnan(r["macro_f1"])


def test_classification_ids_and_top5_key():
    m = ClassificationMetrics(6)
    m.update(_LOGITS.argmax(dim=1), _TARGET)
    r = m.compute()
    assert r["accuracy"] == 2 / 4
    assert math.isnan(r["top5"])  # class ids alone cannot be ranked
    small = ClassificationMetrics(3)
    small.update(torch.tensor([[0.1, 0.9, 0.0]]), torch.tensor([1]))
    assert "top5" not in small.compute()
    with pytest.raises(ValueError, match=r"target values \[3\]"):
        small.update(torch.tensor([0]), torch.tensor([3]))
