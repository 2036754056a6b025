"""Datasets in the COCO-panoptic format (COCO, ADE20K-panoptic, Cityscapes-panoptic, user data).

A dataset is three things: a folder of images, a JSON file and a folder of panoptic PNGs. The
JSON holds ``images`` ([{id, file_name, height, width}]), ``annotations`` ([{image_id,
file_name (of the PNG), segments_info: [{id, category_id, iscrowd, bbox, area}]}]) and
``categories`` ([{id, name, isthing}]). A PNG pixel's segment id is R + 256 G + 256^2 B; 0 is
unlabeled. The contiguous class index of a category is its position in the categories sorted by id.

Standard folder layouts under a data root (``$OVSEG_DATA`` by default, see builtin_panoptic):

    coco/train2017/                       images        (coco_2017_train_panoptic)
    coco/annotations/panoptic_train2017.json            (or coco/panoptic_train2017.json)
    coco/panoptic_train2017/              panoptic PNGs
    coco/val2017/, coco/annotations/panoptic_val2017.json, coco/panoptic_val2017/
                                                        (coco_2017_val_panoptic)
    ADEChallengeData2016/images/validation/             (ade20k_panoptic_val)
    ADEChallengeData2016/ade20k_panoptic_val.json
    ADEChallengeData2016/ade20k_panoptic_val/
    cityscapes/leftImg8bit/val/<city>/*_leftImg8bit.png (cityscapes_fine_panoptic_val)
    cityscapes/gtFine/cityscapes_panoptic_val.json
    cityscapes/gtFine/cityscapes_panoptic_val/

The ADE20K and Cityscapes JSON/PNGs are made by the official conversion scripts
(detectron2's ``prepare_ade20k_pan_seg.py``, cityscapesScripts' ``createPanopticImgs``).
Cityscapes keeps its images in per-city folders, so it is read with ``search_subfolders=True``.

A sample is a plain dict:
    image (H, W, 3) uint8 RGB; masks (N, H, W) bool and labels (N,) int64, one per non-crowd
    segment, in the order of the non-crowd entries of segments_info; panoptic (H, W) int32
    segment ids (0 = void); segments_info [{id, category_id (contiguous), iscrowd, isthing}] for
    every listed segment (one drawn nowhere in the PNG too: it has no mask, and PQ counts it
    as a false negative, as panopticapi does); sem_seg (H, W) int64 (crowd and void = 255);
    image_id; file_name (the image path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ovseg.data.errors import DatasetError, first_few
from ovseg.data.label_io import load_image_and_label, read_panoptic_png
from ovseg.vocabulary import Vocabulary, split_synonyms

IGNORE_LABEL = 255
DATA_ROOT_ENV = "OVSEG_DATA"


def _locate_files(
    directory: Path, names: list[str], *, search_subfolders: bool
) -> tuple[list[Path], list[str]]:
    """The path of each name (relative to ``directory``, or found by file name anywhere under
    it when ``search_subfolders``) and the names with no file; one listing per folder."""
    if search_subfolders:
        found = {f: Path(root) / f for root, _, files in os.walk(directory) for f in files}
    else:
        found = {}
        for folder in {(directory / name).parent for name in names}:
            if folder.is_dir():
                found.update({str(folder / f): folder / f for f in os.listdir(folder)})
    keys = [Path(n).name if search_subfolders else str(directory / n) for n in names]
    pairs = list(zip(names, keys, strict=True))
    missing = [name for name, key in pairs if key not in found]
    return [found.get(key, directory / name) for name, key in pairs], missing


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"panoptic JSON file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path} is not valid JSON ({error})") from error
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if not isinstance(data, dict) or missing:
        raise DatasetError(f"{path} lacks the COCO-panoptic key(s) {missing}")
    return data


def _require_fields(entry: Any, fields: tuple[str, ...], what: str, path: Path) -> None:
    """DatasetError naming the entry and its missing fields (COCO-panoptic requires them)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: {what} {entry!r} is not an object")
    missing = [f for f in fields if f not in entry]
    if missing:
        shown = json.dumps(entry)[:120]
        raise DatasetError(
            f"{path}: {what} {shown} lacks {', '.join(repr(f) for f in missing)}: every "
            f"{what} needs {', '.join(fields)} (COCO panoptic format)"
        )


