"""SemanticEvaluator against hand-computed confusion-matrix metrics."""

import math

import numpy as np
import pytest

from ovseg.evaluation import SemanticEvaluator

IGNORE = 255


def hand_case():
    """(gt, pred) pairs after dropping ignore: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2).

    class 0: TP 2, gt 3, pred 2 -> IoU 2/3, acc 2/3
    class 1: TP 1, gt 2, pred 2 -> IoU 1/3, acc 1/2
    class 2: TP 1, gt 1, pred 2 -> IoU 1/2, acc 1
    """
    gt = np.array([[0, 0, 0, 1], [1, 2, IGNORE, IGNORE]])
    pred = np.array([[0, 0, 1, 1], [2, 2, 0, 1]])
    return pred, gt


def test_three_classes_with_ignore_by_hand():
    evaluator = SemanticEvaluator(3, class_names=["road", "car", "sky"])
    evaluator.update(*hand_case())
    results = evaluator.compute()
    assert results["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert results["fwIoU"] == pytest.approx(100 * (3 / 6 * 2 / 3 + 2 / 6 * 1 / 3 + 1 / 6 * 1 / 2))
    assert results["mACC"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    assert results["pACC"] == pytest.approx(100 * 4 / 6)
    assert results["per_class_iou"] == pytest.approx({"road": 200 / 3, "car": 100 / 3, "sky": 50.0})
    assert "mIoU_seen" not in results
    table = SemanticEvaluator.format_table(results)
    assert "mIoU" in table and "50.00" in table


def test_accumulates_over_images():
    evaluator = SemanticEvaluator(3)
    pred, gt = hand_case()
    evaluator.update(pred, gt)
    evaluator.update(np.array([[0]]), np.array([[1]]))  # one more car pixel called road
    results = evaluator.compute()
    # road: TP 2, gt 3, pred 3 -> 2/4; car: TP 1, gt 3, pred 2 -> 1/4; sky unchanged 1/2.
    assert results["mIoU"] == pytest.approx(100 * (1 / 2 + 1 / 4 + 1 / 2) / 3)
    assert results["pACC"] == pytest.approx(100 * 4 / 7)


def test_class_absent_from_gt_and_prediction_is_nan_and_excluded():
    evaluator = SemanticEvaluator(4)
    evaluator.update(*hand_case())
    results = evaluator.compute()
    assert math.isnan(results["per_class_iou"]["3"])
    assert results["mIoU"] == pytest.approx(50.0)
    assert results["mACC"] == pytest.approx(100 * 13 / 18)


def test_class_predicted_but_absent_from_gt_follows_detectron2():
    # detectron2's SemSegEvaluator: IoU is NaN (excluded from the mean) without gt pixels;
    # the wrong pixel still lowers the IoU of the gt class it covers.
    evaluator = SemanticEvaluator(2)
    evaluator.update(np.array([[0, 1]]), np.array([[0, 0]]))
    results = evaluator.compute()
    assert math.isnan(results["per_class_iou"]["1"])
    assert results["mIoU"] == pytest.approx(50.0)
    assert results["mACC"] == pytest.approx(50.0)


def test_seen_unseen_means():
    evaluator = SemanticEvaluator(3, seen=[True, False, True])
    evaluator.update(*hand_case())
    results = evaluator.compute()
    assert results["mIoU_seen"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert results["mIoU_unseen"] == pytest.approx(100 / 3)


def test_only_ignore_pixels_gives_nan_not_crash():
    evaluator = SemanticEvaluator(3)
    evaluator.update(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), IGNORE))
    results = evaluator.compute()
    assert all(math.isnan(results[k]) for k in ("mIoU", "fwIoU", "mACC", "pACC"))


def test_bad_inputs_raise():
    evaluator = SemanticEvaluator(3)
    with pytest.raises(ValueError, match="shapes differ"):
        evaluator.update(np.zeros((2, 3), dtype=np.int64), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="prediction has class 3"):
        evaluator.update(np.array([[3]]), np.array([[0]]))
    with pytest.raises(ValueError, match="gt has class 7"):
        evaluator.update(np.array([[0]]), np.array([[7]]))
    # The predicted value at an ignored gt pixel is never looked at.
    evaluator.update(np.array([[0, 9]]), np.array([[0, IGNORE]]))
    assert evaluator.confusion.sum() == 1
