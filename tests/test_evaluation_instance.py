"""InstanceEvaluator against pycocotools' COCOeval driven directly from hand-built dicts."""

import math

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ovseg.evaluation import InstanceEvaluator

CATEGORIES = [{"id": i, "name": name} for i, name in enumerate(["person", "car", "dog"])]
DATASET_IDS = [1, 3, 18]  # arbitrary dataset ids for the direct pycocotools run
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def rectangle(height, width, y0, x0, y1, x1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def ellipse(height, width, y0, x0, y1, x1):
    """The ellipse inscribed in rows y0..y1-1, columns x0..x1-1 (not a box, so that mask and
    box AP differ)."""
    ys, xs = np.mgrid[0:height, 0:width]
    cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
    ry, rx = max((y1 - y0) / 2, 0.5), max((x1 - x0) / 2, 0.5)
    return ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1


def random_case(rng, num_images=6, height=80, width=100):
    """Per image: gt (masks, labels, iscrowd) and predictions (masks, scores, labels, boxes).
    Image 2 has no predictions; predictions are shifted / resized gt plus spurious ellipses."""
    images = []
    for index in range(num_images):
        count = int(rng.integers(2, 8))
        gt_masks, gt_labels = [], []
        for _ in range(count):
            y0, x0 = rng.integers(0, height - 10), rng.integers(0, width - 10)
            h, w = rng.integers(4, 45), rng.integers(4, 60)
            gt_masks.append(ellipse(height, width, y0, x0, y0 + h, x0 + w))
            gt_labels.append(int(rng.integers(0, 3)))
        iscrowd = rng.random(count) < 0.2
        pred_masks, pred_labels = [], []
        if index != 2:
            for mask, label in zip(gt_masks, gt_labels, strict=True):
                if rng.random() < 0.2:
                    continue
                ys, xs = np.nonzero(mask)
                dy, dx = rng.integers(-2, 3, size=2)
                grow = rng.integers(-1, 3)
                y0, x0 = max(0, ys.min() + dy), max(0, xs.min() + dx)
                y1, x1 = ys.max() + 1 + dy + grow, xs.max() + 1 + dx + grow
                pred_masks.append(ellipse(height, width, y0, x0, max(y1, y0 + 1), max(x1, x0 + 1)))
                pred_labels.append(label if rng.random() < 0.8 else int(rng.integers(0, 3)))
            for _ in range(int(rng.integers(0, 3))):
                # Side 36: mask area ~1018 is "small" (< 32^2), its box area 1296 is not.
                side = 9 if rng.random() < 0.5 else 36
                y0, x0 = rng.integers(0, height - side), rng.integers(0, width - side)
                pred_masks.append(ellipse(height, width, y0, x0, y0 + side, x0 + side))
                pred_labels.append(int(rng.integers(0, 3)))
        pred_masks_array = np.array(pred_masks, dtype=bool).reshape(-1, height, width)
        images.append(
            {
                "gt": (np.array(gt_masks), np.array(gt_labels), iscrowd),
                "pred_masks": pred_masks_array,
                "scores": rng.random(len(pred_masks)),
                "pred_labels": np.array(pred_labels, dtype=np.int64),
            }
        )
    return images


def encode_one(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def direct_cocoeval(images, iou_type):
    """COCOeval on dicts built here, independently of the evaluator under test."""
    gt_dataset = {"images": [], "annotations": [], "categories": []}
    gt_dataset["categories"] = [{"id": i, "name": str(i)} for i in DATASET_IDS]
    results = []
    for image_id, image in enumerate(images, start=100):
        masks, labels, iscrowd = image["gt"]
        height, width = masks.shape[1:]
        gt_dataset["images"].append({"id": image_id, "height": height, "width": width})
        for mask, label, crowd in zip(masks, labels, iscrowd, strict=True):
            rle = encode_one(mask)
            gt_dataset["annotations"].append(
                {
                    "id": len(gt_dataset["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": DATASET_IDS[label],
                    "segmentation": rle,
                    "area": float(mask.sum()),
                    "bbox": list(mask_util.toBbox(rle)),
                    "iscrowd": int(crowd),
                }
            )
        for mask, score, label in zip(
            image["pred_masks"], image["scores"], image["pred_labels"], strict=True
        ):
            result = {"image_id": image_id, "category_id": DATASET_IDS[label], "score": score}
            if iou_type == "segm":
                result["segmentation"] = encode_one(mask)
            else:
                ys, xs = np.nonzero(mask)
                x0, y0 = xs.min(), ys.min()
                result["bbox"] = [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
            results.append(result)
    coco_gt = COCO()
    coco_gt.dataset = gt_dataset
    coco_gt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return dict(zip(METRICS, coco_eval.stats[:6], strict=True))


def fill(evaluator, images, *, boxes_from_masks=True):
    for image_id, image in enumerate(images):
        evaluator.add_ground_truth(f"img{image_id}", *image["gt"])
        boxes = None
        if not boxes_from_masks:
            boxes = []
            for mask in image["pred_masks"]:
                ys, xs = np.nonzero(mask)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        evaluator.add_prediction(
            f"img{image_id}", image["pred_masks"], image["scores"], image["pred_labels"], boxes
        )


@pytest.mark.parametrize("boxes_from_masks", [True, False])
def test_equals_direct_pycocotools(boxes_from_masks, capsys):
    images = random_case(np.random.default_rng(7))
    evaluator = InstanceEvaluator(CATEGORIES)
    fill(evaluator, images, boxes_from_masks=boxes_from_masks)
    results = evaluator.compute()
    assert capsys.readouterr().out == ""  # pycocotools' prints are suppressed
    for iou_type in ("segm", "bbox"):
        expected = direct_cocoeval(images, iou_type)
        assert 0 < expected["AP"] < 1  # a non-trivial case
        for metric in METRICS:
            want = 100 * expected[metric] if expected[metric] >= 0 else math.nan
            assert results[iou_type][metric] == pytest.approx(want, abs=1e-12, nan_ok=True)
    table = InstanceEvaluator.format_table(results)
    assert "segm" in table and "bbox" in table


def test_perfect_prediction_is_100():
    images = random_case(np.random.default_rng(3))
    evaluator = InstanceEvaluator(CATEGORIES)
    for image_id, image in enumerate(images):
        masks, labels, iscrowd = image["gt"]
        evaluator.add_ground_truth(image_id, masks, labels, iscrowd)
        keep = ~iscrowd
        evaluator.add_prediction(image_id, masks[keep], np.ones(keep.sum()), labels[keep])
    results = evaluator.compute()
    for iou_type in ("segm", "bbox"):
        for metric in ("AP", "AP50", "AP75"):
            assert results[iou_type][metric] == pytest.approx(100.0)


def test_no_predictions_gives_zeros_where_there_is_ground_truth():
    evaluator = InstanceEvaluator(CATEGORIES)
    evaluator.add_ground_truth(0, rectangle(20, 20, 2, 2, 9, 9)[None], [1], [False])
    evaluator.add_prediction(0, np.zeros((0, 20, 20), dtype=bool), [], [])
    results = evaluator.compute()
    for iou_type in ("segm", "bbox"):  # one small instance: APm / APl undefined as in COCOeval
        values = results[iou_type]
        assert [values[m] for m in ("AP", "AP50", "AP75", "APs")] == [0.0] * 4
        assert math.isnan(values["APm"]) and math.isnan(values["APl"])


def test_nothing_to_evaluate_is_undefined_not_zero(tmp_path):
    """No ground truth and no predictions: pycocotools' -1, not 0, in the table and JSON."""
    import json

    evaluator = InstanceEvaluator(CATEGORIES)
    evaluator.add_ground_truth(0, np.zeros((0, 20, 20), dtype=bool), [], [])
    evaluator.add_prediction(0, np.zeros((0, 20, 20), dtype=bool), [], [])
    results = evaluator.compute()
    assert all(math.isnan(v) for values in results.values() for v in values.values())
    table = InstanceEvaluator.format_table(results)
    assert "nan" in table and "undefined" in table and "0.00" not in table
    assert json.loads(json.dumps(results))["segm"]["AP"] != 0  # NaN, as PQ writes it


def test_bad_inputs_raise():
    evaluator = InstanceEvaluator(CATEGORIES)
    evaluator.add_ground_truth(0, rectangle(20, 20, 2, 2, 9, 9)[None], [1], [False])
    with pytest.raises(ValueError, match="already added"):
        evaluator.add_ground_truth(0, rectangle(20, 20, 2, 2, 9, 9)[None], [1], [False])
    with pytest.raises(ValueError, match="labels must be in"):
        evaluator.add_prediction(0, rectangle(20, 20, 2, 2, 9, 9)[None], [0.9], [3])
    with pytest.raises(ValueError, match="2 scores for 1 masks"):
        evaluator.add_prediction(0, rectangle(20, 20, 2, 2, 9, 9)[None], [0.9, 0.1], [1])
    evaluator.add_prediction(5, rectangle(20, 20, 2, 2, 9, 9)[None], [0.9], [1])
    with pytest.raises(ValueError, match="without ground truth: \\[5\\]"):
        evaluator.compute()
