"""The exported item text encoder: parity with item_text, the export cache, and the stream's TextEncoder.

One export (~15-60 s on 2 shared cores) serves the whole module: a module-scoped fixture in a tmp cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_export.artifact.contract import PARITY_TOLERANCE, TEXT_META_PREFIX
from model_export.artifact.text_encoder import PARITY_TEXTS, cache_key, cached_text_encoder, check_text_parity
from model_export.features import TEXT_DIM, encoder_dir
from model_export.text_embedding import encode_texts
from serving.onnx_session import CPU, CUDA
from serving.text_encoder import TextEncoder, load_tokenizer

TEXTS = [
    "Toy Story (1995) — Animation, Children's, Comedy",
    "",
    "   ",
    "Amélie (2001) — Comedy, Romance 🎬 臥虎藏龍 naïve café",
    "x",
    "A film " + "about a very long and winding road " * 120,  # > 256 tokens: truncated
    "Star Wars (1977) — Action, Adventure, Romance, Sci-Fi, War",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, float]]:
    cache = tmp_path_factory.mktemp("text_encoder")
    t0 = time.perf_counter()
    path = cached_text_encoder(cache)
    yield path, time.perf_counter() - t0


@pytest.fixture(scope="module")
def encoder(exported: tuple[Path, float]) -> TextEncoder:
    return TextEncoder(exported[0], prefer_gpu=False)


def test_export_is_one_file_with_the_contract(exported: tuple[Path, float]) -> None:
    path, _ = exported
    assert path.name == cache_key()
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [path.name]
    sess = ort.InferenceSession(str(path), providers=[CPU])
    assert [(i.name, i.type, i.shape) for i in sess.get_inputs()] == [
        ("input_ids", "tensor(int64)", ["batch", "tokens"]),
        ("attention_mask", "tensor(int64)", ["batch", "tokens"]),
    ]
    outputs = [(o.name, o.type, o.shape) for o in sess.get_outputs()]
    assert outputs == [("text_embedding", "tensor(float)", ["batch", 384])]
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta[TEXT_META_PREFIX + "max_tokens"] == "256"
    assert float(meta[TEXT_META_PREFIX + "parity_max_abs_diff"]) <= PARITY_TOLERANCE


def test_export_parity_with_item_text(exported: tuple[Path, float]) -> None:
    assert check_text_parity(exported[0], [*PARITY_TEXTS, *TEXTS]) <= PARITY_TOLERANCE


def test_cached_export_is_reused(exported: tuple[Path, float]) -> None:
    path, first = exported
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = cached_text_encoder(path.parent)
    second = time.perf_counter() - t0
    assert again == path
    assert path.stat().st_mtime_ns == mtime
    assert second < 0.5 < first
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)  # readable by a job running as another user


def test_text_encoder_equals_item_text(encoder: TextEncoder) -> None:
    got = encoder.encode(TEXTS)
    want = encode_texts(TEXTS)
    assert got.shape == (len(TEXTS), TEXT_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated_like_item_text(encoder: TextEncoder) -> None:
    tokenize, _ = load_tokenizer(encoder_dir())
    (ids,) = tokenize([TEXTS[-2]])
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP] kept
    longer = encoder.encode([TEXTS[-2] + " and then some more words at the very end"])
    np.testing.assert_allclose(longer, encoder.encode([TEXTS[-2]]), atol=1e-6)  # the tail beyond 256 is cut


def test_batch_and_single_agree(encoder: TextEncoder) -> None:
    encoder.batch_size = 3  # several batches of mixed lengths, out of input order
    try:
        batched = encoder.encode(TEXTS)
    finally:
        encoder.batch_size = 64
    single = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    assert encoder.encode([]).shape == (0, TEXT_DIM)


def test_transformers_tokenizer_fallback_gives_the_same_ids(tmp_path: Path) -> None:
    folder = encoder_dir()
    for name in os.listdir(folder):  # the model folder without tokenizer.json
        if name != "tokenizer.json" and (folder / name).is_file():
            (tmp_path / name).symlink_to(folder / name)
    fast, pad_fast = load_tokenizer(folder)
    slow, pad_slow = load_tokenizer(tmp_path)
    assert slow(TEXTS) == fast(TEXTS) and pad_slow == pad_fast == 0


def test_gpu_absent_falls_back_to_cpu(exported: tuple[Path, float], monkeypatch: pytest.MonkeyPatch) -> None:
    real = ort.InferenceSession

    def no_cuda(*args: object, providers: list[str], **kwargs: object) -> ort.InferenceSession:
        if CUDA in providers:
            msg = "CUDA failure 100: no CUDA-capable device is detected"
            raise RuntimeError(msg)
        return real(*args, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", no_cuda)
    enc = TextEncoder(exported[0], prefer_gpu=True)
    assert enc.provider == CPU
    np.testing.assert_allclose(enc.encode(TEXTS[:2]), encode_texts(TEXTS[:2]), atol=1e-4)


def test_prefer_gpu_on_this_machine(exported: tuple[Path, float]) -> None:
    enc = TextEncoder(exported[0], prefer_gpu=True)
    assert enc.provider in (CUDA, CPU)
    # On a GPU onnxruntime may run float32 matmuls in TF32 (Ampere and newer): a looser bound there,
    # not yet measured on one.
    tolerance = 1e-4 if enc.provider == CPU else 2e-3
    np.testing.assert_allclose(enc.encode(TEXTS), encode_texts(TEXTS), atol=tolerance)
