"""The prompt head: SAM's prompt encoder and mask decoder on the frozen CLIP's maps, its
training (loss falls, resume replays the run), and prompts through a model that has one."""

import dataclasses

import numpy as np
import pytest
import torch

from ovseg.config import PromptHeadConfig
from ovseg.modeling.prompt_head import box_coverage, build_prompt_head
from ovseg.sam.training import (
    PromptTrainConfig,
    centre_point,
    correction_clicks,
    jittered_box,
    prompt_loss,
    train_prompt_head,
)

CHANNELS = {"res2": 8, "res3": 16, "res4": 24, "res5": 32}
SMALL = PromptHeadConfig(
    enabled=True, embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32
)


def small_head(**changes):
    torch.manual_seed(0)
    return build_prompt_head(CHANNELS, dataclasses.replace(SMALL, **changes)).eval()


@pytest.mark.parametrize("kind", ["points", "boxes", "both", "mask"])
def test_prompt_encoding_equals_sam_prompt_encoder_at_its_own_size(kind):
    head = small_head(dense_box=False)
    encoder = head.prompt_encoder  # built for a 1024x1024 input and a 64x64 embedding
    points = torch.tensor([[[100.0, 200.0], [500.0, 30.0]], [[7.0, 9.0], [1000.0, 1000.0]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    boxes = torch.tensor([[10.0, 20.0, 300.0, 400.0], [0.0, 0.0, 1023.0, 1023.0]])
    masks = torch.randn(2, 1, 256, 256)
    inputs = {
        "points": ((points, labels), None, None),
        "boxes": (None, boxes, None),
        "both": ((points, labels), boxes, None),
        "mask": ((points, labels), None, masks),
    }[kind]
    with torch.no_grad():
        expected = encoder(*inputs)
        ours = head.encode_prompts(
            inputs[0][0] if inputs[0] else None,
            inputs[0][1] if inputs[0] else None,
            inputs[1],
            inputs[2],
            input_hw=(1024, 1024),
            embedding_hw=(64, 64),
        )
    assert torch.allclose(ours[0], expected[0], atol=1e-6)
    assert torch.allclose(ours[1], expected[1], atol=1e-6)


def test_box_coverage_is_the_share_of_each_cell_inside_the_box():
    # 4x supersampled pixels of a 32x48 input, boxes on quarter pixels, 8-pixel cells
    boxes = torch.tensor(
        [[3.25, 5.5, 20.75, 30.0], [0.0, 0.0, 48.0, 32.0], [10.0, 9.0, 10.5, 9.25]]
    )
    coverage = box_coverage(boxes, (32, 48), (4, 6))
    ys, xs = np.mgrid[0:128, 0:192] / 4 + 1 / 8  # sub-pixel centres
    for box, cover in zip(boxes.numpy(), coverage.numpy(), strict=True):
        inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
        expected = inside.reshape(4, 32, 6, 32).mean(axis=(1, 3))
        assert np.allclose(cover, expected, atol=1e-6)


def test_a_box_marks_the_cells_it_covers_in_the_dense_embedding():
    head = small_head()
    box = torch.tensor([[8.0, 8.0, 24.0, 16.0]])  # cells (1, 1..2) of a 4x6 grid of stride 8
    with torch.no_grad():
        _, dense = head.encode_prompts(
            None, None, box, None, input_hw=(32, 48), embedding_hw=(4, 6)
        )
        _, plain = small_head(dense_box=False).encode_prompts(
            None, None, box, None, input_hw=(32, 48), embedding_hw=(4, 6)
        )
    changed = (dense - plain).abs().amax(1)[0] > 0
    assert changed.nonzero().tolist() == [[1, 1], [1, 2]]


@pytest.mark.parametrize("stride", [8, 16])
def test_head_runs_on_any_padded_size(stride):
    head = small_head(embedding_stride=stride)
    features = {
        name: torch.randn(1, c, 96 // s, 160 // s)
        for (name, c), s in zip(CHANNELS.items(), (4, 8, 16, 32), strict=True)
    }
    with torch.no_grad():
        embedding = head.embed_image(features)
        logits, iou = head(
            embedding,
            input_hw=(96, 160),
            points=torch.tensor([[[40.0, 30.0]]]),
            point_labels=torch.ones(1, 1),
        )
    assert embedding.shape == (1, 32, 96 // stride, 160 // stride)
    assert logits.shape == (1, 3, 96 // head.mask_stride, 160 // head.mask_stride)
    assert iou.shape == (1, 3)


def test_prompt_sampling_helpers():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:26] = True
    x, y = centre_point(mask)  # on the ridge farthest (5 px) from every edge
    assert y in (9.0, 10.0) and 14 <= x <= 21
    rng = np.random.default_rng(0)
    box = jittered_box(mask, rng)
    assert 0 <= box[0] < box[2] <= 30 and 0 <= box[1] < box[3] <= 20
    logits = torch.full((1, 20, 30), -5.0)
    logits[0, 5:15, 10:18] = 5  # the left half: the object was missed on the right
    points, labels = correction_clicks(logits, torch.from_numpy(mask)[None].float(), rng)
    x, y = points[0]
    assert labels.tolist() == [1] and mask[int(y), int(x)] and x >= 18


def test_loss_takes_the_best_of_the_multimask_outputs():
    targets = torch.zeros(1, 8, 8)
    targets[0, :4] = 1
    good = torch.where(targets[0] > 0, 10.0, -10.0)
    logits = torch.stack([-good, good, -good])[None]
    loss, best, iou = prompt_loss(logits, torch.ones(1, 3), targets, PromptTrainConfig())
    assert best.tolist() == [1] and iou.tolist() == [1.0]
    # the IoU head is told the true IoU of every output (1, 0, 0 here): only it adds loss
    assert abs(float(loss) - (2 / 3)) < 1e-3


@pytest.fixture(scope="module")
def synthetic_scenes(tmp_path_factory):
    from ovseg.data import PanopticDataset
    from ovseg.synthetic.scenes import write_synthetic_panoptic

    root = tmp_path_factory.mktemp("scenes")
    json_path = write_synthetic_panoptic(root, 4, split="train", size=(64, 80))
    return PanopticDataset(json_path.parent / "images", json_path, json_path.parent / "panoptic")


def head_predictor(parity_predictor):
    import copy

    predictor = copy.copy(parity_predictor)
    predictor.model = copy.deepcopy(parity_predictor.model)
    inference = dataclasses.replace(predictor.cfg.inference, min_size_test=64, max_size_test=128)
    predictor.cfg = dataclasses.replace(predictor.cfg, inference=inference)
    cfg = dataclasses.replace(SMALL, embedding_stride=8)
    torch.manual_seed(0)
    predictor.model.prompt_head = build_prompt_head(predictor.model.backbone.feature_channels, cfg)
    predictor._features = type(parity_predictor._features)()
    return predictor


def test_training_lowers_the_loss_and_resumes_exactly(parity_predictor, synthetic_scenes, tmp_path):
    # SAM's focal + dice loss: on random features its falls within a few dozen steps.
    cfg = PromptTrainConfig(
        iterations=30, batch_size=2, lr=2e-3, checkpoint_every=15, focal_weight=20.0
    )
    scenes = synthetic_scenes
    first = head_predictor(parity_predictor)
    result = train_prompt_head(first, scenes, tmp_path / "a", cfg, log=lambda *a, **k: None)
    losses = np.array([row[1] for row in result["losses"]])
    assert losses[-8:].mean() < 0.8 * losses[:8].mean()
    for parameter in first.model.backbone.parameters():
        assert parameter.grad is None  # the CLIP is never trained
    # Interrupted after 15 iterations, then resumed: the same weights as uninterrupted.
    second = head_predictor(parity_predictor)
    train_prompt_head(second, scenes, tmp_path / "b", cfg, stop_after=15, log=lambda *a, **k: None)
    third = head_predictor(parity_predictor)
    resumed = train_prompt_head(third, scenes, tmp_path / "b", cfg, log=lambda *a, **k: None)
    assert len(resumed["losses"]) == 30
    for (key, a), b in zip(
        first.model.prompt_head.state_dict().items(),
        third.model.prompt_head.state_dict().values(),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-5), key


def test_prompts_through_the_head_need_no_second_image_pass(parity_predictor):
    predictor = head_predictor(parity_predictor)
    image = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    predictor.segment(predictor.encode(image), vocabulary=["cat", "dog"])
    before = predictor.image_encodes
    result = predictor.segment_prompts(image, points=[[10, 20]], boxes=[[30, 5, 70, 50]])
    assert predictor.image_encodes == before
    assert result["instances"]["masks"].shape == (1, 64, 80)  # one box: the point refines it
    assert result["prompts"][0]["prompt"] == "box 30,5,70,50 + positive point at 10,20"


def test_distillation_takes_the_teachers_masks_as_targets(parity_predictor, synthetic_scenes):
    from ovseg.sam.masks import SamMasks
    from ovseg.sam.training import image_step, network_inputs
    from ovseg.sam.zoo import build_sam

    torch.manual_seed(0)
    teacher = SamMasks(build_sam("tiny"))
    predictor = head_predictor(parity_predictor)
    head = predictor.model.prompt_head
    pixels, per_sample = network_inputs(predictor, [synthetic_scenes[0]])
    with torch.no_grad():
        embedding = head.embed_image(predictor.model.backbone(pixels))
    image, masks = per_sample[0]
    cfg = PromptTrainConfig(correction_rate=0.0)
    padded = tuple(pixels.shape[-2:])
    supervised, _ = image_step(head, embedding, padded, masks, cfg, np.random.default_rng(0))
    distilled, _ = image_step(
        head, embedding, padded, masks, cfg, np.random.default_rng(0), teacher, image
    )
    assert teacher.image_encodes == 1  # one image: the teacher encodes it once
    assert supervised.detach().item() != distilled.detach().item()  # other targets, same prompts


def test_train_command_writes_a_model_that_answers_clicks(tmp_path, capsys):
    from conftest import run_main
    from ovseg.apps import predict, train_prompt_head

    out = tmp_path / "run"
    code, _, err = run_main(
        train_prompt_head.main,
        [
            "--model",
            "fcclip_tiny_parity",
            "--output",
            out,
            "--synthetic-world",
            3,
            "--iterations",
            2,
            "--batch-size",
            1,
            "--embed-dim",
            16,
            "--decoder-mlp-dim",
            32,
            "--decoder-num-heads",
            2,
        ],
        capsys,
    )
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    image = tmp_path / "scene.png"
    image.write_bytes((out / "data" / "train" / "images" / "train_00000.png").read_bytes())
    code, _, err = run_main(
        predict.main,
        [
            image,
            "--weights",
            out / "model.safetensors",
            "--config",
            out / "config.yaml",
            "--vocab",
            "synthetic_world",
            "--points",
            "40,30",
            "--short-side",
            "64",
            "--output",
            tmp_path / "pred",
        ],
        capsys,
    )
    assert code == 0, err
    import json

    record = json.loads((tmp_path / "pred" / "scene.json").read_text())
    assert record["task"] == "prompts" and len(record["prompts"]) == 1


def test_a_whole_small_sam_trains_and_loads_back_as_a_teacher(synthetic_scenes, tmp_path):
    from ovseg.checkpoint import save_weights
    from ovseg.sam.masks import SamMasks
    from ovseg.sam.prompts import make_prompts
    from ovseg.sam.training import train_sam
    from ovseg.sam.zoo import build_sam, load_sam

    torch.manual_seed(0)
    sam = build_sam("tiny")
    patch = sam.image_encoder.patch_embed.proj.weight.detach().clone()
    cfg = PromptTrainConfig(
        iterations=30, batch_size=2, lr=2e-3, checkpoint_every=30, focal_weight=20.0
    )
    result = train_sam(sam, synthetic_scenes, tmp_path / "run", cfg, log=lambda *a, **k: None)
    losses = np.array([row[1] for row in result["losses"]])
    assert losses[-8:].mean() < 0.8 * losses[:8].mean()
    assert not torch.equal(sam.image_encoder.patch_embed.proj.weight, patch)  # encoder trained
    assert not sam.training
    save_weights(sam.state_dict(), tmp_path / "sam_tiny.safetensors")
    loaded = load_sam("tiny", weights=tmp_path / "sam_tiny.safetensors")  # strict
    image = synthetic_scenes[0]["image"]
    click = make_prompts([[30, 20]])
    assert np.array_equal(
        SamMasks(sam).prompted(image, click).masks, SamMasks(loaded).prompted(image, click).masks
    )


def test_train_command_trains_a_sam_teacher(tmp_path, capsys):
    from conftest import run_main
    from ovseg.apps import train_prompt_head
    from ovseg.sam.zoo import load_sam

    out = tmp_path / "teacher"
    arguments = ["--output", out, "--synthetic-world", 2, "--iterations", 2, "--batch-size", 1]
    code, _, err = run_main(train_prompt_head.main, [*arguments, "--train-sam", "tiny"], capsys)
    assert code == 0, err
    load_sam("tiny", weights=out / "sam_tiny.safetensors")
    code, _, err = run_main(
        train_prompt_head.main,
        [*arguments, "--train-sam", "tiny", "--teacher-sam", "tiny", "--no-resume"],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "drop --teacher-sam" in err
    code, _, err = run_main(train_prompt_head.main, [*arguments, "--train-sam", "vit_q"], capsys)
    assert code == 2 and "unknown SAM model 'vit_q'" in err


class _RecordingHead:
    """Stands in for a prompt head: records the points it is given, answers empty masks."""

    mask_stride = 4

    def __init__(self):
        self.points = []

    def __call__(self, embedding, *, input_hw, points=None, point_labels=None, boxes=None, **_):
        self.points.append(points[0].clone())
        low = torch.zeros(1, 3, input_hw[0] // 4, input_hw[1] // 4)
        return low, torch.ones(1, 3)


@pytest.mark.parametrize("size,resized", [(1000, 250), (160, 320), (101, 64)])
def test_a_click_on_the_last_row_or_column_stays_on_the_resized_image(size, resized):
    from types import SimpleNamespace

    from ovseg.sam.prompt_head import predict_prompt_masks
    from ovseg.sam.prompts import make_prompts

    padded = -(-resized // 32) * 32
    features = SimpleNamespace(
        image_size=(size, size),
        resized_hw=(resized, resized),
        padded_hw=(padded, padded),
        prompt_embedding=torch.zeros(1, 8, padded // 16, padded // 16),
    )
    head = _RecordingHead()
    corners = [[0, 0], [size - 1, size - 1], [size - 1, 0]]
    predict_prompt_masks(head, features, make_prompts(corners))
    encoded = head.points[0] + 0.5  # the head adds SAM's half pixel
    scale = resized / size
    assert torch.allclose(encoded, (torch.tensor(corners, dtype=torch.float32) + 0.5) * scale)
    assert (encoded > 0).all() and (encoded < resized).all()


def test_sam_is_given_pixel_centres_too():
    from types import SimpleNamespace

    from ovseg.sam.masks import SamMasks
    from ovseg.sam.prompts import make_prompts

    given = []

    def predict(point_coords=None, point_labels=None, box=None, multimask_output=True):
        given.append(point_coords)
        return np.zeros((1, 4, 4), bool), np.ones(1), None

    sam = SamMasks.__new__(SamMasks)
    sam._predictor = SimpleNamespace(
        input_size=(256, 256), original_size=(1024, 1024), predict=predict
    )
    sam._predict(make_prompts([[1023, 1023]]).objects()[0])
    resized = given[0] * 0.25 + 0.5  # SAM's apply_coords, then its half pixel
    assert np.allclose(resized, 1023.5 * 0.25) and (resized < 256).all()
