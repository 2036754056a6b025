"""SAM as a mask source: the zoo, checkpoint loading, labelling masks, results from masks,
and prompts through a tiny random SAM (segment_anything.modeling, small image encoder)."""

import hashlib

import numpy as np
import pytest
import torch

from ovseg import model_zoo
from ovseg.checkpoint import WeightsError
from ovseg.modeling.transformer_decoder import mask_pooling
from ovseg.sam.labels import pool_mask_logits, results_from_masks
from ovseg.sam.masks import SamMasks
from ovseg.sam.zoo import SAM_ZOO, build_sam, download_sam, load_sam, sam_weights


@pytest.fixture(scope="module")
def tiny_sam():
    torch.manual_seed(0)
    return build_sam("tiny")


@pytest.fixture
def tiny_sam_file(tiny_sam, tmp_path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    return path


def test_zoo_has_the_three_official_checkpoints():
    for name, prefix in (("vit_b", "01ec64"), ("vit_l", "0b3195"), ("vit_h", "4b8939")):
        entry = SAM_ZOO[name]
        assert (
            entry.url == f"https://dl.fbaipublicfiles.com/segment_anything/sam_{name}_{prefix}.pth"
        )
        assert len(entry.sha256) == 64 and entry.size > 300_000_000


def test_missing_sam_weights_say_where_to_put_them():
    with pytest.raises(FileNotFoundError) as error:
        sam_weights("vit_b")
    message = str(error.value)
    assert str(model_zoo.weights_dir() / "sam_vit_b_01ec64.pth") in message
    assert "--sam-weights FILE" in message
    with pytest.raises(FileNotFoundError, match="no released weights"):
        sam_weights("tiny")


def test_sam_download_checks_size_and_checksum(tmp_path, monkeypatch):
    release = tmp_path / "release.pth"
    torch.save({"w": torch.zeros(3)}, release)
    data = release.read_bytes()
    entry = model_zoo.ZooEntry(
        name="vit_b",
        config="vit_b",
        filename="sam_vit_b_01ec64.pth",
        description="test",
        url=release.as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        weights_flag="--sam-weights",
    )
    monkeypatch.setitem(SAM_ZOO, "vit_b", entry)
    path = download_sam("vit_b", progress=False)
    assert path.read_bytes() == data and sam_weights("vit_b") == path
    path.unlink()
    monkeypatch.setitem(SAM_ZOO, "vit_b", model_zoo.ZooEntry(**{**entry.__dict__, "size": 1}))
    with pytest.raises(ValueError, match="--sam-weights FILE"):
        download_sam("vit_b", progress=False)
    assert not path.exists()


def test_load_sam_is_strict_and_names_the_architecture(tiny_sam, tiny_sam_file, tmp_path):
    loaded = load_sam("tiny", weights=tiny_sam_file)
    for key, value in tiny_sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(WeightsError, match="look like SAM tiny: pass --sam-model tiny"):
        load_sam("vit_b", weights=tiny_sam_file)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(tiny_sam_file.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt"):
        load_sam("tiny", weights=corrupt)


def test_pooling_follows_fcclip_and_falls_back_to_soft_weights_for_tiny_masks():
    torch.manual_seed(0)
    dense = torch.randn(1, 8, 4, 5)
    logits = -torch.ones(3, 128, 160)
    logits[0, :64, :80] = 1  # a quarter: FC-CLIP's binary pooling
    logits[1, 3:6, 40:44] = 1  # 3x4 pixels inside one 32x32 cell (row 0, col 1)
    pooled, soft = pool_mask_logits(dense, logits)
    assert soft.tolist() == [False, True, False]
    assert torch.allclose(pooled[0], mask_pooling(dense, logits[None])[0, 0])
    assert torch.allclose(pooled[1], dense[0, :, 0, 1], atol=1e-6)  # that cell's feature
    assert torch.equal(pooled[2], torch.zeros(8))  # empty stays empty


def test_results_from_masks_follow_mask2former_rules():
    masks = torch.zeros(3, 10, 10, dtype=torch.bool)
    masks[0, :, :8] = True  # class 0 (thing), prob 0.6
    masks[1, :, 7:] = True  # class 1 (thing), prob 0.9: wins the overlap
    masks[2, :2, :2] = True  # stuff (class 2), prob 0.7: takes its corner from mask 0
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.9, 0.05], [0.2, 0.1, 0.7]])
    quality = torch.tensor([1.0, 0.5, 1.0])
    is_thing = torch.tensor([True, True, False])
    result = results_from_masks(
        masks, probs, quality, is_thing, tasks=("panoptic", "semantic", "instance")
    )
    panoptic, segments = result["panoptic_seg"], result["segments_info"]
    assert [s["category_id"] for s in segments] == [1, 2, 0]  # by score
    assert (panoptic[:, 7:] == segments[0]["id"]).all()
    assert (panoptic[:2, :2] == segments[1]["id"]).all()
    assert (panoptic[2:, :7] == segments[2]["id"]).all()  # 66 of its 80 pixels: kept
    masks[1, :, 6] = True  # now 56 of 80 stay visible: below 0.8, dropped
    dropped = results_from_masks(masks, probs, quality, is_thing, tasks=("panoptic",))
    assert [s["category_id"] for s in dropped["segments_info"]] == [1, 2]
    masks[1, :, 6] = False
    sem = result["sem_seg"]
    assert torch.allclose(sem[:, 5, 7], probs[0] + probs[1])
    instances = result["instances"]
    assert instances["labels"].tolist() == [0, 1]  # mask 2's best class is stuff: not listed
    assert torch.allclose(instances["scores"], torch.tensor([0.6, 0.45]))


