"""The keep-novel panoptic rule (issue 34): queries whose best class is unseen in training are
kept although the in-vocabulary head, taught to call unlabelled classes "no object", says
so; off by default (the official rule, parity exact)."""

import dataclasses

import pytest
import torch

from ovseg.modeling import postprocess

# Two classes (0 seen, 1 novel) and void. Query 0: void most likely, then the novel class;
# query 1: void most likely, then the seen class; query 2: the seen class wins outright.
LOGITS = torch.log(torch.tensor([[0.05, 0.25, 0.70], [0.25, 0.05, 0.70], [0.80, 0.10, 0.10]]))
NOVEL = torch.tensor([False, True])


def _masks() -> torch.Tensor:
    """Query 0 covers the left half, query 1 the whole image, query 2 the right half."""
    masks = torch.full((3, 8, 8), -10.0)
    masks[0, :, :4] = 10.0
    masks[1] = 10.0
    masks[2, :, 4:] = 10.0
    return masks


def test_keeps_a_query_the_official_rule_drops():
    assert postprocess.panoptic_queries(LOGITS).tolist() == [False, False, True]
    kept = postprocess.panoptic_queries(LOGITS, novel_classes=NOVEL)
    assert kept.tolist() == [True, False, True]  # query 1's best class is seen: still dropped

    official_map, official = postprocess.panoptic_inference(LOGITS, _masks(), NOVEL)
    keep_map, segments = postprocess.panoptic_inference(
        LOGITS, _masks(), NOVEL, novel_classes=NOVEL
    )
    assert [s["category_id"] for s in official] == [0]
    assert (official_map[:, :4] == 0).all()  # the novel object is in no segment
    assert [s["category_id"] for s in segments] == [1, 0]
    assert segments[0]["score"] == pytest.approx(0.25)  # its no-object share stays in the score
    assert (keep_map[:, :4] == segments[0]["id"]).all()
    assert (keep_map[:, 4:] == segments[1]["id"]).all()


def test_a_kept_novel_query_takes_only_pixels_no_confident_query_claims():
    masks = _masks()
    masks[0] = 10.0  # the novel query now covers the seen query's half too
    panoptic, segments = postprocess.panoptic_inference(LOGITS, masks, NOVEL, novel_classes=NOVEL)
    # query 0 owns the left half only (area ratio 0.5 < 0.8): no segment, the seen one stays
    assert [s["category_id"] for s in segments] == [0]
    assert (panoptic[:, 4:] == segments[0]["id"]).all()


def test_off_or_no_novel_class_is_the_official_rule():
    logits = torch.randn(40, 6) * 3
    masks = torch.randn(40, 16, 16) * 4
    is_thing = torch.tensor([True, False, True, False, True])
    official = postprocess.panoptic_inference(logits, masks, is_thing)
    for novel in (None, torch.zeros(5, dtype=torch.bool)):
        kept = postprocess.panoptic_queries(logits, novel_classes=novel)
        assert torch.equal(kept, postprocess.panoptic_queries(logits))
        panoptic, segments = postprocess.panoptic_inference(
            logits, masks, is_thing, novel_classes=novel
        )
        assert torch.equal(panoptic, official[0]) and segments == official[1]


@pytest.fixture(scope="module")
def world_scenes(tmp_path_factory):
    from ovseg.data import PanopticDataset
    from ovseg.synthetic.scenes import write_synthetic_panoptic

    root = tmp_path_factory.mktemp("world")
    path = write_synthetic_panoptic(root, 12, split="val", seed=0)
    return PanopticDataset(path.parent / "images", path, path.parent / "panoptic")


