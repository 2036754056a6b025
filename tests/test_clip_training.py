"""Contrastive CLIP training: the loss by hand, and a tiny open_clip model learning a toy
two-caption task."""

import math

import numpy as np
import torch

from ovseg.clip_training import CLIPTrainConfig, contrastive_loss, train_clip


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


def test_tiny_clip_learns_a_toy_task():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg={
            "timm_model_name": "test_convnext",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "mlp",
            "image_size": 32,
        },
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    )
    red = np.zeros((8, 32, 32, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((8, 32, 32, 3), np.uint8)
    blue[..., 2] = 220
    images = torch.from_numpy(np.concatenate([red, blue]))
    captions = ["a red square"] * 8 + ["a blue square"] * 8
    losses = train_clip(
        model,
        [(images, captions, None)],
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
