"""The text classifier: one CLIP text embedding per synonym, averaged over prompt templates,
and class logits that take the max over each class's synonyms."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ovseg.fileio import cache_root
from ovseg.modeling.backbone import CLIPBackbone
from ovseg.vocabulary import Vocabulary


@dataclass
class TextClassifier:
    """Text embeddings of a vocabulary.

    embeddings: (S, D) L2-normalised, one row per synonym, class-major; or (B, S, D), one
        classifier per image (text adapted to each image, :mod:`ovseg.modeling.text_context`).
    num_synonyms: synonyms per class, length K.
    context_tokens: (S, context) token ids of the synonyms' prompts with learned-context
        placeholders, when a model with learned context recomputes ``embeddings`` in training.
    """

    embeddings: torch.Tensor
    num_synonyms: list[int]
    context_tokens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if sum(self.num_synonyms) != self.embeddings.shape[-2]:
            raise ValueError("num_synonyms does not add up to the number of embedding rows")
        # (K, max synonyms) column index into [embeddings; void; -inf pad], padded with the pad.
        num_rows = self.embeddings.shape[-2]
        width = max(self.num_synonyms)
        index = torch.full((len(self.num_synonyms), width), num_rows + 1, dtype=torch.long)
        start = 0
        for k, count in enumerate(self.num_synonyms):
            index[k, :count] = torch.arange(start, start + count)
            start += count
        self.synonym_index = index

    @property
    def num_classes(self) -> int:
        return len(self.num_synonyms)

    def to(self, device: torch.device | str) -> TextClassifier:
        tokens = None if self.context_tokens is None else self.context_tokens.to(device)
        return TextClassifier(self.embeddings.to(device), list(self.num_synonyms), tokens)

    def with_embeddings(self, embeddings: torch.Tensor) -> TextClassifier:
        """The same classes with other embeddings ((S, D) or (B, S, D))."""
        return TextClassifier(embeddings, list(self.num_synonyms), self.context_tokens)


def classification_logits(
    embeddings: torch.Tensor,
    classifier: TextClassifier,
    void_embedding: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Cosine-similarity class logits, max over synonyms, void last.

    Args:
        embeddings: (B, Q, D) query embeddings (not normalised).
        classifier: text embeddings of K classes with S synonyms in all, (S, D) or one set per
            image (B, S, D).
        void_embedding: (1, D) learned void embedding (not normalised).
        logit_scale: scalar log temperature; exp() is clamped at 100.
    Returns:
        (B, Q, K+1) logits, the last column is void.
    """
    index = classifier.synonym_index.to(embeddings.device)
    return synonym_logits(embeddings, classifier.embeddings, index, void_embedding, logit_scale)


