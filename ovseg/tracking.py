"""Keeping instance identities across video frames: match each frame's instances to the
previous tracks by mask IoU, one to one, within the same class."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W), (M, H, W) bool -> (N, M) IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a_flat = a.reshape(len(a), -1).astype(np.float32)
    b_flat = b.reshape(len(b), -1).astype(np.float32)
    intersection = a_flat @ b_flat.T
    union = a_flat.sum(1)[:, None] + b_flat.sum(1)[None, :] - intersection
    return intersection / np.maximum(union, 1)


@dataclass
class Track:
    track_id: int
    label: int
    mask: np.ndarray
    last_frame: int


@dataclass
class IoUTracker:
    """Assigns a persistent id to every instance; a track survives ``max_gap`` frames unseen."""

    min_iou: float = 0.2
    max_gap: int = 5
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    frame: int = -1

    def update(self, masks: np.ndarray, labels: np.ndarray) -> list[int]:
        """This frame's instances (masks (N, H, W) bool, labels (N,)) -> their track ids."""
        self.frame += 1
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame <= self.max_gap]
        ids = [0] * len(masks)
        if self.tracks and len(masks):
            iou = mask_iou(masks, np.stack([t.mask for t in self.tracks]))
            same_class = np.asarray(labels)[:, None] == np.array([t.label for t in self.tracks])
            cost = np.where(same_class, -iou, 1.0)
            rows, cols = linear_sum_assignment(cost)
            for row, col in zip(rows, cols, strict=True):
                if same_class[row, col] and iou[row, col] >= self.min_iou:
                    track = self.tracks[col]
                    track.mask, track.last_frame = masks[row], self.frame
                    ids[row] = track.track_id
        for row, track_id in enumerate(ids):
            if track_id == 0:
                ids[row] = self.next_id
                self.tracks.append(Track(self.next_id, int(labels[row]), masks[row], self.frame))
                self.next_id += 1
        return ids


def track_segments(tracker: IoUTracker, segments: list[dict], size_hw: tuple[int, int]) -> None:
    """Give each of a frame's ``segments`` (:func:`ovseg.results.describe`'s, at ``size_hw``)
    its ``track_id``, kept across the frames ``tracker`` has seen."""
    ids = tracker.update(
        np.stack([s["mask"] for s in segments]) if segments else np.zeros((0, *size_hw), bool),
        np.array([s["class_id"] for s in segments], dtype=np.int64),
    )
    for segment, track_id in zip(segments, ids, strict=True):
        segment["track_id"] = track_id
