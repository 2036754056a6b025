"""The FC-CLIP meta-architecture: frozen CLIP backbone -> pixel decoder -> transformer decoder,
classified against CLIP text embeddings and ensembled with mask-pooled CLIP features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.config import ModelConfig
from ovseg.modeling.backbone import CLIPBackbone, build_open_clip_model
from ovseg.modeling.ensemble import geometric_ensemble
from ovseg.modeling.pixel_decoder import PixelDecoder
from ovseg.modeling.pixel_text import dense_clip_embeddings, pixel_text_similarity
from ovseg.modeling.text_classifier import TextClassifier, classification_logits
from ovseg.modeling.transformer_decoder import TransformerDecoder, mask_pooling


class FCCLIP(nn.Module):
    """Tensors in, tensors out. Image work (:meth:`encode_image`) is independent of the
    vocabulary; :meth:`classify` is the only vocabulary-dependent step, so a new vocabulary on
    the same image reuses the image features."""

    def __init__(
        self,
        backbone: CLIPBackbone,
        pixel_decoder: PixelDecoder,
        transformer_decoder: TransformerDecoder,
        *,
        alpha: float = 0.4,
        beta: float = 0.8,
        prompt_head: nn.Module | None = None,
        text_context: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.transformer_decoder = transformer_decoder
        # Optional (ovseg.modeling.prompt_head): promptable masks from the same frozen CLIP maps.
        self.prompt_head = prompt_head
        # Optional (ovseg.modeling.text_context): learned / image-adapted text, pixel-text loss.
        self.text_context = text_context
        self.void_embedding = nn.Embedding(1, backbone.embed_dim)
        self.alpha = alpha
        self.beta = beta

    def encode_image(
        self,
        images: torch.Tensor,
        *,
        aux_classes: bool = True,
        out_vocab: bool = True,
        aux_outputs: bool = True,
    ) -> dict[str, torch.Tensor | list]:
        """images (B, 3, H, W), normalised and padded to a multiple of 32 ->
        pred_embeds (B, Q, D) in-vocabulary class embeddings, pred_masks (B, Q, H/4, W/4),
        clip_embeds (B, Q, D) mask-pooled frozen-CLIP embeddings, aux_outputs, and the
        intermediate maps (features, mask_features, multi_scale_features).
        ``aux_classes=False`` (inference) skips the earlier layers' class heads;
        ``out_vocab=False`` (training) skips the mask-pooled CLIP embeddings;
        ``aux_outputs=False`` (inference) skips the earlier layers' predictions altogether
        (see :meth:`TransformerDecoder.forward`)."""
        features = self.backbone(images)
        mask_features, multi_scale = self.pixel_decoder(features)
        outputs = self.transformer_decoder(
            multi_scale, mask_features, aux_classes=aux_classes, aux_outputs=aux_outputs
        )
        if out_vocab:
            pooled = mask_pooling(features["clip_vis_dense"], outputs["pred_masks"].detach())
            outputs["clip_embeds"] = self.backbone.project_pooled(pooled)
        outputs["features"] = features
        outputs["mask_features"] = mask_features
        outputs["multi_scale_features"] = multi_scale
        return outputs

    def in_vocab_logits(self, embeds: torch.Tensor, classifier: TextClassifier) -> torch.Tensor:
        """(B, Q, D) -> (B, Q, K+1) with the trainable decoder temperature."""
        return classification_logits(
            embeds, classifier, self.void_embedding.weight, self.transformer_decoder.logit_scale
        )

    def out_vocab_logits(self, embeds: torch.Tensor, classifier: TextClassifier) -> torch.Tensor:
        """(B, Q, D) -> (B, Q, K+1) with the frozen CLIP temperature."""
        return classification_logits(
            embeds, classifier, self.void_embedding.weight, self.backbone.clip.logit_scale
        )

    def adapted_text(
        self, classifier: TextClassifier, clip_vis_dense: torch.Tensor | None
    ) -> tuple[TextClassifier, TextClassifier]:
        """The classifiers of the in- and out-of-vocabulary heads: ``classifier`` itself
        without a text context; else with learned context recomputed (when the classifier
        carries its prompts' tokens: training), the visual-context decoder's per-image text
        for the in-vocabulary head and CDT's for the out-of-vocabulary head.
        clip_vis_dense: (B, C, h, w) the frozen CLIP's dense map (needed by those two)."""
        context = self.text_context
        if context is None:
            return classifier, classifier
        if context.context is not None and classifier.context_tokens is not None:
            tokens = classifier.context_tokens.to(clip_vis_dense.device)
            classifier = classifier.with_embeddings(context.context(self.backbone, tokens))
        if not context.needs_clip_pixels:
            return classifier, classifier
        pixels = dense_clip_embeddings(self.backbone, clip_vis_dense)
        text = classifier.embeddings.to(pixels)
        in_text, out_text = classifier, classifier
        if context.visual_decoder is not None:
            in_text = classifier.with_embeddings(
                F.normalize(context.in_vocab_text(text, pixels), dim=-1)
            )
        if context.cdt is not None:
            out_text = classifier.with_embeddings(
                F.normalize(context.out_vocab_text(text, pixels), dim=-1)
            )
        return in_text, out_text

    def classify(
        self,
        image_outputs: dict,
        classifier: TextClassifier,
        seen: torch.Tensor,
        *,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Class logits of every query: in_vocab, out_vocab and their ensemble, (B, Q, K+1).
        ``image_outputs`` holds ``pred_embeds``, ``clip_embeds`` and, for a text context that
        reads the image, ``clip_vis_dense``. ``alpha`` / ``beta``: the ensemble's
        out-of-vocabulary weights for seen / unseen classes (default: the model's; (0, 0) is
        the in-vocabulary head alone, (1, 1) the frozen CLIP's)."""
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        in_text, out_text = self.adapted_text(classifier, image_outputs.get("clip_vis_dense"))
        in_vocab = self.in_vocab_logits(image_outputs["pred_embeds"], in_text)
        out_vocab = self.out_vocab_logits(image_outputs["clip_embeds"], out_text)
        ensemble = geometric_ensemble(in_vocab, out_vocab, seen, alpha=alpha, beta=beta)
        return {"in_vocab": in_vocab, "out_vocab": out_vocab, "ensemble": ensemble}

    def forward(
        self, images: torch.Tensor, classifier: TextClassifier, seen: torch.Tensor | None = None
    ) -> dict:
        """Training mode: in-vocabulary ``pred_logits`` (B, Q, K+1), ``pred_masks``
        (B, Q, H/4, W/4) and ``aux_outputs`` (the same for every earlier layer), for the losses;
        with a text context also ``out_vocab_logits`` (B, Q, K+1, CDT) and
        ``pixel_text_logits`` (B, K, H/4, W/4, the auxiliary score maps / temperature).
        Eval mode: ensemble class logits (needs ``seen``, (K,) bool) and mask logits."""
        if self.training:
            context = self.text_context
            with_cdt = context is not None and context.cdt is not None
            outputs = self.encode_image(images, out_vocab=with_cdt)
            dense = outputs["features"]["clip_vis_dense"]
            in_text, out_text = self.adapted_text(classifier, dense)
            aux = [
                {
                    "pred_logits": self.in_vocab_logits(a["pred_embeds"], in_text),
                    "pred_masks": a["pred_masks"],
                }
                for a in outputs["aux_outputs"]
            ]
            result = {
                "pred_logits": self.in_vocab_logits(outputs["pred_embeds"], in_text),
                "pred_masks": outputs["pred_masks"],
                "aux_outputs": aux,
            }
            if with_cdt:
                result["out_vocab_logits"] = self.out_vocab_logits(outputs["clip_embeds"], out_text)
            if context is not None and context.pixel_proj is not None:
                pixels = F.normalize(context.pixel_proj(outputs["mask_features"]), dim=1)
                similarity = pixel_text_similarity(pixels, in_text)
                result["pixel_text_logits"] = similarity / context.cfg.pixel_text_temperature
            return result
        outputs = self.encode_image(images, aux_classes=False, aux_outputs=False)
        outputs["clip_vis_dense"] = outputs["features"]["clip_vis_dense"]
        logits = self.classify(outputs, classifier, seen)
        return {"pred_logits": logits["ensemble"], "pred_masks": outputs["pred_masks"]}


def build_model(
    cfg: ModelConfig, *, load_clip_weights: bool = False, device: str | torch.device = "cpu"
) -> FCCLIP:
    """Wire the parts from a config. CLIP weights come from open_clip's pretrained tag only
    when ``load_clip_weights`` (otherwise from an ovseg weights file loaded afterwards).
    ``device="meta"`` builds a full-size model without memory (key and shape checks)."""
    clip_model = build_open_clip_model(
        cfg.clip.model_name,
        pretrained=cfg.clip.pretrained if load_clip_weights else None,
        model_config_file=cfg.clip.model_config_file,
        device=device,
    )
    with torch.device(device):
        return _assemble(cfg, clip_model)


def _assemble(cfg: ModelConfig, clip_model: nn.Module) -> FCCLIP:
    backbone = CLIPBackbone(clip_model, model_name=cfg.clip.model_name)
    pd, td = cfg.pixel_decoder, cfg.transformer_decoder
    pixel_decoder = PixelDecoder(
        backbone.feature_channels,
        conv_dim=pd.conv_dim,
        mask_dim=pd.mask_dim,
        num_encoder_layers=pd.num_encoder_layers,
        num_heads=pd.num_heads,
        num_points=pd.num_points,
        encoder_ffn_dim=pd.encoder_ffn_dim,
        num_groups=pd.num_groups,
    )
    transformer_decoder = TransformerDecoder(
        in_channels=pd.conv_dim,
        mask_dim=pd.mask_dim,
        hidden_dim=td.hidden_dim,
        num_queries=td.num_queries,
        num_heads=td.num_heads,
        ffn_dim=td.ffn_dim,
        num_layers=td.num_layers,
        embed_dim=backbone.embed_dim,
    )
    prompt_head = None
    if cfg.prompt_head.enabled:
        from ovseg.modeling.prompt_head import build_prompt_head

        channels = {**backbone.feature_channels, "mask_features": pixel_decoder.mask_dim}
        prompt_head = build_prompt_head(channels, cfg.prompt_head)
    text_context = None
    if cfg.text_context.enabled:
        from ovseg.modeling.text_context import TextContext

        text_context = TextContext(
            cfg.text_context,
            token_width=int(clip_model.token_embedding.weight.shape[1]),
            embed_dim=backbone.embed_dim,
            mask_dim=pixel_decoder.mask_dim,
        )
    return FCCLIP(
        backbone,
        pixel_decoder,
        transformer_decoder,
        alpha=cfg.inference.out_vocab_weight_seen,
        beta=cfg.inference.out_vocab_weight_unseen,
        prompt_head=prompt_head,
        text_context=text_context,
    )