def test_synthetic_tiny_finds_novel_segments_with_it(world_scenes):
    """The shipped model, trained with novel classes void: the official rule gives novel
    classes (almost) no panoptic segment on these scenes; keep-novel gives them several,
    and the semantic output is unchanged."""
    from ovseg.predictor import OVSegPredictor

    official = OVSegPredictor.from_pretrained("synthetic_tiny", use_disk_text_cache=False)
    keeping = OVSegPredictor(official.model, official.cfg, keep_novel=True)
    assert official.cfg.inference.keep_novel is False  # the caller's config is untouched
    novel_segments, semantic = {}, {}
    for name, predictor in (("official", official), ("keep_novel", keeping)):
        predictor.set_vocabulary(world_scenes.vocabulary)
        novel = [not s for s in predictor.seen]
        novel_segments[name], semantic[name] = 0, []
        for index in range(len(world_scenes)):
            result = predictor.predict(world_scenes[index]["image"], tasks=("panoptic", "semantic"))
            novel_segments[name] += sum(novel[s["category_id"]] for s in result["segments_info"])
            semantic[name].append(result["sem_seg"])
    assert novel_segments["keep_novel"] >= 2 * novel_segments["official"] + 3, novel_segments
    for official_scores, keeping_scores in zip(*semantic.values(), strict=True):
        assert torch.equal(official_scores, keeping_scores)


def test_refused_where_the_frozen_clip_has_no_say(parity_predictor):
    from ovseg.predictor import OVSegPredictor

    cfg = dataclasses.replace(
        parity_predictor.cfg,
        inference=dataclasses.replace(parity_predictor.cfg.inference, out_vocab_weight_unseen=0.0),
    )
    with pytest.raises(ValueError, match="out-of-vocabulary branch") as error:
        OVSegPredictor(parity_predictor.model, cfg, keep_novel=True)
    assert "\n" not in str(error.value)
    OVSegPredictor(parity_predictor.model, cfg)  # off: nothing to refuse


@pytest.mark.parametrize(
    "extra, flag",
    [(["--task", "semantic"], "--task semantic"), (["--points", "4,4"], "--points")],
)
def test_predict_refuses_keep_novel_without_panoptic(image, tmp_path, capsys, extra, flag):
    from conftest import run_main
    from ovseg.apps.predict import main

    code, _, err = run_main(
        main,
        [
            image,
            "--classes",
            "cat, sky",
            "--model",
            "fcclip_tiny_parity",
            "--keep-novel",
            "--output",
            tmp_path / "out",
            *extra,
        ],
        capsys,
    )
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_eval_refuses_keep_novel_without_panoptic(world_scenes, capsys):
    from conftest import run_main
    from ovseg.apps.eval import main

    root = world_scenes.image_dir.parent
    code, _, err = run_main(
        main,
        [
            "--model",
            "synthetic_tiny",
            "--images",
            root / "images",
            "--panoptic-json",
            root / "panoptic.json",
            "--panoptic-dir",
            root / "panoptic",
            "--tasks",
            "semantic",
            "--keep-novel",
            "--num-workers",
            0,
        ],
        capsys,
    )
    assert code == 2 and "--keep-novel" in err and len(err.strip().splitlines()) == 1, err


def test_config_key_defaults_off():
    from ovseg.config import load_config

    for preset in ("fcclip_convnext_large_coco", "fcclip_tiny_parity", "synthetic_tiny"):
        assert load_config(preset).inference.keep_novel is False


def test_web_demo_switch(parity_predictor, image):
    from ovseg.apps.web import TYPED, Demo, DemoError
    from ovseg.predictor import OVSegPredictor
    from ovseg.preprocess import load_image

    predictor = OVSegPredictor(parity_predictor.model, parity_predictor.cfg)
    demo = Demo(predictor, model_note="test")
    try:
        demo.segment_image(load_image(image), "cat, sky", TYPED, "panoptic", keep_novel=True)
        assert predictor.cfg.inference.keep_novel is True
        assert parity_predictor.cfg.inference.keep_novel is False  # a copy was switched
        demo.segment_image(load_image(image), "cat, sky", TYPED, "panoptic", keep_novel=False)
        assert predictor.cfg.inference.keep_novel is False
        predictor.cfg = dataclasses.replace(
            predictor.cfg,
            inference=dataclasses.replace(predictor.cfg.inference, out_vocab_weight_unseen=0.0),
        )
        with pytest.raises(DemoError, match="out-of-vocabulary branch"):
            demo.segment_image(load_image(image), "cat, sky", TYPED, "panoptic", keep_novel=True)
    finally:
        demo.close()
