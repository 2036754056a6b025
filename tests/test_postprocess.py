"""Post-processing (spec s.8) on constructed logits whose answers are known by hand."""

import math

import pytest
import torch

from ovseg.modeling.postprocess import (
    instance_inference,
    masks_to_boxes,
    panoptic_inference,
    resize_to_original,
    semantic_inference,
)

BIG = 20.0  # sigmoid(20) ~ 1, sigmoid(-20) ~ 0


def logits_from_probs(probs):
    """Class logits whose softmax is exactly ``probs`` (rows of a probability table)."""
    return torch.tensor(probs, dtype=torch.float64).log()


def logit(p):
    return math.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------
# semantic


def test_semantic_inference_hand_computed():
    class_logits = logits_from_probs(
        [
            [0.5, 0.25, 0.25],  # query 0: void 0.25
            [0.1, 0.6, 0.3],
        ]
    )  # query 1: void 0.3
    mask_logits = torch.tensor(
        [
            [[logit(0.75), 0.0], [logit(0.25), logit(0.9)]],
            [
                [
                    0.0,
                    logit(0.2),
                ],
                [logit(0.8), logit(0.1)],
            ],
        ],
        dtype=torch.float64,
    )
    scores = semantic_inference(class_logits, mask_logits)
    assert scores.shape == (2, 2, 2)  # (K, H, W): void dropped
    expected_class0 = [
        [0.5 * 0.75 + 0.1 * 0.5, 0.5 * 0.5 + 0.1 * 0.2],
        [0.5 * 0.25 + 0.1 * 0.8, 0.5 * 0.9 + 0.1 * 0.1],
    ]
    expected_class1 = [
        [0.25 * 0.75 + 0.6 * 0.5, 0.25 * 0.5 + 0.6 * 0.2],
        [0.25 * 0.25 + 0.6 * 0.8, 0.25 * 0.9 + 0.6 * 0.1],
    ]
    expected = torch.tensor([expected_class0, expected_class1], dtype=torch.float64)
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=1e-12)
    assert scores.argmax(0).tolist() == [[1, 0], [1, 0]]


# ---------------------------------------------------------------------------------------------
# panoptic


def row_masks(confident_columns, width=10):
    """(Q, 1, width) mask logits: +BIG on the listed columns of each query, -BIG elsewhere."""
    masks = torch.full((len(confident_columns), 1, width), -BIG, dtype=torch.float64)
    for q, columns in enumerate(confident_columns):
        masks[q, 0, list(columns)] = BIG
    return masks


def test_panoptic_drops_void_queries():
    class_logits = logits_from_probs(
        [
            [0.1, 0.1, 0.8],  # void wins -> dropped
            [0.7, 0.2, 0.1],
        ]
    )
    masks = row_masks([range(0, 10), range(5, 10)])
    panoptic, segments = panoptic_inference(class_logits, masks, torch.tensor([True, False]))
    assert panoptic.dtype == torch.int32
    assert panoptic[0].tolist() == [0] * 5 + [1] * 5
    assert segments == [{"id": 1, "isthing": True, "category_id": 0, "score": pytest.approx(0.7)}]


def test_panoptic_merges_stuff_of_one_class_and_keeps_things_apart():
    is_thing = torch.tensor([True, False])
    class_logits = logits_from_probs(
        [
            [0.1, 0.8, 0.1],  # stuff class 1
            [0.7, 0.2, 0.1],  # thing class 0
            [0.2, 0.6, 0.2],  # stuff class 1 again -> same id
            [0.6, 0.3, 0.1],
        ]
    )  # thing class 0 again -> new id
    masks = row_masks([range(0, 3), range(3, 5), range(5, 8), range(8, 10)])
    panoptic, segments = panoptic_inference(class_logits, masks, is_thing)
    assert panoptic[0].tolist() == [1, 1, 1, 2, 2, 1, 1, 1, 3, 3]
    assert [(s["id"], s["isthing"], s["category_id"]) for s in segments] == [
        (1, False, 1),
        (2, True, 0),
        (3, True, 0),
    ]


def test_panoptic_drops_thing_with_small_owned_fraction():
    is_thing = torch.tensor([True, True])
    class_logits = logits_from_probs(
        [
            [0.9, 0.05, 0.05],  # high score, columns 0-4
            [0.05, 0.6, 0.35],
        ]
    )  # lower score, columns 2-9
    masks = row_masks([range(0, 5), range(2, 10)])
    panoptic, segments = panoptic_inference(class_logits, masks, is_thing)
    # query 1 owns columns 5-9 only: 5 / 8 = 0.625 < 0.8 -> dropped
    assert panoptic[0].tolist() == [1] * 5 + [0] * 5
    assert [s["category_id"] for s in segments] == [0]