def synonym_logits(
    embeddings: torch.Tensor,
    text: torch.Tensor,
    synonym_index: torch.Tensor,
    void_embedding: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """:func:`classification_logits` on plain tensors (what an exported graph takes as input).

    Args:
        embeddings: (B, Q, D) query embeddings (not normalised).
        text: (S, D) or (B, S, D) L2-normalised synonym embeddings.
        synonym_index: (K, M) int64, row k the synonym rows of class k, padded with S + 1
            (:attr:`TextClassifier.synonym_index`; a vocabulary without synonyms: arange(K)).
        void_embedding: (1, D); logit_scale: scalar log temperature (exp clamped at 100).
    Returns:
        (B, Q, K+1) logits: per class the max over its synonyms, void last.
    """
    void = F.normalize(void_embedding, dim=-1)
    x = F.normalize(embeddings, dim=-1)
    scale = torch.clamp(logit_scale.exp(), max=100)
    if text.dim() == 2:
        raw = scale * x @ torch.cat([text, void], dim=0).T  # (B, Q, S+1)
    else:
        text = torch.cat([text, void.to(text)[None].expand(len(text), -1, -1)], 1)
        raw = scale * torch.einsum("bqd,bsd->bqs", x, text)
    pad = raw.new_full(raw.shape[:-1] + (1,), float("-inf"))
    padded = torch.cat([raw, pad], dim=-1)
    per_class = padded[..., synonym_index].amax(dim=-1)  # (B, Q, K)
    return torch.cat([per_class, raw[..., -1:]], dim=-1)


def _atomic_save(tensor: torch.Tensor, path: Path) -> None:
    from safetensors.torch import save_file

    from ovseg.fileio import atomic_write

    atomic_write(path, lambda tmp: save_file({"embeddings": tensor.contiguous().cpu()}, tmp))


def _load_cached(path: Path, rows: int) -> torch.Tensor | None:
    """A cached embedding file, or None when it is unreadable or of the wrong size (the
    embeddings are then recomputed and the file rewritten)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        embeddings = load_file(str(path)).get("embeddings")
    except (SafetensorError, OSError):
        return None
    if embeddings is None or embeddings.dim() != 2 or embeddings.shape[0] != rows:
        return None
    return embeddings


def default_text_cache_dir() -> Path:
    return cache_root() / "text"


class TextEncoder:
    """Builds :class:`TextClassifier` s with a CLIP backbone, cached in memory and on disk.

    The cache key is a hash of the text tower's weights, the templates and the synonyms, so a
    repeated vocabulary costs a file read and never a text-tower pass.
    """

    def __init__(
        self,
        backbone: CLIPBackbone,
        templates: list[str],
        *,
        batch_size: int = 128,
        cache_dir: str | Path | None = None,
        use_disk_cache: bool = True,
        context=None,
    ) -> None:
        self.backbone = backbone
        # A model's learned context (ovseg.modeling.text_context) replaces the templates.
        self.context = context
        self.templates = list(templates)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_text_cache_dir()
        self.use_disk_cache = use_disk_cache
        self._memory: dict[str, torch.Tensor] = {}

    def _save_or_give_up(self, embeddings: torch.Tensor, path: Path) -> None:
        """Write the disk cache; a folder that cannot be written (read-only or missing home,
        full disk) turns the disk cache off for this encoder, said once on stderr."""
        try:
            _atomic_save(embeddings, path)
        except OSError as error:
            self.use_disk_cache = False
            print(
                f"ovseg: cannot write the text cache in {self.cache_dir} "
                f"({error.strerror or error}); going on without it (set OVSEG_CACHE to a "
                "writable folder to keep text embeddings between runs)",
                file=sys.stderr,
            )

    def clear_memory(self) -> None:
        """Forget the in-memory cache (the disk cache stays): the next call reads the disk."""
        self._memory.clear()

    def _key(self, synonyms: list[str]) -> str:
        digest = hashlib.sha256(self.backbone.text_fingerprint().encode())
        digest.update("\x1e".join(self.templates).encode())
        if self.context is not None:  # learned context instead of templates: its values
            digest.update(self.context.context.detach().float().cpu().numpy().tobytes())
        digest.update(b"\x1d")
        digest.update("\x1e".join(synonyms).encode())
        return digest.hexdigest()[:32]

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> (N, D) text embeddings, not normalised.

        Identical prompts are encoded once, and prompts are batched by token length so that
        each batch is cut just after its longest end-of-text token (values do not change: the
        text tower is causal).
        """
        device = next(self.backbone.parameters()).device
        tokens = self.backbone.tokenize(prompts)
        unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        order = unique.argmax(dim=-1).argsort(stable=True)  # by end-of-text position
        encoded = torch.empty(0)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.backbone.encode_text(unique[index].to(device)).float().cpu()
            if encoded.numel() == 0:
                encoded = torch.empty((len(unique), batch.shape[-1]))
            encoded[index] = batch
        return encoded[inverse]

    def encode_synonyms(self, synonyms: list[str]) -> torch.Tensor:
        """Synonyms -> (S, D): normalise each prompt, mean over templates, normalise again; with
        a learned context, the context's prompt of each synonym instead."""
        if self.context is not None:
            with torch.no_grad():
                device = self.context.context.device
                return (
                    self.context(
                        self.backbone, self.context.tokens(self.backbone, synonyms).to(device)
                    )
                    .float()
                    .cpu()
                )
        prompts = [template.format(s) for s in synonyms for template in self.templates]
        per_prompt = F.normalize(self.encode_prompts(prompts), dim=-1)
        per_synonym = per_prompt.reshape(len(synonyms), len(self.templates), -1).mean(dim=1)
        return F.normalize(per_synonym, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts (class synonyms or free-form phrases) -> (N, D) L2-normalised embeddings,
        each the mean over the prompt templates (:meth:`encode_synonyms`), cached in memory
        and on disk by the text tower, the templates and the texts."""
        key = self._key(texts)
        embeddings = self._memory.get(key)
        path = self.cache_dir / f"{key}.safetensors"
        if embeddings is None and self.use_disk_cache and path.is_file():
            embeddings = _load_cached(path, len(texts))
        if embeddings is None:
            embeddings = self.encode_synonyms(texts).cpu()
            if self.use_disk_cache:
                self._save_or_give_up(embeddings, path)
        self._memory[key] = embeddings
        return embeddings

    def cut_texts(self, texts: list[str]) -> list[str]:
        """The texts that some prompt (a template, or the learned context's prompt) makes
        longer than the text tower's context: the tokenizer cuts them, their end is not read."""
        from ovseg.modeling.backbone import longer_than_context

        context = self.backbone.text_context_length
        if self.context is not None:
            pairs = list(zip(texts, self.context.prompts(texts), strict=True))
        else:
            pairs = [(text, t.format(text)) for t in self.templates for text in texts]
        # A token covers at least one UTF-8 byte: shorter prompts cannot overflow.
        pairs = [(text, prompt) for text, prompt in pairs if len(prompt.encode()) > context - 2]
        if not pairs:
            return []
        longer = longer_than_context(self.backbone.model_name, [p for _, p in pairs], context)
        return list(
            dict.fromkeys(text for (text, _), cut in zip(pairs, longer, strict=True) if cut)
        )

    def __call__(self, vocab: Vocabulary) -> TextClassifier:
        return TextClassifier(self.encode_texts(vocab.synonyms), vocab.num_synonyms)
