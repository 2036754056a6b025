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
from ovseg.modeling.pixel_text import dense_clip_embeddings
from ovseg.modeling.text_classifier import synonym_logits


def reads_image_for_text(model: FCCLIP) -> bool:
    """Whether the model's classifiers adapt the text to each image (the visual-context
    decoder or CDT of :mod:`ovseg.modeling.text_context`): then the classifier graph also
    takes the image's dense CLIP map."""
    return model.text_context is not None and model.text_context.needs_clip_pixels


def learned_context(model: FCCLIP) -> int:
    """The number of learned context vectors of the model's text (0: prompt templates)."""
    context = model.text_context
    return 0 if context is None or context.context is None else context.context.num_context


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
    the training vocabulary; for a model whose text reads the image
    (:func:`reads_image_for_text`), also clip_dense (1, C, h, w), the image encoder's dense
    CLIP map: the text is then adapted to the image as :meth:`FCCLIP.adapted_text` does
    (DenseCLIP's visual-context decoder for the in-vocabulary head, MAFT+'s CDT for the
    out-of-vocabulary one). Outputs: class_logits (1, Q, K+1) the ensemble
    (log-probabilities, void last; :func:`ovseg.modeling.ensemble.geometric_ensemble`),
    in_vocab_logits and out_vocab_logits (1, Q, K+1)."""

    def __init__(self, model: FCCLIP) -> None:
        super().__init__()
        self.void_embedding = model.void_embedding
        self.in_vocab_scale = model.transformer_decoder.logit_scale
        self.out_vocab_scale = model.backbone.clip.logit_scale
        self.alpha = model.alpha
        self.beta = model.beta
        self.reads_image = reads_image_for_text(model)
        self.backbone = model.backbone if self.reads_image else None
        self.context = model.text_context if self.reads_image else None

    def forward(self, pred_embeds, clip_embeds, text, synonym_index, seen, clip_dense=None):
        void = self.void_embedding.weight
        in_text = out_text = text
        if self.reads_image:
            pixels = dense_clip_embeddings(self.backbone, clip_dense)
            if self.context.visual_decoder is not None:
                in_text = F.normalize(self.context.in_vocab_text(text, pixels), dim=-1)
            if self.context.cdt is not None:
                out_text = F.normalize(self.context.out_vocab_text(text, pixels), dim=-1)
        in_vocab = synonym_logits(pred_embeds, in_text, synonym_index, void, self.in_vocab_scale)
        out_vocab = synonym_logits(clip_embeds, out_text, synonym_index, void, self.out_vocab_scale)
        ensemble = geometric_ensemble(in_vocab, out_vocab, seen, alpha=self.alpha, beta=self.beta)
        return ensemble, in_vocab, out_vocab


class TextEncoderGraph(nn.Module):
    """tokens (N, L) int64 CLIP token ids (L at most the context length, cut after the longest
    end-of-text token or not: the tower is causal) -> (N, D) L2-normalised text embeddings of
    the frozen text tower (:meth:`ovseg.modeling.backbone.CLIPBackbone.text_tower`). A model
    with N learned context vectors (:func:`learned_context`) takes the tokens of
    :meth:`ovseg.modeling.text_context.LearnableContext.prompts` and puts its vectors in
    place of the N placeholder tokens after the start token (DenseCLIP / CoOp)."""

    def __init__(self, model: FCCLIP) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.num_context = learned_context(model)
        self.context = model.text_context.context if self.num_context else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        eot_positions = tokens.argmax(dim=-1)
        embedded = self.backbone.clip.token_embedding(tokens)
        if self.context is not None:
            vectors = self.context.context.to(embedded.dtype)[None]
            vectors = vectors.expand(tokens.shape[0], -1, -1)
            after = embedded[:, 1 + self.num_context :]
            embedded = torch.cat([embedded[:, :1], vectors, after], dim=1)
        return F.normalize(self.backbone.text_tower(embedded, eot_positions), dim=-1)
