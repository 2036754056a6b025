"""COCO-panoptic and semantic-PNG datasets: samples, and one clear error per broken dataset."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.data import (
    DatasetError,
    PanopticDataset,
    SemanticDataset,
    builtin_panoptic,
    id_to_rgb,
    rgb_to_id,
)
from ovseg.synthetic.scenes import write_synthetic_panoptic
from ovseg.vocabulary import Vocabulary, parse_class_list, parse_vocabulary_text

SIZE = (40, 56)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    write_synthetic_panoptic(root, 4, size=SIZE, seed=11, max_things=4)
    return root


@pytest.fixture
def copy(generated, tmp_path):
    """A private copy of the generated dataset to break; returns (root, images, json, pngs)."""
    root = tmp_path / "copy"
    shutil.copytree(generated, root)
    return (
        root,
        root / "train" / "images",
        root / "train" / "panoptic.json",
        root / "train" / "panoptic",
    )


def _open(copy_paths, **kwargs):
    _, images, json_path, pngs = copy_paths
    return PanopticDataset(images, json_path, pngs, **kwargs)


def _edit_json(json_path, edit):
    data = json.loads(json_path.read_text())
    edit(data)
    json_path.write_text(json.dumps(data))


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 2**24 - 1, 123456]])
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb[1, 1].tolist() == [0, 0, 1]
    assert np.array_equal(rgb_to_id(rgb), ids)


def test_contiguous_index_follows_sorted_category_ids(copy):
    before = _open(copy)[0]
    _edit_json(copy[2], lambda d: d["categories"].reverse())
    dataset = _open(copy)
    after = dataset[0]
    assert [c["id"] for c in dataset.categories] == sorted(c["id"] for c in dataset.categories)
    assert np.array_equal(before["labels"], after["labels"])
    assert np.array_equal(before["sem_seg"], after["sem_seg"])
    assert dataset.category_index[101] == 14  # the first stuff id after the 14 things


def test_crowd_segments_are_not_targets_and_ignored_in_sem_seg(copy):
    plain = _open(copy)[1]
    crowd_id = plain["segments_info"][-1]["id"]

    def mark_crowd(data):
        for segment in data["annotations"][1]["segments_info"]:
            if segment["id"] == crowd_id:
                segment["iscrowd"] = 1

    _edit_json(copy[2], mark_crowd)
    sample = _open(copy)[1]
    assert len(sample["masks"]) == len(plain["masks"]) - 1 == len(sample["labels"])
    assert sample["segments_info"][-1]["iscrowd"] is True
    crowd_pixels = sample["panoptic"] == crowd_id
    assert crowd_pixels.any() and (sample["sem_seg"][crowd_pixels] == 255).all()
    assert not sample["masks"][:, crowd_pixels].any()


def test_vocabulary_must_match_the_category_count(copy):
    dataset = _open(copy)
    same_size = Vocabulary(
        tuple((f"class {i}", f"synonym {i}") for i in range(len(dataset.categories))),
        dataset.vocabulary.is_thing,
    )
    assert _open(copy, vocabulary=same_size).vocabulary is same_size
    with pytest.raises(DatasetError, match="has 2 classes but .*panoptic.json defines 19"):
        _open(copy, vocabulary=parse_class_list("cat, dog"))


def test_missing_json(copy):
    copy[2].unlink()
    with pytest.raises(DatasetError, match="panoptic JSON file not found: .*panoptic.json"):
        _open(copy)


def test_missing_image(copy):
    (copy[1] / "train_00002.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image file\(s\) .* missing .*: train_00002.png"):
        _open(copy)


def test_missing_panoptic_png(copy):
    (copy[3] / "train_00001.png").unlink()
    (copy[3] / "train_00003.png").unlink()
    with pytest.raises(DatasetError, match=r"2 panoptic PNG .*: train_00001.png, train_00003.png"):
        _open(copy)


def test_images_in_subfolders_cityscapes_style(copy):
    images = copy[1]
    for index, city in enumerate(("aachen", "bonn", "aachen", "cologne")):
        (images / city).mkdir(exist_ok=True)
        (images / f"train_{index:05d}.png").rename(images / city / f"train_{index:05d}.png")
    with pytest.raises(DatasetError, match=r"4 image file\(s\)"):
        _open(copy)
    dataset = _open(copy, search_subfolders=True)
    assert dataset[1]["file_name"].endswith("bonn/train_00001.png")


def test_segment_in_png_but_not_in_json(copy):
    removed = {}

    def drop_segment(data):
        removed["id"] = data["annotations"][2]["segments_info"].pop(0)["id"]

    _edit_json(copy[2], drop_segment)
    dataset = _open(copy)
    dataset[0]  # other images still load
    with pytest.raises(
        DatasetError, match=rf"segment id\(s\) {removed['id']} in .*train_00002.png"
    ):
        dataset[2]


def test_unknown_category(copy):
    _edit_json(copy[2], lambda d: d["annotations"][1]["segments_info"][0].update(category_id=999))
    with pytest.raises(DatasetError, match="unknown category id 999 .*train_00001.png"):
        _open(copy)


def test_image_and_png_size_mismatch(copy):
    path = copy[1] / "train_00003.png"
    Image.open(path).resize((SIZE[1] + 1, SIZE[0])).save(path)
    dataset = _open(copy)
    with pytest.raises(DatasetError, match="size mismatch: image .*train_00003.png is 57x40 but"):
        dataset[3]


def test_builtin_layout_and_data_root(generated, tmp_path, monkeypatch):
    monkeypatch.delenv("OVSEG_DATA", raising=False)
    with pytest.raises(DatasetError, match="OVSEG_DATA"):
        builtin_panoptic("coco_2017_val_panoptic")
    with pytest.raises(DatasetError, match="no built-in panoptic dataset 'coco'"):
        builtin_panoptic("coco", tmp_path)
    coco = tmp_path / "coco"
    shutil.copytree(generated / "train" / "images", coco / "val2017")
    shutil.copytree(generated / "train" / "panoptic", coco / "panoptic_val2017")
    with pytest.raises(DatasetError, match="annotations/panoptic_val2017.json"):
        builtin_panoptic("coco_2017_val_panoptic", tmp_path)
    (coco / "annotations").mkdir()
    shutil.copy(generated / "train" / "panoptic.json", coco / "annotations/panoptic_val2017.json")
    monkeypatch.setenv("OVSEG_DATA", str(tmp_path))
    # The built-in COCO vocabulary (133 classes) does not fit these 19 generated categories.
    with pytest.raises(DatasetError, match="'coco_panoptic' has 133 classes"):
        builtin_panoptic("coco_2017_val_panoptic")
    own = parse_vocabulary_text((generated / "vocab.txt").read_text())
    dataset = builtin_panoptic("coco_2017_val_panoptic", vocabulary=own)
    assert len(dataset) == 4 and dataset[0]["image"].shape == (*SIZE, 3)


def _write_semantic(root, labels, *, image_sizes=None):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index, (stem, label) in enumerate(labels.items()):
        height, width = image_sizes[index] if image_sizes else label.shape
        Image.new("RGB", (width, height), (10 * index, 0, 0)).save(root / "images" / f"{stem}.jpg")
        Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"{stem}.png")
    return root / "images", root / "labels"


VOCAB3 = parse_class_list("grass, water, sky")


def test_semantic_samples(tmp_path):
    first = np.array([[0, 0, 2], [255, 2, 2]])
    second = np.array([[1, 1, 1], [1, 1, 255]])
    images, labels = _write_semantic(tmp_path, {"b": second, "a": first})
    dataset = SemanticDataset(images, labels, VOCAB3)
    assert dataset.stems == ["a", "b"] and len(dataset) == 2
    sample = dataset[0]
    assert sample["image_id"] == "a" and sample["image"].shape == (2, 3, 3)
    assert np.array_equal(sample["sem_seg"], first) and sample["sem_seg"].dtype == np.int64
    assert sample["labels"].tolist() == [0, 2]
    assert np.array_equal(sample["masks"], np.stack([first == 0, first == 2]))
    assert "panoptic" not in sample and "segments_info" not in sample


def test_semantic_other_ignore_label_becomes_255(tmp_path):
    images, labels = _write_semantic(tmp_path, {"a": np.array([[0, 1], [2, 0]])})
    sample = SemanticDataset(images, labels, VOCAB3, ignore_label=0)[0]
    assert sample["sem_seg"].tolist() == [[255, 1], [2, 255]]
    assert sample["labels"].tolist() == [1, 2]


def test_semantic_unpaired_files(tmp_path):
    images, labels = _write_semantic(tmp_path, {"a": np.zeros((2, 2)), "b": np.zeros((2, 2))})
    (images / "b.jpg").rename(images / "c.jpg")
    with pytest.raises(DatasetError, match=r"1 image\(s\) without a .png label .*: c; 1 label"):
        SemanticDataset(images, labels, VOCAB3)


def test_semantic_bad_label_value(tmp_path):
    images, labels = _write_semantic(tmp_path, {"a": np.array([[0, 3], [7, 255]])})
    dataset = SemanticDataset(images, labels, VOCAB3)
    with pytest.raises(DatasetError, match=r"a.png has label value\(s\) 3, 7 outside 0..2"):
        dataset[0]


def test_semantic_size_mismatch(tmp_path):
    images, labels = _write_semantic(tmp_path, {"a": np.zeros((4, 6))}, image_sizes=[(4, 5)])
    with pytest.raises(DatasetError, match="size mismatch: image .*a.jpg is 5x4 but label"):
        SemanticDataset(images, labels, VOCAB3)[0]


@pytest.mark.parametrize(
    "where, field",
    [("segment", "category_id"), ("segment", "id"), ("image", "id"), ("image", "file_name")],
)
def test_a_missing_json_field_is_one_line_naming_it(tmp_path, capsys, where, field):
    """A COCO-panoptic JSON without a segment's category_id or id, or an image's id or
    file_name, used to end tools/eval.py and tools/train.py with a bare KeyError."""
    json_path = Path(write_synthetic_panoptic(tmp_path, 2, size=SIZE, seed=0))
    data = json.loads(json_path.read_text())
    entry = data["annotations"][0]["segments_info"][0] if where == "segment" else data["images"][0]
    del entry[field]
    json_path.write_text(json.dumps(data))
    split = json_path.parent
    with pytest.raises(DatasetError, match=f"{where} .* lacks '{field}'"):
        PanopticDataset(split / "images", json_path, split / "panoptic")
    from ovseg.apps.eval import main as eval_main
    from ovseg.apps.train import main as train_main

    paths = ["--images", split / "images", "--panoptic-json", json_path]
    paths += ["--panoptic-dir", split / "panoptic"]
    for main, extra in ((eval_main, []), (train_main, ["--output", tmp_path / "run"])):
        assert main([str(a) for a in paths + extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and f"lacks '{field}'" in err and "\n" not in err
