"""The item text encoder as one ONNX file: all-MiniLM-L6-v2 + mean pooling + L2 norm, exported once and cached.

Why: the stream must give a brand-new item an embedding within seconds, inside the Flink job's embedded
Python, without importing torch and transformers there. The graph computes exactly what
:func:`model_export.text_embedding.encode_texts` does (transformer, mean of the token states over the
attention mask, L2 normalisation), so vectors from the stream and from the trainer are interchangeable;
:func:`check_text_parity` holds it to :data:`PARITY_TOLERANCE`. The serving side runs it with
:class:`serving.text_encoder.TextEncoder`. The file (one, weights inside)::

    inputs   input_ids       int64   (batch, tokens)   WordPiece ids with [CLS] ... [SEP], 0-padded right
             attention_mask  int64   (batch, tokens)   1 for real tokens, 0 for padding
    output   text_embedding  float32 (batch, 384)      unit rows

and its ``metadata_props`` (:data:`TEXT_META_PREFIX` keys) record the encoder package version, the settings
hash, ``max_tokens`` and the parity measured at export. Export once, reuse everywhere::

    from model_export.artifact.text_encoder import cached_text_encoder
    onnx_path = cached_text_encoder(Path(".cache/text_encoder"))  # 15-60 s the first time, then a stat()

torch, transformers and onnxruntime are imported only when an export runs: the serving side imports this
module for its constants.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.artifact.contract import (
    BATCH_AXIS,
    OPSET,
    PARITY_TOLERANCE,
    TEXT_ATTENTION_MASK,
    TEXT_INPUT_IDS,
    TEXT_META_PREFIX,
    TEXT_OUTPUT_NAME,
    TEXT_TOKENS_AXIS,
)
from model_export.errors import ParityError, TextEncoderNotInstalledError
from model_export.features import ENCODER_PACKAGE, MAX_TOKENS, TEXT_DIM

log = logging.getLogger(__name__)

# Everything that shapes the exported file. A change here, in the encoder package or in the exporter
# (torch / transformers versions) gives a new cache key, hence a fresh export; bump "format" when the
# export code changes in a way these fields do not show.
EXPORT_SETTINGS: dict[str, Any] = {
    "format": 1,
    "opset": OPSET,
    "exporter": "torch.onnx.export(dynamo=True)",
    "inputs": [TEXT_INPUT_IDS, TEXT_ATTENTION_MASK],
    "output": TEXT_OUTPUT_NAME,
    "pooling": "mean over attention_mask",
    "normalize": "l2",
    "max_tokens": MAX_TOKENS,
    "dim": TEXT_DIM,
}
# Real catalog texts (ML-100k/ML-1M item_text) plus the edge cases: empty, unicode, over-long (truncated).
PARITY_TEXTS = (
    "Toy Story (1995) — Animation, Children's, Comedy",
    "GoldenEye (1995) — Action, Adventure, Thriller",
    "Four Rooms (1995) — Thriller",
    "Usual Suspects, The (1995) — Crime, Thriller",
    "Shawshank Redemption, The (1994) — Drama",
    "Star Wars (1977) — Action, Adventure, Romance, Sci-Fi, War",
    "Wallace & Gromit: The Best of Aardman Animation (1996) — Animation",
    "Cité des enfants perdus, La (1995) — Adventure, Sci-Fi",
    "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000) — Action, Drama, Romance. 臥虎藏龍",
    "Amélie (Le Fabuleux destin d'Amélie Poulain) (2001) — Comedy, Romance 🎬",
    "",
    "a",
    "An epic " + "saga of love, war and betrayal across three generations " * 40,
)


@dataclass(frozen=True)
class TextEncoderExport:
    """What one export produced.

    Attributes:
        path: The ONNX file.
        seconds: Wall time of export + parity check.
        size_bytes: File size (weights inside).
        parity_max_abs_diff: Max |onnxruntime - torch| over :data:`PARITY_TEXTS`.
    """

    path: Path
    seconds: float
    size_bytes: int
    parity_max_abs_diff: float


def encoder_version() -> str:
    """The installed version of the encoder package (part of the cache key).

    Raises:
        TextEncoderNotInstalledError: the package is not installed.
    """
    try:
        return importlib.metadata.version(ENCODER_PACKAGE.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError as exc:
        raise TextEncoderNotInstalledError(ENCODER_PACKAGE, "not installed") from exc


def _settings() -> dict[str, Any]:
    """:data:`EXPORT_SETTINGS` plus the versions of the code that writes the graph (without importing it)."""
    versions = {name: importlib.metadata.version(name) for name in ("torch", "transformers")}
    return {**EXPORT_SETTINGS, "versions": versions}


def cache_key() -> str:
    """File name of the current export: ``all-minilm-l6-v2-<package version>-<settings hash>.onnx``."""
    digest = hashlib.sha256(json.dumps(_settings(), sort_keys=True).encode()).hexdigest()[:12]
    return f"all-minilm-l6-v2-{encoder_version()}-{digest}.onnx"


def cached_text_encoder(cache_dir: Path | str) -> Path:
    """The exported encoder in ``cache_dir``, exported (and parity-checked) only if not there yet.

    Concurrent callers (trainer, tests, bench) export once: an exclusive lock on ``<file>.lock`` is taken
    around the check-and-export, and the file appears by an atomic rename, so a reader never sees half
    of it. Superseded exports (another key) are left in place; delete the folder to reclaim them.

    Args:
        cache_dir: A folder (created if missing), e.g. ``.cache/text_encoder`` (git-ignored), the one
            ``model_export.artifact.export`` uses.

    Returns:
        The ONNX file's path.

    Raises:
        TextEncoderNotInstalledError: the encoder package is missing.
        ParityError: a fresh export does not match :func:`model_export.text_embedding.encode_texts`.
    """
    folder = Path(cache_dir)
    path = folder / cache_key()
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        if not path.is_file():  # another process may have exported it while we waited
            export_text_encoder(path)
    return path


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def export_text_encoder(path: Path | str) -> TextEncoderExport:
    """Export the encoder to ``path`` (atomically: a temp file in the same folder, renamed once checked).

    Raises:
        ParityError: onnxruntime and :func:`model_export.text_embedding.encode_texts` differ beyond
            :data:`PARITY_TOLERANCE`; nothing is written then.
    """
    import torch

    from model_export.text_embedding import text_encoder

    class SentenceEncoder(torch.nn.Module):
        """What the graph computes: input_ids, attention_mask (B, T) -> text_embedding (B, 384)."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return sentence_embedding(self.bert, input_ids, attention_mask)  # (B, 384)

    path = Path(path)
    t0 = time.perf_counter()
    hf = text_encoder()  # the very module encode_texts runs, so parity compares like with like
    example = hf.tokenizer(["a short title", "a somewhat longer item title"], padding=True, return_tensors="pt")
    batch, tokens = torch.export.Dim(BATCH_AXIS), torch.export.Dim(TEXT_TOKENS_AXIS, max=MAX_TOKENS)
    axes = {0: batch, 1: tokens}
    exporter_log = logging.getLogger("torch.onnx")  # one warning per torchvision op it cannot register
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # "The axis name: batch will not be used, since it shares ... another axis: batch": both inputs
            # share the two axes on purpose.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares", category=UserWarning)
            program = torch.onnx.export(
                SentenceEncoder(hf.model).eval(),
                (example["input_ids"], example["attention_mask"]),
                input_names=[TEXT_INPUT_IDS, TEXT_ATTENTION_MASK],
                output_names=[TEXT_OUTPUT_NAME],
                dynamic_shapes={TEXT_INPUT_IDS: axes, TEXT_ATTENTION_MASK: axes},
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    if program is None:  # only the legacy exporter returns None
        msg = "torch.onnx.export(dynamo=True) returned no program"
        raise RuntimeError(msg)
    diff = check_text_parity(program.model_proto.SerializeToString())
    meta = {
        "encoder_package": ENCODER_PACKAGE,
        "encoder_version": encoder_version(),
        "settings_sha256": hashlib.sha256(json.dumps(_settings(), sort_keys=True).encode()).hexdigest(),
        "max_tokens": str(MAX_TOKENS),
        "dim": str(TEXT_DIM),
        "parity_max_abs_diff": f"{diff:.3g}",
        "parity_tolerance": f"{PARITY_TOLERANCE:g}",
    }
    program.model.metadata_props.update({TEXT_META_PREFIX + k: v for k, v in meta.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        # One self-contained file (~91 MB, under protobuf's 2 GB limit): nothing to keep in step beside it.
        program.save(tmp, external_data=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: the job may run as another user
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    size = path.stat().st_size
    log.info(f"  exported text encoder {path} ({size / 1e6:.1f} MB) in {seconds:.1f}s")
    return TextEncoderExport(path, seconds, size, diff)


def check_text_parity(
    model: Path | str | bytes, texts: Sequence[str] = PARITY_TEXTS, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Compare the ONNX graph (onnxruntime, CPU) with :func:`model_export.text_embedding.encode_texts` on ``texts``.

    The graph runs on all texts in one padded batch and on each text alone, so that both dynamic axes
    and the padding mask are exercised. Tokens come from the same tokenizer ``encode_texts`` uses.

    Returns:
        The max absolute difference.

    Raises:
        ParityError: the difference exceeds ``tolerance`` (or is NaN).
    """
    import onnxruntime as ort

    from model_export.text_embedding import encode_texts, text_encoder

    source = model if isinstance(model, bytes) else str(model)
    sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    tok = text_encoder().tokenizer
    want = encode_texts(list(texts))  # (n, 384)

    def run(batch: Sequence[str]) -> np.ndarray:
        t = tok(list(batch), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np")
        feed = {
            TEXT_INPUT_IDS: t["input_ids"].astype(np.int64),
            TEXT_ATTENTION_MASK: t["attention_mask"].astype(np.int64),
        }
        return np.asarray(sess.run([TEXT_OUTPUT_NAME], feed)[0])

    together = run(texts)  # (n, 384), padded to the longest
    alone = np.concatenate([run([t]) for t in texts])  # (n, 384), no padding
    diff = float(max(np.abs(together - want).max(), np.abs(alone - want).max()))
    log.info(f"  text encoder parity: max |onnxruntime - torch| = {diff:.2e} (tolerance {tolerance:.0e})")
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(diff, tolerance)
    return diff


def sentence_embedding(bert: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Unit sentence vectors (B, 384) of a BERT on token batches (B, T), as item_text computes them.

    Torch tensors in and out; written with tensor methods only, so that this module does not import
    torch. The export and the adapter benchmark (``bench/text_adapter.py``, gradients through LoRA) share it.
    """
    # token_type_ids: all 0 for single sentences, as the tokenizer gives them.
    hidden = bert(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=input_ids.new_zeros(input_ids.shape)
    ).last_hidden_state  # (B, T, 384)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
    return mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (B, 384): torch's F.normalize