class PanopticDataset:
    """COCO-panoptic-format dataset; ``dataset[i]`` is a sample dict (see the module docstring).

    ``vocabulary`` (optional) replaces the category names, e.g. with synonym lists; it must have
    one class per category. ``search_subfolders`` finds images by file name anywhere under
    ``image_dir`` (Cityscapes; the names must then be unique). Missing files and unknown
    categories are reported when the dataset is built; PNG/JSON disagreements when a sample is
    read.
    """

    def __init__(
        self,
        image_dir: str | Path,
        panoptic_json: str | Path,
        panoptic_dir: str | Path,
        *,
        vocabulary: Vocabulary | None = None,
        search_subfolders: bool = False,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.panoptic_json = Path(panoptic_json)
        self.panoptic_dir = Path(panoptic_dir)
        data = _load_json(self.panoptic_json)
        self.categories = self._read_categories(data["categories"])
        self.category_index = {c["id"]: i for i, c in enumerate(self.categories)}
        self.vocabulary = self._make_vocabulary(vocabulary)
        self.annotations = self._read_annotations(data)
        image_names = [a["image"]["file_name"] for a in self.annotations]
        self._image_paths = self._require_files(
            self.image_dir, image_names, "image", search_subfolders
        )
        png_names = [a["file_name"] for a in self.annotations]
        self._require_files(self.panoptic_dir, png_names, "panoptic PNG", False)

    def _read_categories(self, categories: list[dict]) -> list[dict]:
        for category in categories:
            absent = [k for k in ("id", "name", "isthing") if k not in category]
            if absent:
                raise DatasetError(f"{self.panoptic_json}: category {category} lacks {absent}")
        ids = [c["id"] for c in categories]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            twice = first_few(duplicates)
            raise DatasetError(f"{self.panoptic_json}: category id(s) {twice} appear twice")
        if not categories:
            raise DatasetError(f"{self.panoptic_json}: the categories list is empty")
        return sorted(categories, key=lambda c: c["id"])

    def _make_vocabulary(self, vocabulary: Vocabulary | None) -> Vocabulary:
        if vocabulary is None:
            return Vocabulary(
                tuple(split_synonyms(c["name"]) or (str(c["id"]),) for c in self.categories),
                tuple(bool(c["isthing"]) for c in self.categories),
                name=self.panoptic_json.stem,
            )
        if len(vocabulary) != len(self.categories):
            raise DatasetError(
                f"the vocabulary '{vocabulary.name}' has {len(vocabulary)} classes but "
                f"{self.panoptic_json} defines {len(self.categories)} categories"
            )
        return vocabulary

    def _read_annotations(self, data: dict[str, Any]) -> list[dict]:
        for image in data["images"]:
            _require_fields(image, ("id", "file_name"), "image", self.panoptic_json)
        images = {image["id"]: image for image in data["images"]}
        annotations = []
        for annotation in data["annotations"]:
            _require_fields(
                annotation,
                ("image_id", "file_name", "segments_info"),
                "annotation",
                self.panoptic_json,
            )
            image = images.get(annotation.get("image_id"))
            if image is None:
                raise DatasetError(
                    f"{self.panoptic_json}: annotation {annotation.get('file_name')} refers to "
                    f"image_id {annotation.get('image_id')!r}, which is not in 'images'"
                )
            for segment in annotation["segments_info"]:
                _require_fields(segment, ("id", "category_id"), "segment", self.panoptic_json)
                if segment["category_id"] not in self.category_index:
                    raise DatasetError(
                        f"{self.panoptic_json}: unknown category id {segment['category_id']} "
                        f"(segment {segment['id']} of {annotation['file_name']})"
                    )
            annotations.append({**annotation, "image": image})
        return annotations

    def _require_files(
        self, directory: Path, names: list[str], kind: str, search_subfolders: bool
    ) -> list[Path]:
        """The path of each named file; an error listing the missing ones."""
        if not directory.is_dir():
            raise DatasetError(f"{kind} folder not found: {directory}")
        paths, missing = _locate_files(directory, names, search_subfolders=search_subfolders)
        if missing:
            raise DatasetError(
                f"{len(missing)} {kind} file(s) listed in {self.panoptic_json.name} are "
                f"missing from {directory}: {first_few(missing)}"
            )
        return paths

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        annotation = self.annotations[index]
        image_path = self._image_paths[index]
        png_path = self.panoptic_dir / annotation["file_name"]
        image, panoptic = load_image_and_label(
            image_path, png_path, read_panoptic_png, "panoptic PNG"
        )
        return self._make_sample(annotation, image, panoptic, image_path, png_path)

    def _make_sample(
        self,
        annotation: dict,
        image: np.ndarray,
        panoptic: np.ndarray,
        image_path: Path,
        png_path: Path,
    ) -> dict[str, Any]:
        present, inverse = np.unique(panoptic, return_inverse=True)
        inverse = inverse.reshape(panoptic.shape)
        slot = {int(segment_id): k for k, segment_id in enumerate(present)}
        described = {s["id"] for s in annotation["segments_info"]}
        undescribed = [int(i) for i in present if i != 0 and int(i) not in described]
        if undescribed:
            raise DatasetError(
                f"segment id(s) {first_few(undescribed)} in {png_path} are not in its "
                f"segments_info in {self.panoptic_json.name}"
            )
        segments, masks, labels = [], [], []
        sem_seg = np.full(panoptic.shape, IGNORE_LABEL, dtype=np.int64)
        for segment in annotation["segments_info"]:
            label = self.category_index[segment["category_id"]]
            iscrowd = bool(segment.get("iscrowd", 0))
            info = {
                "id": int(segment["id"]),
                "category_id": label,
                "iscrowd": iscrowd,
                "isthing": bool(self.categories[label]["isthing"]),
            }
            # A segment listed but drawn nowhere stays in segments_info: panopticapi counts it
            # as a false negative. It has no mask to learn from (transforms drop it).
            segments.append(info)
            if segment["id"] not in slot:
                continue
            if not iscrowd:
                mask = inverse == slot[segment["id"]]
                masks.append(mask)
                labels.append(label)
                sem_seg[mask] = label
        height, width = panoptic.shape
        return {
            "image": image,
            "masks": np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool),
            "labels": np.asarray(labels, dtype=np.int64),
            "panoptic": panoptic.astype(np.int32),
            "segments_info": segments,
            "sem_seg": sem_seg,
            "image_id": annotation["image_id"],
            "file_name": str(image_path),
        }