def test_semantic_label_map_leaves_uncovered_pixels_void(parity_predictor):
    from ovseg.results import describe

    vocab = parity_predictor.set_vocabulary(["cat", "dog"])
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, :3] = True
    result = results_from_masks(
        masks,
        torch.tensor([[0.2, 0.8]]),
        torch.ones(1),
        torch.tensor([True, True]),
        tasks=("semantic",),
    )
    result["vocabulary"] = vocab
    label_map, segments = describe(result, "semantic")
    assert (label_map[:3] == 1).all() and (label_map[3:] == 255).all()
    assert [s["class"] for s in segments] == ["dog"]


def test_prompts_through_tiny_sam_give_one_labelled_mask_per_object(parity_predictor, tiny_sam):
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    sam = SamMasks(tiny_sam)
    result = parity_predictor.segment_prompts(
        image,
        points=[[10, 12]],
        boxes=[[0, 0, 30, 30], [20, 10, 60, 40]],
        vocabulary=["cat", "dog", "sky"],
        sam=sam,
    )
    assert [p["prompt"] for p in result["prompts"]] == [
        "box 0,0,30,30",
        "box 20,10,60,40",
        "positive point at 10,12",
    ]
    instances = result["instances"]
    assert instances["masks"].shape == (3, 48, 64)
    for prompt, probs, label in zip(
        result["prompts"], result["mask_probs"], instances["labels"], strict=False
    ):
        scores = [c["score"] for c in prompt["top_classes"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert prompt["top_classes"][0]["class_id"] == int(label) == int(probs.argmax())
        assert abs(float(probs.sum()) - 1) < 1e-5
    # Labels are the out-of-vocabulary branch's on the same masks.
    features = parity_predictor.encode(image)
    embeds = parity_predictor.pool_masks(features, instances["masks"].numpy())
    logits = parity_predictor.model.out_vocab_logits(embeds[None], parity_predictor.classifier)
    assert torch.allclose(logits[0, :, :-1].softmax(-1), result["mask_probs"], atol=1e-5)
    # The same image again: SAM's image encoder does not run twice.
    parity_predictor.segment_prompts(image, points=[[5, 5]], sam=sam)
    assert sam.image_encodes == 1


def test_automatic_masks_are_labelled_in_every_task(parity_predictor, tiny_sam):
    from ovseg.results import describe
    from ovseg.sam.segment import segment_automatic

    image = (np.random.default_rng(1).random((40, 52, 3)) * 255).astype(np.uint8)
    parity_predictor.set_vocabulary(["cat", "dog", "sky"])
    sam = SamMasks(tiny_sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    result = segment_automatic(
        parity_predictor, image, sam, tasks=("panoptic", "semantic", "instance")
    )
    count = len(result["mask_set"].masks)
    assert count >= 1 and result["mask_probs"].shape == (count, 3)
    for task in ("panoptic", "semantic", "instance"):
        label_map, _ = describe(result, task)
        assert label_map.shape == (40, 52)


def test_model_without_prompt_head_says_to_use_sam(parity_predictor):
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="no prompt head: use SAM"):
        parity_predictor.segment_prompts(image, points=[[3, 3]], vocabulary=["cat"])
