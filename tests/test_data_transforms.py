"""Large-scale jitter and short-edge resize keep every key of a sample consistent (spec s.9)."""

import numpy as np
import pytest
from PIL import Image

from ovseg.data import LargeScaleJitter, ResizeShortEdge
from ovseg.data.transforms import nearest_indices
from ovseg.preprocess import shortest_edge_size


def make_sample(height=37, width=53, seed=0):
    """Random image; void border, stuff band, two things, a crowd segment and a 1-pixel thing."""
    rng = np.random.default_rng(seed)
    panoptic = np.zeros((height, width), dtype=np.int32)
    panoptic[height // 2 :, :] = 70000  # stuff
    panoptic[3:15, 4:20] = 300  # thing, left
    panoptic[10:30, 30:50] = 5  # thing, right
    panoptic[20:25, 5:12] = 9  # crowd
    panoptic[0, width - 1] = 42  # one pixel: gone after most downscales
    segments = [
        {"id": 70000, "category_id": 3, "iscrowd": False, "isthing": False},
        {"id": 300, "category_id": 0, "iscrowd": False, "isthing": True},
        {"id": 5, "category_id": 1, "iscrowd": False, "isthing": True},
        {"id": 9, "category_id": 1, "iscrowd": True, "isthing": True},
        {"id": 42, "category_id": 2, "iscrowd": False, "isthing": True},
    ]
    targets = [s for s in segments if not s["iscrowd"]]
    masks = np.stack([panoptic == s["id"] for s in targets])
    labels = np.array([s["category_id"] for s in targets], dtype=np.int64)
    sem_seg = np.full((height, width), 255, dtype=np.int64)
    for mask, label in zip(masks, labels, strict=True):
        sem_seg[mask] = label
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "masks": masks,
        "labels": labels,
        "panoptic": panoptic,
        "segments_info": segments,
        "sem_seg": sem_seg,
        "image_id": 7,
        "file_name": "x.png",
    }


def assert_consistent(sample):
    """Masks, labels, segments_info, panoptic and sem_seg describe the same segmentation."""
    targets = [s for s in sample["segments_info"] if not s["iscrowd"]]
    assert sample["masks"].dtype == bool and len(sample["masks"]) == len(targets)
    assert sample["labels"].tolist() == [s["category_id"] for s in targets]
    for mask, segment in zip(sample["masks"], targets, strict=True):
        assert mask.any() and np.array_equal(mask, sample["panoptic"] == segment["id"])
        assert (sample["sem_seg"][mask] == segment["category_id"]).all()
    present = set(np.unique(sample["panoptic"]).tolist()) - {0}
    assert present == {s["id"] for s in sample["segments_info"]}


def expected_lsj(sample, seed, crop):
    """The LSJ output computed directly with PIL (flip, resize, crop, pad), from the same draws."""
    rng = np.random.default_rng(seed)
    flip, scale, fraction = rng.random() < 0.5, rng.uniform(0.3, 2.0), rng.random()
    height, width = sample["image"].shape[:2]
    factor = min(crop * scale / height, crop * scale / width)
    new_h, new_w = int(np.round(height * factor)), int(np.round(width * factor))
    top = int(np.round(max(new_h - crop, 0) * fraction))
    left = int(np.round(max(new_w - crop, 0) * fraction))

    def apply(array, resample, pad_value):
        array = array[:, ::-1] if flip else array
        resized = np.asarray(Image.fromarray(array).resize((new_w, new_h), resample))
        out = np.full((crop, crop, *array.shape[2:]), pad_value, dtype=array.dtype)
        window = resized[top : top + crop, left : left + crop]
        out[: window.shape[0], : window.shape[1]] = window
        return out

    image = apply(np.ascontiguousarray(sample["image"]), Image.BILINEAR, 128)
    mask = apply(sample["masks"][1].astype(np.uint8), Image.NEAREST, 0).astype(bool)
    return flip, (new_h, new_w), image, mask


def test_nearest_indices_match_pil_nearest_including_ties():
    rng = np.random.default_rng(0)
    sizes = [(100, 37), (37, 100), (3, 10), (1, 5), (640, 1024)]
    sizes += [tuple(int(v) for v in rng.integers(1, 400, 2)) for _ in range(40)]
    for in_size, out_size in sizes:
        ramp = (np.arange(in_size) % 256).astype(np.uint8)[None]
        pil = np.asarray(Image.fromarray(ramp).resize((out_size, 1), Image.NEAREST))[0]
        assert np.array_equal(ramp[0, nearest_indices(in_size, out_size)], pil), (in_size, out_size)