# name -> (image folder, JSON candidates (first existing wins), PNG folder, search_subfolders)
BUILTIN_PANOPTIC: dict[str, tuple[str, tuple[str, ...], str, bool]] = {
    "coco_2017_train_panoptic": (
        "coco/train2017",
        ("coco/annotations/panoptic_train2017.json", "coco/panoptic_train2017.json"),
        "coco/panoptic_train2017",
        False,
    ),
    "coco_2017_val_panoptic": (
        "coco/val2017",
        ("coco/annotations/panoptic_val2017.json", "coco/panoptic_val2017.json"),
        "coco/panoptic_val2017",
        False,
    ),
    "ade20k_panoptic_val": (
        "ADEChallengeData2016/images/validation",
        ("ADEChallengeData2016/ade20k_panoptic_val.json",),
        "ADEChallengeData2016/ade20k_panoptic_val",
        False,
    ),
    "cityscapes_fine_panoptic_val": (
        "cityscapes/leftImg8bit/val",
        ("cityscapes/gtFine/cityscapes_panoptic_val.json",),
        "cityscapes/gtFine/cityscapes_panoptic_val",
        True,
    ),
}


# The vocabulary (FC-CLIP's prompt-engineered synonyms) each built-in dataset is used with.
BUILTIN_VOCABULARY = {
    "coco_2017_train_panoptic": "coco_panoptic",
    "coco_2017_val_panoptic": "coco_panoptic",
    "ade20k_panoptic_val": "ade20k_150",
    "cityscapes_fine_panoptic_val": "cityscapes",
}


def builtin_panoptic(
    name: str, data_root: str | Path | None = None, *, vocabulary: Vocabulary | None = None
) -> PanopticDataset:
    """A standard dataset by name, in the folder layout of the module docstring.

    ``data_root`` defaults to the environment variable OVSEG_DATA. The vocabulary defaults
    to the dataset's shipped one with FC-CLIP's synonyms (BUILTIN_VOCABULARY).
    """
    if name not in BUILTIN_PANOPTIC:
        choices = first_few(BUILTIN_PANOPTIC, 10)
        raise DatasetError(f"no built-in panoptic dataset '{name}': use one of {choices}")
    if data_root is None:
        data_root = os.environ.get(DATA_ROOT_ENV)
        if not data_root:
            raise DatasetError(
                f"no data root for '{name}': pass data_root or set the environment variable "
                f"{DATA_ROOT_ENV} to the folder holding coco/, ADEChallengeData2016/ ..."
            )
    if vocabulary is None:
        from ovseg.vocabulary import load_vocabulary

        vocabulary = load_vocabulary(BUILTIN_VOCABULARY[name])
    root = Path(data_root)
    image_dir, json_candidates, png_dir, search_subfolders = BUILTIN_PANOPTIC[name]
    json_path = next((root / c for c in json_candidates if (root / c).is_file()), None)
    if json_path is None:
        looked = ", ".join(str(root / c) for c in json_candidates)
        raise DatasetError(f"'{name}': panoptic JSON not found: looked for {looked}")
    return PanopticDataset(
        root / image_dir,
        json_path,
        root / png_dir,
        vocabulary=vocabulary,
        search_subfolders=search_subfolders,
    )
