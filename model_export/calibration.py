"""Calibration of the text-only item rows: where the scale of never-seen items' rows is measured.

Calibration items are a small share of the trained items whose text the projection never fits during training;
a few of their next-item events (the calibration pairs) are held out of the loss. After training, the user
vectors at those positions are the queries that :meth:`model_export.model.SASRec.calibrate_text_only` scales
the text-only rows against, so that a new item reaches a top k as often as a trained one would.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

from model_export.model import PAD, SASRec

# Share of the trained items whose text the projection never fits, so that their text-only rows stand in
# for never-seen items when the text-only scale is calibrated. Calibrating on texts the projection had
# fitted undershot: ML-1M cold run, equal opportunity on training data gave 0.45x cold/in-set on the test.
CALIBRATION_ITEM_SHARE = 0.05


# Calibration pairs (a calibration item as the next item) held out of the loss: up to this many,
# enough for a stable recall@10 estimate (its standard error ~0.006), a few seconds of scoring on CPU...
CALIBRATION_PAIRS = 4096


# ... and at most this share of the calibration items' next-item events, so that their id rows still
# learn about as well as the others' (the reference the text-only rows are calibrated against).
CALIBRATION_HOLDOUT = 0.25


CALIBRATION_BATCH = 512


def calibration_items(items: Sequence[str], trained: np.ndarray, has_text: np.ndarray) -> np.ndarray:
    """Rows (bool (N + 1,)) of the items whose text the projection must not fit: the calibration items.

    About :data:`CALIBRATION_ITEM_SHARE` of the trained items with text, chosen by a hash of the item
    id rather than the seed, so that a warm-started model keeps the same ones (its parent's projection
    never fitted them either). At least one when any item qualifies.

    Args:
        items: The item index (``items[i]`` is row ``i + 1``).
        trained: bool (N + 1,): rows with training events.
        has_text: bool (N + 1,): rows with a text embedding.
    """
    draw = np.ones(len(items) + 1)
    draw[1:] = [zlib.crc32(item.encode()) / 2**32 for item in items]  # uniform in [0, 1), stable
    draw[~(trained & has_text)] = np.inf
    draw[PAD] = np.inf
    probe = draw < CALIBRATION_ITEM_SHARE
    if not probe.any() and np.isfinite(draw).any():
        probe[np.argmin(draw)] = True
    return probe


def calibration_positions(y: np.ndarray, probe: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(window, position) int64 (P, 2) of the calibration pairs: next items that are calibration items.

    At most one per training window, its newest such position (the most history, as a served user
    has), from up to :data:`CALIBRATION_PAIRS` windows and :data:`CALIBRATION_HOLDOUT` of those events.
    """
    is_probe = probe[y]  # (W, L)
    windows = np.flatnonzero(is_probe.any(1))
    n = min(CALIBRATION_PAIRS, int(CALIBRATION_HOLDOUT * is_probe.sum()))
    pick = np.sort(rng.permutation(windows)[:n])
    pos = y.shape[1] - 1 - is_probe[pick, ::-1].argmax(1)  # (P,)
    return np.stack([pick, pos], axis=1).astype(np.int64)


def user_vectors_at(
    model: SASRec, x: torch.Tensor, g: torch.Tensor, c: torch.Tensor, at: np.ndarray
) -> torch.Tensor:
    """The model's user vectors float (P, d) at (window, position) pairs ``at`` of the training windows."""
    w, p = torch.from_numpy(at[:, 0]), torch.from_numpy(at[:, 1])
    out = [torch.zeros(0, model.cfg.d)]
    with torch.no_grad():
        for s in range(0, len(at), CALIBRATION_BATCH):
            ws, ps = w[s : s + CALIBRATION_BATCH], p[s : s + CALIBRATION_BATCH]
            out.append(model.forward(x[ws], g[ws], c[ws])[torch.arange(len(ws)), ps])
    return torch.cat(out)
