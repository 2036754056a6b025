"""Contrastive CLIP training: the loss by hand, and a tiny open_clip model learning a toy
two-caption task."""

import math

import numpy as np
import torch

from ovseg.synthetic.clip_training import CLIPTrainConfig, ImagePool, contrastive_loss, train_clip


def test_loss_by_hand_with_groups():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scale = torch.tensor(0.0)  # exp(0) = 1
    loss = contrastive_loss(images, texts, scale, ["a", "b", "a"])
    logits = images @ texts.T
    targets = torch.tensor([[0.5, 0, 0.5], [0, 1.0, 0], [0.5, 0, 0.5]])
    expected = -(targets * logits.log_softmax(1)).sum(1).mean()
    expected = (expected - (targets * logits.T.log_softmax(1)).sum(1).mean()) / 2
    assert torch.allclose(loss, expected)


def _tiny_clip(image_size=64):
    import open_clip

    return open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg={
            "timm_model_name": "test_convnext",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "mlp",
            "image_size": image_size,
        },
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    )


def test_tiny_clip_learns_a_toy_task():
    import open_clip

    torch.manual_seed(0)
    model = _tiny_clip(image_size=32)
    red = np.zeros((8, 32, 32, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((8, 32, 32, 3), np.uint8)
    blue[..., 2] = 220
    images = torch.from_numpy(np.concatenate([red, blue]))
    captions = ["a red square"] * 8 + ["a blue square"] * 8
    losses = train_clip(
        model,
        [ImagePool(images, captions)],
        CLIPTrainConfig(steps=30, batch_sizes=(8,), lr=3e-3, warmup=1),
        mean=(128.0, 128.0, 128.0),
        std=(64.0, 64.0, 64.0),
        tokenize=lambda t: open_clip.tokenize(t, context_length=16),
        progress=False,
    )
    # With 2 captions in a batch of 8 the best possible loss is about log(4) = 1.39 (each
    # image has ~4 equally right texts); an untrained model starts near log(8) + margin.
    assert losses[0] > 2.0 and losses[-1] < 1.6, (losses[0], losses[-1])
    assert math.isfinite(losses[-1])


def test_region_embeddings_are_fcclip_mask_pooling():
    """A region's embedding in training is exactly what FC-CLIP computes at test time for a
    mask covering the same cells; the whole-scene embedding is the CLIP's own."""
    from ovseg.modeling.backbone import CLIPBackbone
    from ovseg.modeling.transformer_decoder import mask_pooling
    from ovseg.synthetic.clip_training import image_head, region_embeddings

    torch.manual_seed(0)
    model = _tiny_clip().eval()
    backbone = CLIPBackbone(model)
    pixels = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        dense = model.visual.trunk.forward_features(pixels)
        assert dense.shape[-2:] == (4, 3)
        assert torch.allclose(backbone(pixels)["clip_vis_dense"], dense)
        assert torch.allclose(image_head(model, dense.mean((-2, -1))), model.encode_image(pixels))
        cells = torch.zeros(3, 4, 3, dtype=torch.bool)
        cells[0, 1:3, 0:2] = True
        cells[1, 3, 2] = True
        cells[2] = True
        owners = torch.tensor([0, 0, 1])
        ours = region_embeddings(model, dense, owners, cells)
        for r in range(3):
            logits = torch.where(cells[r], 1.0, -1.0)[None, None]
            pooled = mask_pooling(dense[owners[r] : owners[r] + 1], logits)
            assert torch.allclose(ours[r], backbone.project_pooled(pooled)[0, 0], atol=1e-6)


def test_layer_scale_reset_touches_every_block():
    from ovseg.synthetic.clip_training import reset_layer_scale

    model = _tiny_clip()
    count = reset_layer_scale(model, 1.0)
    gammas = [p for n, p in model.visual.named_parameters() if n.endswith(".gamma")]
    assert count == len(gammas) > 0
    assert all(torch.all(g == 1.0) for g in gammas)


def test_region_pairs_learn_where_things_are():
    """Scenes of 2x2 cells: a red square in one random cell on blue; each cell is a region
    captioned by what is in it. Region training must learn to tell the cells apart (only
    possible from the dense map), and flips must move the captions with the pixels."""
    import open_clip

    from ovseg.synthetic.clip_training import RegionPool, region_zero_shot_accuracy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    scenes, regions, labels = [], [], []
    for _ in range(32):
        image = np.zeros((64, 64, 3), np.uint8)
        image[..., 2] = 200
        cy, cx = rng.integers(0, 2, size=2)
        image[cy * 32 + 6 : cy * 32 + 26, cx * 32 + 6 : cx * 32 + 26] = (220, 30, 30)
        scene_regions, scene_labels = [], []
        for y in range(2):
            for x in range(2):
                cells = np.zeros((2, 2), bool)
                cells[y, x] = True
                red = (y, x) == (cy, cx)
                caption = "a red square" if red else "blue water"
                scene_regions.append((cells, caption, caption))
                scene_labels.append(int(red))
        scenes.append(image)
        regions.append(scene_regions)
        labels.append(scene_labels)
    pool = RegionPool(torch.from_numpy(np.stack(scenes)), regions)
    model = _tiny_clip()
    tokenize = lambda t: open_clip.tokenize(t, context_length=16)  # noqa: E731
    losses = train_clip(
        model,
        [pool],
        CLIPTrainConfig(steps=40, batch_sizes=(8,), lr=3e-3, warmup=1),
        mean=(128.0, 128.0, 128.0),
        std=(64.0, 64.0, 64.0),
        tokenize=tokenize,
        progress=False,
    )
    assert losses[-1] < losses[0]
    with torch.no_grad():
        texts = torch.nn.functional.normalize(
            model.encode_text(tokenize(["blue water", "a red square"])), dim=-1
        )
    right = region_zero_shot_accuracy(
        model, pool, labels, texts, mean=(128.0,) * 3, std=(64.0,) * 3
    )
    red = np.concatenate(labels) == 1
    # 3 of 4 regions are water: the red cells themselves must be found.
    assert right[red].mean() > 0.8 and right[~red].mean() > 0.8, right.mean()