def test_panoptic_owned_fraction_exactly_threshold_is_kept():
    is_thing = torch.tensor([True, True])
    class_logits = logits_from_probs([[0.9, 0.05, 0.05], [0.05, 0.6, 0.35]])
    masks = row_masks([range(0, 5), range(4, 9)])  # query 1 owns 5..8 of 4..8: 4 / 5 = 0.8
    panoptic, segments = panoptic_inference(class_logits, masks, is_thing)
    assert panoptic[0].tolist() == [1] * 5 + [2] * 4 + [0]
    assert [s["id"] for s in segments] == [1, 2]


def test_panoptic_pixel_owner_uses_score_times_mask_prob():
    """A lower-scored query wins the pixels where its mask is much more confident."""
    is_thing = torch.tensor([True, True])
    class_logits = logits_from_probs([[0.6, 0.1, 0.3], [0.1, 0.5, 0.4]])
    masks = torch.tensor(
        [[[logit(0.6)] * 4], [[-BIG, -BIG, logit(0.99), logit(0.99)]]], dtype=torch.float64
    )
    # pixels 2, 3: 0.6 * 0.6 = 0.36 < 0.5 * 0.99 -> query 1; pixels 0, 1 -> query 0
    # query 0 owns 2 of its 4 confident pixels -> 0.5 < 0.8 -> dropped
    panoptic, segments = panoptic_inference(class_logits, masks, is_thing)
    assert panoptic[0].tolist() == [0, 0, 1, 1]
    assert [s["category_id"] for s in segments] == [1]


def test_panoptic_pixel_owner_weights_mask_by_class_score():
    """A higher-scored query keeps pixels where its mask prob is lower than another's."""
    is_thing = torch.tensor([True, True])
    class_logits = logits_from_probs([[0.8, 0.1, 0.1], [0.1, 0.5, 0.4]])
    masks = torch.tensor(
        [[[logit(0.7)] * 4], [[-BIG, -BIG, logit(0.9), logit(0.9)]]], dtype=torch.float64
    )
    # pixels 2, 3: 0.8 * 0.7 = 0.56 > 0.5 * 0.9 = 0.45 -> query 0 owns all 4 pixels;
    # query 1 owns nothing -> skipped
    panoptic, segments = panoptic_inference(class_logits, masks, is_thing)
    assert panoptic[0].tolist() == [1, 1, 1, 1]
    assert [s["category_id"] for s in segments] == [0]