def test_lsj_equals_direct_flip_resize_crop_pad():
    sample = make_sample()
    crop = 64
    transform = LargeScaleJitter(crop_size=crop, min_scale=0.3, max_scale=2.0)
    flips, sizes = set(), []
    for seed in range(12):
        out = transform(sample, np.random.default_rng(seed))
        flip, size, image, mask = expected_lsj(sample, seed, crop)
        flips.add(flip)
        sizes.append(size)
        assert out["image"].shape == (crop, crop, 3) and out["image"].dtype == np.uint8
        assert np.array_equal(out["image"], image)
        left_thing = [s["id"] for s in out["segments_info"] if not s["iscrowd"]].index(300)
        assert np.array_equal(out["masks"][left_thing], mask)
        assert out["panoptic"].shape == out["sem_seg"].shape == out["valid"].shape == (crop, crop)
        assert out["panoptic"].dtype == np.int32 and out["sem_seg"].dtype == np.int64
        assert out["valid"].sum() == min(size[0], crop) * min(size[1], crop)
        assert_consistent(out)
        assert out["image_id"] == 7 and out["file_name"] == "x.png"
    assert flips == {False, True}
    assert any(max(s) > crop for s in sizes) and any(max(s) < crop for s in sizes)


def test_lsj_flip_moves_image_and_labels_together():
    sample = make_sample(height=32, width=32)
    transform = LargeScaleJitter(crop_size=32, min_scale=1.0, max_scale=1.0)  # pure flip
    flipped = 0
    for seed in range(8):
        out = transform(sample, np.random.default_rng(seed))
        is_flipped = not np.array_equal(out["image"], sample["image"])
        flipped += is_flipped
        view = (slice(None), slice(None, None, -1) if is_flipped else slice(None))
        assert np.array_equal(out["image"], sample["image"][view])
        assert np.array_equal(out["panoptic"], sample["panoptic"][view])
        assert np.array_equal(out["sem_seg"], sample["sem_seg"][view])
        assert np.array_equal(out["masks"], sample["masks"][(slice(None), *view)])
        assert out["valid"].all()
    assert 0 < flipped < 8
    unflipped = LargeScaleJitter(crop_size=32, min_scale=1.0, max_scale=1.0, flip=False)
    for seed in range(8):
        assert np.array_equal(
            unflipped(sample, np.random.default_rng(seed))["image"], sample["image"]
        )


def test_lsj_padding_values_and_dropped_masks():
    sample = make_sample()
    out = LargeScaleJitter(crop_size=80, min_scale=0.25, max_scale=0.25)(
        sample, np.random.default_rng(0)
    )
    valid = out["valid"]
    assert valid.sum() == 20 * 14 and valid[:14, :20].all()  # 53x37 * min(20/37, 20/53)
    assert (out["image"][~valid] == 128).all()
    assert not out["masks"][:, ~valid].any()
    assert (out["panoptic"][~valid] == 0).all() and (out["sem_seg"][~valid] == 255).all()
    assert 42 not in {s["id"] for s in out["segments_info"]}  # the 1-pixel thing vanished
    assert len(out["masks"]) == len(out["labels"]) == 3
    assert_consistent(out)
    assert len(sample["masks"]) == 4 and len(sample["segments_info"]) == 5  # input untouched


def test_lsj_is_reproducible_from_the_generator():
    sample = make_sample()
    transform = LargeScaleJitter(crop_size=48, min_scale=0.1, max_scale=2.0)
    first = transform(sample, np.random.default_rng(123))
    second = transform(sample, np.random.default_rng(123))
    assert first.keys() == second.keys()
    for key in ("image", "masks", "labels", "panoptic", "sem_seg", "valid"):
        assert np.array_equal(first[key], second[key])
    assert first["segments_info"] == second["segments_info"]
    other = transform(sample, np.random.default_rng(124))
    assert not np.array_equal(first["image"], other["image"])


def test_lsj_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        LargeScaleJitter(min_scale=2.0, max_scale=1.0)


@pytest.mark.parametrize(
    ("size", "short", "max_size", "expected"),
    [
        ((37, 53), 64, 200, (64, 92)),
        ((480, 640), 800, 1333, (800, 1067)),
        ((40, 400), 80, 400, (40, 400)),  # the long side caps the scale
    ],
)
def test_resize_short_edge(size, short, max_size, expected):
    assert shortest_edge_size(*size, short, max_size) == expected
    sample = make_sample(*size)
    out = ResizeShortEdge(short, max_size)(sample)
    assert out["image"].shape == (*expected, 3)
    assert np.array_equal(
        out["image"],
        np.asarray(Image.fromarray(sample["image"]).resize(expected[::-1], Image.BILINEAR)),
    )
    assert out["masks"].shape[1:] == out["panoptic"].shape == out["sem_seg"].shape == expected
    assert_consistent(out)
    resized = Image.fromarray(sample["masks"][1].astype(np.uint8)).resize(
        expected[::-1], Image.NEAREST
    )
    assert np.array_equal(out["masks"][1], np.asarray(resized).astype(bool))
