"""The three graphs an ONNX export holds, as plain modules over :class:`FCCLIP`'s parts.

The vocabulary never enters the image graph: FC-CLIP's image work (:meth:`FCCLIP.encode_image`)
is vocabulary-free, and classification only needs the text embeddings, so the classifier graph
takes them as inputs and one exported file serves any vocabulary (ultralytics #21782 and
#24492 ask YOLOE / YOLO-World for this; their export bakes the classes in).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.modeling.ensemble import geometric_ensemble
from ovseg.modeling.fcclip import FCCLIP
from ovseg.modeling.text_classifier import synonym_logits


class ImageEncoderGraph(nn.Module):
    """image (1, 3, H, W) normalised and padded (H, W multiples of 32) ->
    pred_embeds (1, Q, D) the in-vocabulary query embeddings, pred_masks (1, Q, H/4, W/4) mask
    logits, clip_embeds (1, Q, D) the frozen CLIP's mask-pooled embeddings of those masks,
    clip_dense (1, C, H/32, W/32) the frozen CLIP's dense map (for mask pooling of other
    masks). The same tensors as :meth:`ovseg.predictor.OVSegPredictor.encode`."""

    def __init__(self, model: FCCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        outputs = self.model.encode_image(image, aux_classes=False, aux_outputs=False)
        return (
            outputs["pred_embeds"],
            outputs["pred_masks"],
            outputs["clip_embeds"],
            outputs["features"]["clip_vis_dense"],
        )


class ClassifierGraph(nn.Module):
    """FC-CLIP's two classifiers and their geometric ensemble, with the vocabulary as input.

    Inputs: pred_embeds (1, Q, D), clip_embeds (1, Q, D); text (S, D) L2-normalised synonym
    embeddings; synonym_index (K, M) int64, the rows of each class's synonyms padded with S + 1
    (``arange(K)[:, None]`` when every class has one name); seen (K,) bool, True for classes of
    the training vocabulary. Outputs: class_logits (1, Q, K+1) the ensemble (log-probabilities,
    void last; :func:`ovseg.modeling.ensemble.geometric_ensemble`), in_vocab_logits and
    out_vocab_logits (1, Q, K+1)."""

    def __init__(self, model: FCCLIP) -> None:
        super().__init__()
        self.void_embedding = model.void_embedding
        self.in_vocab_scale = model.transformer_decoder.logit_scale
        self.out_vocab_scale = model.backbone.clip.logit_scale
        self.alpha = model.alpha
        self.beta = model.beta

    def forward(self, pred_embeds, clip_embeds, text, synonym_index, seen):
        void = self.void_embedding.weight
        in_vocab = synonym_logits(pred_embeds, text, synonym_index, void, self.in_vocab_scale)
        out_vocab = synonym_logits(clip_embeds, text, synonym_index, void, self.out_vocab_scale)
        ensemble = geometric_ensemble(in_vocab, out_vocab, seen, alpha=self.alpha, beta=self.beta)
        return ensemble, in_vocab, out_vocab


class TextEncoderGraph(nn.Module):
    """tokens (N, L) int64 CLIP token ids (L at most the context length, cut after the longest
    end-of-text token or not: the tower is causal) -> (N, D) L2-normalised text embeddings of
    the frozen text tower (:meth:`ovseg.modeling.backbone.CLIPBackbone.text_tower`)."""

    def __init__(self, model: FCCLIP) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        eot_positions = tokens.argmax(dim=-1)
        embedded = self.backbone.clip.token_embedding(tokens)
        return F.normalize(self.backbone.text_tower(embedded, eot_positions), dim=-1)