def test_panoptic_empty_keep_set():
    class_logits = logits_from_probs([[0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])  # all void
    masks = row_masks([range(0, 10), range(0, 10)])
    panoptic, segments = panoptic_inference(class_logits, masks, torch.tensor([True, False]))
    assert panoptic.shape == (1, 10) and panoptic.dtype == torch.int32
    assert (panoptic == 0).all() and segments == []


def test_panoptic_object_mask_threshold():
    class_logits = logits_from_probs([[0.5, 0.3, 0.2], [0.15, 0.45, 0.4]])
    masks = row_masks([range(0, 5), range(5, 10)])
    # query 1: class 1 with score 0.45 < 0.46 -> dropped
    panoptic, segments = panoptic_inference(
        class_logits, masks, torch.tensor([True, True]), object_mask_threshold=0.46
    )
    assert panoptic[0].tolist() == [1] * 5 + [0] * 5
    assert len(segments) == 1


def test_panoptic_query_with_no_confident_pixel_is_skipped():
    class_logits = logits_from_probs([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    masks = row_masks([range(0, 10), []])  # query 1: sigmoid < 0.5 everywhere
    panoptic, segments = panoptic_inference(class_logits, masks, torch.tensor([True, True]))
    assert (panoptic == 1).all()
    assert [s["category_id"] for s in segments] == [0]


# ---------------------------------------------------------------------------------------------
# instance


def test_instance_topk_things_only_and_scores():
    # probs (Q=3, K=2): pairs sorted: (q2,c0)=0.7, (q0,c1)=0.6, (q1,c0)=0.5, (q1,c1)=0.3, ...
    class_logits = logits_from_probs([[0.2, 0.6, 0.2], [0.5, 0.3, 0.2], [0.7, 0.1, 0.2]])
    mask_logits = torch.tensor(
        [
            [[logit(0.9), -1.0], [-2.0, -3.0]],
            [[logit(0.75), logit(0.9)], [-1.0, -1.0]],  # mean inside = 0.825
            [[-1.0, -1.0], [-1.0, -1.0]],  # empty mask -> score 0
        ],
        dtype=torch.float64,
    )
    is_thing = torch.tensor([True, False])
    # top 3 = (q2,c0), (q0,c1), (q1,c0); things-only drops (q0,c1) (class 1 is stuff)
    result = instance_inference(class_logits, mask_logits, is_thing, detections_per_image=3)
    assert result["labels"].tolist() == [0, 0]
    scores = result["scores"].tolist()
    # query 1: sum of sigmoids inside / (area + 1e-6), spec s.8
    assert scores[0] == pytest.approx(0.5 * (0.75 + 0.9) / (2 + 1e-6), rel=1e-7)
    assert scores[1] == 0.0  # query 2: its mask is empty
    assert result["masks"].dtype == torch.bool
    assert result["masks"][0].tolist() == [[True, True], [False, False]]
    assert not result["masks"][1].any()
    assert result["boxes"].tolist() == [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_instance_without_things_filter():
    class_logits = logits_from_probs([[0.2, 0.6, 0.2], [0.5, 0.3, 0.2], [0.7, 0.1, 0.2]])
    mask_logits = torch.full((3, 2, 2), BIG, dtype=torch.float64)
    result = instance_inference(
        class_logits,
        mask_logits,
        torch.tensor([True, False]),
        detections_per_image=2,
        things_only=False,
    )
    # top 2 by class prob: (q2, c0) = 0.7 and (q0, c1) = 0.6; masks full, mask score ~1
    assert result["labels"].tolist() == [0, 1]
    torch.testing.assert_close(
        result["scores"], torch.tensor([0.7, 0.6], dtype=torch.float64), rtol=1e-6, atol=1e-6
    )


def test_instance_k_larger_than_pairs():
    class_logits = logits_from_probs([[0.5, 0.3, 0.2]])
    mask_logits = torch.full((1, 3, 3), BIG, dtype=torch.float64)
    result = instance_inference(
        class_logits, mask_logits, torch.tensor([True, True]), detections_per_image=100
    )
    assert sorted(result["labels"].tolist()) == [0, 1]
    assert result["masks"].shape == (2, 3, 3) and result["boxes"].shape == (2, 4)


# ---------------------------------------------------------------------------------------------
# boxes and resizing


def test_masks_to_boxes():
    masks = torch.zeros(3, 5, 6, dtype=torch.bool)
    masks[1, 2, 3] = True  # single pixel at y=2, x=3
    masks[2, 1:4, 0] = True  # an L: rows 1-3 of column 0 plus row 3 columns 0-4
    masks[2, 3, 0:5] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[0, 0, 0, 0], [3, 2, 4, 3], [0, 1, 5, 4]]
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)
    full = masks_to_boxes(torch.ones(1, 5, 6, dtype=torch.bool))
    assert full.tolist() == [[0, 0, 6, 5]]


def upsample_matrix(n_in, n_out):
    """Bilinear (align_corners=False) 1-D resampling matrix, written from the definition."""
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(math.floor(src))
        hi = min(lo + 1, n_in - 1)
        matrix[i, lo] += 1 - (src - lo)
        matrix[i, hi] += src - lo
    return matrix


def test_upsample_matrix_known_row():
    # 2 -> 4: outputs read sources -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    expected = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    assert upsample_matrix(2, 4).tolist() == expected


def test_resize_to_original_crops_then_resizes():
    padded = torch.full((2, 4, 5), 1000.0, dtype=torch.float64)  # padding must never leak in
    padded[0, :2, :3] = torch.tensor([[0.0, 4.0, 8.0], [12.0, 16.0, 20.0]])
    padded[1, :2, :3] = torch.tensor([[1.0, -1.0, 2.0], [0.0, 5.0, 3.0]])
    resized = resize_to_original(padded, (2, 3), (4, 7))
    assert resized.shape == (2, 4, 7)
    rows, cols = upsample_matrix(2, 4), upsample_matrix(3, 7)
    for k in range(2):
        expected = rows @ padded[k, :2, :3] @ cols.T
        torch.testing.assert_close(resized[k], expected, rtol=1e-10, atol=1e-10)
    assert resized.max() < 1000


def test_resize_to_original_same_size_is_a_crop_and_4d_input():
    padded = torch.arange(2 * 3 * 6 * 8, dtype=torch.float64).view(2, 3, 6, 8)
    resized = resize_to_original(padded, (5, 7), (5, 7))
    assert resized.shape == (2, 3, 5, 7)
    torch.testing.assert_close(resized, padded[..., :5, :7])


def test_instance_no_thing_in_topk_gives_empty_result():
    class_logits = logits_from_probs([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])  # class 1 dominates
    mask_logits = torch.full((2, 3, 4), BIG, dtype=torch.float64)
    result = instance_inference(
        class_logits, mask_logits, torch.tensor([True, False]), detections_per_image=2
    )
    assert result["masks"].shape == (0, 3, 4)
    assert result["boxes"].shape == (0, 4)
    assert result["scores"].numel() == 0 and result["labels"].numel() == 0


def test_semantic_inference_in_pixel_blocks_is_the_einsum():
    """Block sizes that do and do not divide the pixel count give Mask2Former's sum."""
    generator = torch.Generator().manual_seed(2)
    class_logits = torch.randn(7, 5, generator=generator)
    mask_logits = torch.randn(7, 9, 13, generator=generator)
    expected = torch.einsum("qc,qhw->chw", class_logits.softmax(-1)[:, :-1], mask_logits.sigmoid())
    for block in (1, 10, 117, 5000):
        actual = semantic_inference(class_logits, mask_logits, block=block)
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
