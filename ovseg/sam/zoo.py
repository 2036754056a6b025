"""Segment Anything (SAM) models by name: the official checkpoints and their architectures.

``vit_b`` / ``vit_l`` / ``vit_h`` are Meta's releases (Apache-2.0, no gate), downloaded through
:mod:`ovseg.model_zoo` (atomic, size and sha256 checked) into ``$OVSEG_WEIGHTS``. ``tiny`` is a
random-weight SAM of the same design with a small image encoder, for tests and timings only.
Models are built with ``segment_anything.modeling`` (the ``segment-anything`` package) and
loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from ovseg import model_zoo
from ovseg.checkpoint import check_state_dict, load_state, read_state_dict
from ovseg.model_zoo import ZooEntry

_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_ZOO = {
    name: ZooEntry(
        name=name,
        config=name,
        filename=filename,
        description=f"Segment Anything {name.replace('vit_', 'ViT-').upper()} (Meta, Apache-2.0)",
        url=_URL + filename,
        sha256=sha256,
        size=size,
        weights_flag="--sam-weights",
    )
    for name, filename, sha256, size in (
        (
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
        ),
        (
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1_249_524_607,
        ),
        (
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
    )
}
DEFAULT_SAM = "vit_b"


@dataclass(frozen=True)
class SamArchitecture:
    """The sizes of a SAM (segment_anything's ``_build_sam`` values for the releases)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    pixel_mean: tuple[float, ...] = field(default=(123.675, 116.28, 103.53))
    pixel_std: tuple[float, ...] = field(default=(58.395, 57.12, 57.375))


SAM_ARCHITECTURES = {
    "vit_b": SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    # Random weights, ~0.5 M parameters: shapes, prompts and the labelling path in tests.
    "tiny": SamArchitecture(
        32,
        2,
        2,
        (1,),
        image_size=256,
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
    ),
    # Random weights, ~0.6 M parameters, stride-8 patches at the synthetic world's 160-pixel
    # side: a teacher trained there (``ovseg train-prompt-head --train-sam small``).
    "small": SamArchitecture(
        64,
        4,
        4,
        (1, 3),
        image_size=160,
        patch_size=8,
        window_size=10,
        prompt_embed_dim=64,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
    ),
}


def build_sam(name: str = DEFAULT_SAM, *, device: str | torch.device = "cpu"):
    """A ``segment_anything.modeling.Sam`` of the named architecture with random weights, in
    eval mode. KeyError for an unknown name."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if name not in SAM_ARCHITECTURES:
        raise KeyError(f"unknown SAM model '{name}': choose one of {', '.join(SAM_ARCHITECTURES)}")
    arch = SAM_ARCHITECTURES[name]
    embedding_size = arch.image_size // arch.patch_size
    with torch.device(device):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=arch.encoder_depth,
                embed_dim=arch.encoder_embed_dim,
                img_size=arch.image_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=arch.encoder_num_heads,
                patch_size=arch.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=arch.encoder_global_attn_indexes,
                window_size=arch.window_size,
                out_chans=arch.prompt_embed_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=arch.prompt_embed_dim,
                image_embedding_size=(embedding_size, embedding_size),
                input_image_size=(arch.image_size, arch.image_size),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2,
                    embedding_dim=arch.prompt_embed_dim,
                    mlp_dim=arch.decoder_mlp_dim,
                    num_heads=arch.decoder_num_heads,
                ),
                transformer_dim=arch.prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=list(arch.pixel_mean),
            pixel_std=list(arch.pixel_std),
        )
    return sam.eval()


def sam_weights(name: str, weights: str | Path | None = None) -> Path:
    """The checkpoint of SAM ``name``: ``weights`` if given, else the zoo file in the weights
    folder. FileNotFoundError saying where to put it (nothing is downloaded here; see
    :func:`download_sam`)."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"SAM weights file not found: {path}")
        return path
    if name not in SAM_ZOO:
        raise FileNotFoundError(
            f"SAM model '{name}' has no released weights: give --sam-weights FILE or use one of "
            f"{', '.join(SAM_ZOO)}"
        )
    local = model_zoo.local_weights(name, zoo=SAM_ZOO)
    if local is None:
        raise FileNotFoundError(
            f"--masks sam needs SAM weights: {model_zoo.manual_fetch_steps(name, zoo=SAM_ZOO)}"
        )
    return local


def download_sam(name: str = DEFAULT_SAM, *, progress: bool = True) -> Path:
    """Download an official SAM checkpoint into the weights folder (atomic; size and sha256
    checked). Returns its path; see :func:`ovseg.model_zoo.download_weights` for errors."""
    return model_zoo.download_weights(name, progress=progress, zoo=SAM_ZOO)


def load_sam(
    name: str = DEFAULT_SAM,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
):
    """Build SAM ``name`` and load its checkpoint strictly (``weights`` or the zoo file).

    Raises FileNotFoundError (no checkpoint: says where to put it) and
    :class:`ovseg.checkpoint.WeightsError` for a corrupt file or one of another size (e.g.
    vit_h weights for ``vit_b``: the message names the mis-shaped keys and the model to use).
    """
    path = sam_weights(name, weights)
    state = read_state_dict(path)
    sam = build_sam(name, device="meta")
    guess = _architecture_of(state)
    hint = (
        f"they look like SAM {guess}: pass --sam-model {guess}"
        if guess and guess != name
        else f"give a checkpoint of SAM {name} (or the --sam-model it was made for)"
    )
    source = f"SAM weights {path}"
    check_state_dict(sam, state, source=source, hint=hint)  # before a full-size SAM is built
    sam = build_sam(name, device=device)
    load_state(sam, state, source=source, hint=hint)
    return sam.eval()


def _architecture_of(state: dict[str, torch.Tensor]) -> str | None:
    """The SAM architecture whose encoder width and depth a state dict has, or None."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, arch in SAM_ARCHITECTURES.items():
        if arch.encoder_embed_dim == patch.shape[0] and arch.encoder_depth == depth:
            return name
    return None
