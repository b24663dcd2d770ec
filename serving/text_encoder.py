"""Item texts -> 384-d unit vectors in the stream: the exported all-MiniLM-L6-v2 on onnxruntime (CUDA or CPU).

Why not :mod:`model_export.text_embedding`: that one needs torch and transformers (seconds and hundreds of MB
to import), while the catalog stage runs inside the Flink job's embedded Python and must give a brand-new
item its embedding within seconds. This one needs only ``tokenizers`` (the Rust fast tokenizer, reading
the package's ``tokenizer.json``) and ``onnxruntime``, both preloaded by ``infra/embedded/sitecustomize.py``
(importing a C extension from a Flink task thread can deadlock). Its vectors equal
:func:`model_export.text_embedding.encode_texts`'s within 1e-4 (``tests/unit/test_text_encoder.py``), so rows
the trainer fitted on those vectors apply to these. ::

    from model_export.artifact.text_encoder import cached_text_encoder
    enc = TextEncoder(cached_text_encoder(".cache/text_encoder"))
    vectors = enc.encode(["Toy Story (1995) — Animation, Children's, Comedy"])  # float32 (1, 384)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from model_export.artifact.contract import (
    TEXT_ATTENTION_MASK,
    TEXT_INPUT_IDS,
    TEXT_META_PREFIX,
    TEXT_OUTPUT_NAME,
)
from model_export.features import MAX_TOKENS, TEXT_DIM, encoder_dir
from serving.onnx_session import inference_session

# Texts per onnxruntime call, sorted by length first so that a batch pads little. 64 amortises the call
# (``bench/text_adapter.py`` measures it against one text per call) while a batch of 256-token texts keeps
# its attention scores at ~200 MB (64 x 12 heads x 256 x 256 float32).
BATCH_SIZE = 64
TOKENIZER_FILE = "tokenizer.json"

# Texts -> token ids per text ([CLS] ... [SEP], truncated to max_tokens), unpadded.
Tokenize = Callable[[Sequence[str]], list[list[int]]]


def load_tokenizer(folder: Path, max_tokens: int = MAX_TOKENS) -> tuple[Tokenize, int]:
    """The package's fast tokenizer, truncating to ``max_tokens``; and its padding id.

    ``tokenizers.Tokenizer`` on ``tokenizer.json`` when the folder has one (the file fixes padding to 128
    and truncation to 128: both are reset here, padding is done per batch by :class:`TextEncoder`), else
    ``transformers.AutoTokenizer`` on the same folder (slow to import; offline only).
    """
    if (folder / TOKENIZER_FILE).is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        tok.no_padding()
        tok.enable_truncation(max_length=max_tokens)
        pad = tok.token_to_id("[PAD]")

        def fast(texts: Sequence[str]) -> list[list[int]]:
            return [e.ids for e in tok.encode_batch(list(texts))]

        return fast, 0 if pad is None else int(pad)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    def slow(texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in hf(list(texts), truncation=True, max_length=max_tokens)["input_ids"]]

    return slow, int(hf.pad_token_id or 0)


class TextEncoder:
    """Batched sentence embeddings from the exported encoder (:mod:`model_export.artifact.text_encoder`).

    Attributes:
        provider: The onnxruntime execution provider in use (``CUDAExecutionProvider`` or ``CPUExecutionProvider``).
        max_tokens: Tokens per text, longer ones truncated (from the file's metadata; 256).
        dim: Width of the vectors (384).
    """

    def __init__(
        self,
        onnx_path: Path | str,
        tokenizer_dir: Path | str | None = None,
        prefer_gpu: bool = True,
        intra_op_threads: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        """Load the tokenizer and the graph, and warm the session up.

        Args:
            onnx_path: The exported encoder, e.g. :func:`model_export.artifact.text_encoder.cached_text_encoder`.
            tokenizer_dir: Folder with ``tokenizer.json`` (or a transformers tokenizer); default: the
                encoder package's model folder.
            prefer_gpu: Run on CUDA when onnxruntime offers it and a warm-up run there succeeds.
            intra_op_threads: onnxruntime intra-op threads (None: one per physical core).
            batch_size: Texts per onnxruntime call.

        Raises:
            model_export.errors.TextEncoderNotInstalledError: no ``tokenizer_dir`` and no encoder package.
        """
        self.batch_size = batch_size
        folder = Path(tokenizer_dir) if tokenizer_dir is not None else encoder_dir()
        probe = {TEXT_INPUT_IDS: np.array([[101, 102]], dtype=np.int64), TEXT_ATTENTION_MASK: np.ones((1, 2), np.int64)}
        self._sess = inference_session(Path(onnx_path), probe, prefer_gpu, intra_op_threads)
        meta = self._sess.get_modelmeta().custom_metadata_map
        self.max_tokens = int(meta.get(TEXT_META_PREFIX + "max_tokens", MAX_TOKENS))
        self.dim = int(meta.get(TEXT_META_PREFIX + "dim", TEXT_DIM))
        self._tokenize, self._pad = load_tokenizer(folder, self.max_tokens)
        self.provider: str = self._sess.get_providers()[0]
        self.encode(["warm-up"])  # the first run allocates the arena: keep it out of the first item's latency

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings of ``texts``, in order.

        Args:
            texts: Any strings; an empty one gets the embedding of the empty sentence, a long one is
                truncated to :attr:`max_tokens` tokens.

        Returns:
            float32 (len(texts), 384), rows L2-normalised.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self._tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths per batch: little padding
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), self._pad, dtype=np.int64)  # (B, T), right-padded
            mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
            for b, i in enumerate(rows):
                input_ids[b, : len(ids[i])] = ids[i]
                mask[b, : len(ids[i])] = 1
            (vectors,) = self._sess.run([TEXT_OUTPUT_NAME], {TEXT_INPUT_IDS: input_ids, TEXT_ATTENTION_MASK: mask})
            out[rows] = vectors  # (B, 384)
        return out
