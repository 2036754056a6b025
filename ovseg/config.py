"""Typed model configuration.

Every default is the value of the official FC-CLIP ConvNeXt-L COCO-panoptic model; a YAML
preset in ``ovseg/configs/`` overrides a few fields. Unknown keys are an error that names the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class CLIPConfig:
    """The frozen open_clip ConvNeXt CLIP (image trunk + text tower)."""

    model_name: str = "convnext_large_d_320"
    # open_clip pretrained tag, used only when the ovseg weights file carries no CLIP weights.
    pretrained: str | None = "laion2b_s29b_b131k_ft_soup"
    # Optional open_clip model-config JSON for a model open_clip does not know by name
    # (a path, absolute or relative to the YAML preset that names it).
    model_config_file: str | None = None


@dataclass
class PixelDecoderConfig:
    conv_dim: int = 256
    mask_dim: int = 256
    num_encoder_layers: int = 6
    num_heads: int = 8
    num_points: int = 4
    encoder_ffn_dim: int = 1024
    num_groups: int = 32


@dataclass
class TransformerDecoderConfig:
    hidden_dim: int = 256
    num_queries: int = 250
    num_heads: int = 8
    ffn_dim: int = 2048
    # Decoder layers that run; the official DEC_LAYERS counts one more (the initial prediction).
    num_layers: int = 9


@dataclass
class TextConfig:
    templates: str = "vild"  # a file in ovseg/vocab/templates/ or a path
    train_vocabulary: str = "coco_panoptic"  # decides which test classes count as "seen"
    batch_size: int = 128  # prompts per text-tower call (memory only, values unchanged)


@dataclass
class InferenceConfig:
    # Geometric ensemble exponents on the out-of-vocabulary probability.
    out_vocab_weight_seen: float = 0.4  # GEOMETRIC_ENSEMBLE_ALPHA
    out_vocab_weight_unseen: float = 0.8  # GEOMETRIC_ENSEMBLE_BETA
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    # Panoptic keeps a query whose best class is unseen (not in text.train_vocabulary) even when
    # "no object" is more likely: the in-vocabulary no-object probability was trained on images
    # where those classes were unlabelled (postprocess.panoptic_queries). Off: the official rule.
    keep_novel: bool = False
    detections_per_image: int = 100
    min_size_test: int = 800
    max_size_test: int = 1333
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)
    pixel_std: tuple[float, float, float] = (68.5005327, 66.6321579, 70.32316305)


@dataclass
class PromptHeadConfig:
    """SAM's prompt encoder + mask decoder on the frozen CLIP (ovseg.modeling.prompt_head). Off in
    the official model; the decoder defaults are SAM's own sizes."""

    enabled: bool = False
    in_features: tuple[str, ...] = ("res3", "res4", "res5")
    # The image embedding's stride (SAM's: 16); masks come out at a quarter of it.
    embedding_stride: int = 16
    embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    # A box also marks the embedding cells it covers with a learned vector (added to SAM's
    # dense prompt embedding): a small head trained briefly cannot learn box geometry from
    # SAM's two corner tokens alone.
    dense_box: bool = True


@dataclass
class TextContextConfig:
    """Context-aware text (ovseg.modeling.text_context) and DenseCLIP's pixel-text auxiliary
    loss. All off in the official model; switching one on adds its parameters."""

    learnable_context: int = 0  # N learned context vectors replacing the templates (DenseCLIP: 8)
    visual_context_layers: int = 0  # DenseCLIP's visual-context decoder (its default: 3)
    visual_context_width: int = 256
    visual_context_heads: int = 4
    visual_context_gamma: float = 1e-4  # initial per-channel scale of the update
    cdt: bool = False  # MAFT+'s content-dependent transfer of the out-of-vocabulary classifier
    cdt_heads: int = 8
    cdt_loss_weight: float = 2.0  # its training signal: CE of the matched queries' CLIP labels
    pixel_text_loss_weight: float = 0.0  # DenseCLIP's auxiliary loss on pixel-text score maps
    pixel_text_temperature: float = 0.07

    @property
    def enabled(self) -> bool:
        return bool(
            self.learnable_context
            or self.visual_context_layers
            or self.cdt
            or self.pixel_text_loss_weight > 0
        )


@dataclass
class ModelConfig:
    name: str = "fcclip_convnext_large_coco"
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    transformer_decoder: TransformerDecoderConfig = field(default_factory=TransformerDecoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    prompt_head: PromptHeadConfig = field(default_factory=PromptHeadConfig)
    text_context: TextContextConfig = field(default_factory=TextContextConfig)


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config section '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ValueError(f"unknown config key '{where}{key}' (known keys: {known})")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _from_dict(type(default), value, f"{where}{key}.")
        elif isinstance(default, tuple):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> ModelConfig:
    return _from_dict(ModelConfig, values or {}, "")


def config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name (``tiny_test``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no config '{name_or_path}': give a YAML path or one of: {presets}")


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a YAML preset; relative ``clip.model_config_file`` paths are resolved next to it."""
    path = resolve_config_path(name_or_path)
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    cfg = config_from_dict(values)
    extra = cfg.clip.model_config_file
    if extra is not None and not Path(extra).is_absolute():
        cfg.clip.model_config_file = str((path.parent / extra).resolve())
    return cfg
