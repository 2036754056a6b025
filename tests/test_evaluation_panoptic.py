"""PanopticEvaluator: hand-computed PQ cases and a literal port of panopticapi's loop."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from ovseg.evaluation import PanopticEvaluator, write_coco_panoptic

# Two thing classes and one stuff class.
CATEGORIES = [
    {"id": 0, "name": "person", "isthing": True},
    {"id": 1, "name": "car", "isthing": True},
    {"id": 2, "name": "sky", "isthing": False},
]


def columns(spec, height=4):
    """Map of shape (height, len(spec)) whose every column holds spec[column]."""
    return np.tile(np.array(spec, dtype=np.int64), (height, 1))


def gt_segment(segment_id, category, crowd=False):
    return {"id": segment_id, "category_id": category, "iscrowd": int(crowd)}


def pred_segment(segment_id, category):
    return {"id": segment_id, "category_id": category}


def evaluate(pairs, categories=CATEGORIES, seen=None):
    evaluator = PanopticEvaluator(categories, seen=seen)
    for pair in pairs:
        evaluator.update(*pair)
    return evaluator.compute()


def one_missed_case():
    """gt: person cols 0-1, car cols 2-6, sky cols 7-9. Prediction: person exact (IoU 1),
    car on cols 2-5 (IoU 16/20 = 0.8), nothing on the sky (cols 6-9 unlabelled)."""
    gt = columns([1, 1, 2, 2, 2, 2, 2, 3, 3, 3])
    pred = columns([11, 11, 12, 12, 12, 12, 0, 0, 0, 0])
    gt_segments = [gt_segment(1, 0), gt_segment(2, 1), gt_segment(3, 2)]
    return gt, gt_segments, pred, [pred_segment(11, 0), pred_segment(12, 1)]


def test_perfect_prediction_is_100():
    gt = columns([5, 5, 9, 9, 9, 300, 300, 300], height=3)
    segments = [gt_segment(5, 0), gt_segment(9, 1), gt_segment(300, 2)]
    results = evaluate(
        [(gt, segments, gt.copy(), [pred_segment(s["id"], s["category_id"]) for s in segments])]
    )
    for row in ("All", "Things", "Stuff"):
        assert results[row]["pq"] == pytest.approx(100.0)
        assert results[row]["sq"] == pytest.approx(100.0)
        assert results[row]["rq"] == pytest.approx(100.0)
    assert results["All"]["n"] == 3
    assert results["per_class"]["car"] == {
        "pq": 100.0,
        "sq": 100.0,
        "rq": 100.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }


def test_empty_prediction_is_all_false_negatives():
    gt, gt_segments, _, _ = one_missed_case()
    results = evaluate([(gt, gt_segments, np.zeros_like(gt), [])])
    assert results["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 3}
    assert [results["per_class"][c["name"]]["fn"] for c in CATEGORIES] == [1, 1, 1]
    assert [results["per_class"][c["name"]]["fp"] for c in CATEGORIES] == [0, 0, 0]


def test_one_missed_segment_by_hand():
    results = evaluate([one_missed_case()])
    # person: pq = sq = rq = 1; car: tp 1 with IoU 0.8; sky: one FN (pq = sq = rq = 0).
    assert results["All"]["pq"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    assert results["All"]["sq"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    assert results["All"]["rq"] == pytest.approx(100 * 2 / 3)
    assert results["Things"] == pytest.approx({"pq": 90.0, "sq": 90.0, "rq": 100.0, "n": 2})
    assert results["Stuff"] == pytest.approx({"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1})
    assert results["per_class"]["car"]["pq"] == pytest.approx(80.0)
    assert results["per_class"]["sky"]["fn"] == 1
    assert "Seen" not in results and "Unseen" not in results


def test_seen_unseen_split():
    results = evaluate([one_missed_case()], seen=[True, False, True])
    assert results["Seen"] == pytest.approx({"pq": 50.0, "sq": 50.0, "rq": 50.0, "n": 2})
    assert results["Unseen"] == pytest.approx({"pq": 80.0, "sq": 80.0, "rq": 100.0, "n": 1})
    table = PanopticEvaluator.format_table(results)
    for row in ("All", "Things", "Stuff", "Seen", "Unseen"):
        assert row in table
    assert "50.00" in table and "80.00" in table


def test_iou_of_exactly_half_is_not_a_match():
    # person gt = cols 0-1 (8 px); the person prediction covers cols 0-3: IoU 8 / 16 = 0.5.
    gt = columns([1, 1, 2, 2])
    gt_segments = [gt_segment(1, 0), gt_segment(2, 1)]
    half = evaluate([(gt, gt_segments, columns([7, 7, 7, 7]), [pred_segment(7, 0)])])
    assert half["per_class"]["person"] == {
        "pq": 0.0,
        "sq": 0.0,
        "rq": 0.0,
        "tp": 0,
        "fp": 1,
        "fn": 1,
    }
    # Covering cols 0-2 instead: IoU 8 / 12 > 0.5, a match.
    above = evaluate([(gt, gt_segments, columns([7, 7, 7, 0]), [pred_segment(7, 0)])])
    assert above["per_class"]["person"]["tp"] == 1
    assert above["per_class"]["person"]["sq"] == pytest.approx(100 * 8 / 12)


def test_prediction_spilling_into_void_keeps_iou():
    # gt: person on cols 0-3, void on cols 4-9; the prediction covers cols 0-7.
    gt = columns([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = columns([4, 4, 4, 4, 4, 4, 4, 4, 6, 6])
    # Prediction 6 (car) lies entirely on void: ignored, not a false positive.
    results = evaluate([(gt, [gt_segment(1, 0)], pred, [pred_segment(4, 0), pred_segment(6, 1)])])
    assert results["per_class"]["person"]["sq"] == pytest.approx(100.0)
    assert results["per_class"]["car"]["fp"] == 0
    assert results["All"] == pytest.approx({"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 1})


def test_void_counts_only_for_ignoring_not_for_unmatched_area():
    # A car prediction with 2 of 8 px on void (25%) and the rest on sky is a false positive.
    gt = columns([3, 3, 3, 0])
    pred = columns([0, 0, 5, 5])
    results = evaluate([(gt, [gt_segment(3, 2)], pred, [pred_segment(5, 1)])])
    assert results["per_class"]["car"]["fp"] == 1
    assert results["per_class"]["sky"]["fn"] == 1


def test_crowd_of_same_class_is_ignored_other_class_is_false_positive():
    # gt: a person crowd on cols 0-4, a car on cols 5-9.
    gt = columns([1] * 5 + [2] * 5)
    gt_segments = [gt_segment(1, 0, crowd=True), gt_segment(2, 1)]
    pred = columns([11] * 5 + [12] * 5)
    same = evaluate([(gt, gt_segments, pred, [pred_segment(11, 0), pred_segment(12, 1)])])
    person = same["per_class"]["person"]
    assert (person["tp"], person["fp"], person["fn"]) == (0, 0, 0)  # crowd is never a FN either
    assert math.isnan(person["pq"])  # not counted at all
    assert same["All"] == pytest.approx({"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 1})

    other = evaluate([(gt, gt_segments, pred, [pred_segment(11, 2), pred_segment(12, 1)])])
    assert other["per_class"]["sky"]["fp"] == 1
    assert other["All"] == pytest.approx({"pq": 50.0, "sq": 50.0, "rq": 50.0, "n": 2})


def test_unlisted_ids_and_bad_inputs_raise():
    gt = columns([1, 1, 7, 7])
    pred = columns([3, 3, 3, 3])
    with pytest.raises(ValueError, match="segment id 7"):
        evaluate([(gt, [gt_segment(1, 0)], pred, [pred_segment(3, 0)])])
    with pytest.raises(ValueError, match="segment id 3"):
        evaluate([(gt, [gt_segment(1, 0), gt_segment(7, 1)], pred, [])])
    with pytest.raises(ValueError, match="70000"):  # large ids go through the sorted search
        big = columns([70000, 1, 1, 1])
        evaluate([(big, [gt_segment(1, 0)], pred, [pred_segment(3, 0)])])
    with pytest.raises(ValueError, match="segment 9 is listed but has no pixels"):
        evaluate(
            [
                (
                    gt,
                    [gt_segment(1, 0), gt_segment(7, 1)],
                    pred,
                    [pred_segment(3, 0), pred_segment(9, 1)],
                )
            ]
        )
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate([(gt, [gt_segment(1, 0), gt_segment(7, 1)], pred[:, :3], [pred_segment(3, 0)])])
    with pytest.raises(ValueError, match="category_id 5"):
        evaluate([(gt, [gt_segment(1, 0), gt_segment(7, 5)], pred, [pred_segment(3, 0)])])


# ---------------------------------------------------------------------------------------------
# Reference: panopticapi's pq_compute_single_core + PQStat.pq_average, transcribed literally
# (per-segment Python loops over np.unique of the combined label), gt areas counted from the map.

OFFSET = 256 * 256 * 256
VOID = 0


def reference_pq(pairs, categories, seen=None):
    stat = {c["id"]: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0} for c in categories}
    branches = {"ignored_on_crowd": 0, "ignored_on_void": 0}
    for pan_gt, gt_segments_info, pan_pred, pred_segments_info in pairs:
        gt_segms = {el["id"]: dict(el) for el in gt_segments_info}
        pred_segms = {el["id"]: dict(el) for el in pred_segments_info}
        for segment in gt_segms.values():
            segment["area"] = int((pan_gt == segment["id"]).sum())

        pred_labels_set = {el["id"] for el in pred_segments_info}
        labels, labels_cnt = np.unique(pan_pred, return_counts=True)
        for label, label_cnt in zip(labels, labels_cnt, strict=True):
            if label not in pred_segms:
                if label == VOID:
                    continue
                raise KeyError(label)
            pred_segms[label]["area"] = label_cnt
            pred_labels_set.remove(label)
        assert len(pred_labels_set) == 0

        pan_gt_pred = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
        gt_pred_map = {}
        labels, labels_cnt = np.unique(pan_gt_pred, return_counts=True)
        for label, intersection in zip(labels, labels_cnt, strict=True):
            gt_id = label // OFFSET
            pred_id = label % OFFSET
            gt_pred_map[(int(gt_id), int(pred_id))] = intersection

        gt_matched = set()
        pred_matched = set()
        for label_tuple, intersection in gt_pred_map.items():
            gt_label, pred_label = label_tuple
            if gt_label not in gt_segms:
                continue
            if pred_label not in pred_segms:
                continue
            if gt_segms[gt_label]["iscrowd"] == 1:
                continue
            if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
                continue
            union = (
                pred_segms[pred_label]["area"]
                + gt_segms[gt_label]["area"]
                - intersection
                - gt_pred_map.get((VOID, pred_label), 0)
            )
            iou = intersection / union
            if iou > 0.5:
                stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
                stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        crowd_labels_dict = {}
        for gt_label, gt_info in gt_segms.items():
            if gt_label in gt_matched:
                continue
            if gt_info["iscrowd"] == 1:
                crowd_labels_dict[gt_info["category_id"]] = gt_label
                continue
            stat[gt_info["category_id"]]["fn"] += 1

        for pred_label, pred_info in pred_segms.items():
            if pred_label in pred_matched:
                continue
            intersection = gt_pred_map.get((VOID, pred_label), 0)
            void_only = intersection
            if pred_info["category_id"] in crowd_labels_dict:
                intersection += gt_pred_map.get(
                    (crowd_labels_dict[pred_info["category_id"]], pred_label), 0
                )
            if intersection / pred_info["area"] > 0.5:
                key = (
                    "ignored_on_void" if void_only / pred_info["area"] > 0.5 else "ignored_on_crowd"
                )
                branches[key] += 1
                continue
            stat[pred_info["category_id"]]["fp"] += 1

    def pq_average(isthing=None, seen_flag=None):
        pq, sq, rq, n = 0, 0, 0, 0
        for label_info in categories:
            label = label_info["id"]
            if isthing is not None and label_info["isthing"] != isthing:
                continue
            if seen_flag is not None and seen[label] != seen_flag:
                continue
            iou, tp, fp, fn = (stat[label][k] for k in ("iou", "tp", "fp", "fn"))
            if tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + 0.5 * fp + 0.5 * fn)
            sq += iou / tp if tp != 0 else 0
            rq += tp / (tp + 0.5 * fp + 0.5 * fn)
        return {"pq": 100 * pq / n, "sq": 100 * sq / n, "rq": 100 * rq / n, "n": n}

    results = {"All": pq_average(), "Things": pq_average(True), "Stuff": pq_average(False)}
    if seen is not None:
        results["Seen"] = pq_average(seen_flag=True)
        results["Unseen"] = pq_average(seen_flag=False)
    return results, stat, branches


RANDOM_CATEGORIES = [
    {"id": 0, "name": "a", "isthing": True},
    {"id": 1, "name": "b", "isthing": True},
    {"id": 2, "name": "c", "isthing": False},
    {"id": 3, "name": "d", "isthing": False},
]


def nearest_seed_labels(rng, height, width, seeds):
    ys, xs = np.mgrid[0:height, 0:width]
    distance = (ys[None] - seeds[:, 0, None, None]) ** 2 + (xs[None] - seeds[:, 1, None, None]) ** 2
    return distance.argmin(axis=0)


def random_pair(rng, height=24, width=32):
    """Random gt partition with void and crowd; the prediction is a jittered partition."""
    count = int(rng.integers(3, 12))
    # Small ids exercise the lookup-table path, COCO-sized ones the sorted search.
    id_range = 60 if rng.random() < 0.5 else 256**3
    seeds = rng.uniform(0, 1, size=(count, 2)) * (height, width)
    gt_ids = rng.choice(np.arange(1, id_range), size=count, replace=False)
    gt_map = gt_ids[nearest_seed_labels(rng, height, width, seeds)]
    gt_map[rng.random((height, width)) < rng.uniform(0, 0.3)] = VOID
    y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
    gt_map[y : y + int(rng.integers(0, 14)), x : x + int(rng.integers(0, 18))] = VOID
    gt_categories = rng.integers(0, 4, size=count)
    crowd = rng.random(count) < 0.25
    gt_segments = [
        gt_segment(int(gt_ids[i]), int(gt_categories[i]), bool(crowd[i])) for i in range(count)
    ]

    pred_count = max(1, count + int(rng.integers(-2, 3)))
    jitter = rng.normal(0, rng.uniform(0.5, 4), size=(pred_count, 2))
    pred_seeds = np.concatenate(
        [seeds, rng.uniform(0, 1, (max(0, pred_count - count), 2)) * (height, width)]
    )
    pred_seeds = pred_seeds[:pred_count] + jitter
    pred_labels = nearest_seed_labels(rng, height, width, pred_seeds)
    pred_ids = rng.choice(np.arange(1, id_range), size=pred_count, replace=False)
    pred_map = pred_ids[pred_labels]
    pred_map[rng.random((height, width)) < rng.uniform(0, 0.2)] = VOID
    inherited = np.concatenate([gt_categories, rng.integers(0, 4, size=pred_count)])[:pred_count]
    pred_categories = np.where(
        rng.random(pred_count) < 0.7, inherited, rng.integers(0, 4, pred_count)
    )
    present = set(np.unique(pred_map).tolist())
    pred_segments = [
        pred_segment(int(pred_ids[i]), int(pred_categories[i]))
        for i in range(pred_count)
        if int(pred_ids[i]) in present
    ]
    return gt_map, gt_segments, pred_map, pred_segments


def test_matches_literal_panopticapi_on_random_cases():
    rng = np.random.default_rng(2024)
    seen = [True, False, True, False]
    pairs = [random_pair(rng) for _ in range(20)]
    expected, expected_stat, branches = reference_pq(pairs, RANDOM_CATEGORIES, seen)
    # The cases must exercise every branch, or equality would prove little.
    totals = {k: sum(s[k] for s in expected_stat.values()) for k in ("tp", "fp", "fn")}
    assert min(totals.values()) > 5, totals
    assert branches["ignored_on_crowd"] > 0 and branches["ignored_on_void"] > 0, branches

    evaluator = PanopticEvaluator(RANDOM_CATEGORIES, seen=seen)
    for pair in pairs:
        evaluator.update(*pair)
    results = evaluator.compute()
    for row in ("All", "Things", "Stuff", "Seen", "Unseen"):
        assert results[row]["n"] == expected[row]["n"]
        for key in ("pq", "sq", "rq"):
            assert abs(results[row][key] - expected[row][key]) < 1e-9, (row, key)
    for category in RANDOM_CATEGORIES:
        got = results["per_class"][category["name"]]
        want = expected_stat[category["id"]]
        assert (got["tp"], got["fp"], got["fn"]) == (want["tp"], want["fp"], want["fn"])


def test_write_coco_panoptic_round_trip(tmp_path):
    panoptic = np.zeros((5, 6), dtype=np.int64)
    panoptic[1:3, 2:5] = 70000  # needs the G and B bytes
    panoptic[4, :] = 3
    items = [
        {
            "image_id": 139,
            "file_name": "000000000139.jpg",
            "panoptic": panoptic,
            "segments": [pred_segment(70000, 1), pred_segment(3, 2)],
        }
    ]
    categories_json = [
        {"id": 1, "name": "person", "isthing": 1},
        {"id": 3, "name": "car", "isthing": 1},
        {"id": 187, "name": "sky", "isthing": 0},
    ]
    json_path = write_coco_panoptic(tmp_path, "panoptic_pred.json", items, categories_json)
    assert json_path == tmp_path / "panoptic_pred.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panoptic_pred", "panoptic_pred.json"]
    assert [p.name for p in (tmp_path / "panoptic_pred").iterdir()] == ["000000000139.png"]

    rgb = np.asarray(Image.open(tmp_path / "panoptic_pred" / "000000000139.png")).astype(np.int64)
    assert rgb.shape == (5, 6, 3)
    np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2], panoptic)

    annotation = json.loads(json_path.read_text())["annotations"][0]
    assert annotation["image_id"] == 139 and annotation["file_name"] == "000000000139.png"
    assert annotation["segments_info"] == [
        {"id": 70000, "category_id": 3, "isthing": 1, "area": 6, "bbox": [2, 1, 3, 2]},
        {"id": 3, "category_id": 187, "isthing": 0, "area": 6, "bbox": [0, 4, 6, 1]},
    ]

    with pytest.raises(ValueError, match="segment 5 has no pixels"):
        items[0]["segments"].append(pred_segment(5, 0))
        write_coco_panoptic(tmp_path, "other.json", items, categories_json)
    assert not (tmp_path / "other.json").exists()
