"""Semantic-segmentation datasets stored as an image folder and a folder of class-index PNGs
(ADE20K-150, Pascal Context, Pascal VOC after the usual conversion scripts, user data).

Images and labels are paired by file stem. A label pixel is a class index into the given
vocabulary, or ``ignore_label``. A sample is a dict: image (H, W, 3) uint8; sem_seg (H, W)
int64 with ignore = 255 (the ignore value is kept as ``ignore_label`` when the vocabulary has
more than 255 classes, e.g. ADE20K-847 with 65535); masks (N, H, W) bool and labels (N,) int64,
one per class present, in increasing class order; image_id (the stem); file_name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.errors import DatasetError, first_few
from ovseg.data.label_io import load_image_and_label, read_semantic_png
from ovseg.vocabulary import Vocabulary

IGNORE_LABEL = 255


def _stems(directory: Path, suffix: str, kind: str) -> dict[str, Path]:
    if not directory.is_dir():
        raise DatasetError(f"{kind} folder not found: {directory}")
    return {p.name[: -len(suffix)]: p for p in directory.iterdir() if p.name.endswith(suffix)}


class SemanticDataset:
    """Image folder + label folder, paired by file stem; ``dataset[i]`` is a sample dict."""

    def __init__(
        self,
        image_dir: str | Path,
        label_dir: str | Path,
        vocabulary: Vocabulary,
        *,
        image_suffix: str = ".jpg",
        label_suffix: str = ".png",
        ignore_label: int = IGNORE_LABEL,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.label_dir = Path(label_dir)
        self.vocabulary = vocabulary
        self.ignore_label = ignore_label
        num_classes = len(vocabulary)
        if num_classes > IGNORE_LABEL and ignore_label < num_classes:
            raise DatasetError(
                f"the vocabulary has {num_classes} classes, so the ignore label must be at least "
                f"{num_classes} (got {ignore_label}); ADE20K-847 uses 65535"
            )
        # The value that marks ignored pixels in samples: 255 unless that is a class index.
        self.sample_ignore_label = IGNORE_LABEL if num_classes <= IGNORE_LABEL else ignore_label
        images = _stems(self.image_dir, image_suffix, "image")
        labels = _stems(self.label_dir, label_suffix, "label")
        unpaired_images = images.keys() - labels.keys()
        unpaired_labels = labels.keys() - images.keys()
        if unpaired_images or unpaired_labels:
            parts = []
            if unpaired_images:
                parts.append(
                    f"{len(unpaired_images)} image(s) without a {label_suffix} label in "
                    f"{self.label_dir}: {first_few(unpaired_images)}"
                )
            if unpaired_labels:
                parts.append(
                    f"{len(unpaired_labels)} label(s) without a {image_suffix} image in "
                    f"{self.image_dir}: {first_few(unpaired_labels)}"
                )
            raise DatasetError("; ".join(parts))
        if not images:
            raise DatasetError(f"no {image_suffix} images in {self.image_dir}")
        self.stems = sorted(images)
        self._images = images
        self._labels = labels

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        image_path, label_path = self._images[stem], self._labels[stem]
        image, label = load_image_and_label(image_path, label_path, read_semantic_png, "label")
        ignored = label == self.ignore_label
        num_classes = len(self.vocabulary)
        bad = np.unique(label[~ignored & ((label < 0) | (label >= num_classes))])
        if bad.size:
            raise DatasetError(
                f"{label_path} has label value(s) {', '.join(str(v) for v in bad[:5])} outside "
                f"0..{num_classes - 1} (the vocabulary has {num_classes} classes; ignore = "
                f"{self.ignore_label})"
            )
        sem_seg = np.where(ignored, self.sample_ignore_label, label).astype(np.int64)
        present = np.unique(label[~ignored])
        masks = label[None] == present[:, None, None]
        return {
            "image": image,
            "sem_seg": sem_seg,
            "masks": masks,
            "labels": present.astype(np.int64),
            "image_id": stem,
            "file_name": str(image_path),
        }
