"""Instance identities across frames on a generated clip of moving, crossing shapes."""

import numpy as np

from ovseg.tracking import IoUTracker, mask_iou


def disk(center, radius, size=(64, 96)):
    yy, xx = np.mgrid[: size[0], : size[1]]
    return (yy - center[1]) ** 2 + (xx - center[0]) ** 2 <= radius**2


def test_mask_iou_by_hand():
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b = np.zeros((2, 4, 4), bool)
    b[0, :1] = True
    b[1, 2:] = True
    np.testing.assert_allclose(mask_iou(a, b), [[0.5, 0.0]])


def test_identities_stay_stable_on_moving_shapes():
    tracker = IoUTracker()
    history = []
    for frame in range(20):
        # Two discs of one class move towards each other and cross; a disc of another class
        # sits still; the order of detections is shuffled every frame.
        objects = [
            (0, disk((10 + 3 * frame, 20), 8)),
            (0, disk((85 - 3 * frame, 44), 8)),
            (1, disk((48, 56), 6)),
        ]
        order = np.random.default_rng(frame).permutation(3)
        masks = np.stack([objects[i][1] for i in order])
        labels = np.array([objects[i][0] for i in order])
        ids = tracker.update(masks, labels)
        history.append({int(order[k]): ids[k] for k in range(3)})
    first = history[0]
    assert sorted(first.values()) == [1, 2, 3]
    assert all(frame_ids == first for frame_ids in history)


def test_a_new_object_gets_a_new_id_and_lost_tracks_expire():
    tracker = IoUTracker(max_gap=1)
    a = disk((20, 20), 6)[None]
    assert tracker.update(a, np.array([0])) == [1]
    assert tracker.update(np.zeros((0, 64, 96), bool), np.zeros(0, int)) == []
    assert tracker.update(np.zeros((0, 64, 96), bool), np.zeros(0, int)) == []
    assert tracker.update(a, np.array([0])) == [2]  # gone too long: a new identity
    # Same place, another class: not the same object.
    assert tracker.update(a, np.array([1])) == [3]
