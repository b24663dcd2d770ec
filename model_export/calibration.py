"""Calibration of the text-only item rows: where the scale of never-seen items' rows is measured.

Calibration items are a small share of the trained items whose text the projection never fits during training;
a few of their next-item events (the calibration pairs) are held out of the loss. After training, the user
vectors at those positions are the queries that :meth:`model_export.model.SASRec.calibrate_text_only` scales
the text-only rows against, so that a new item reaches a top k as often as a trained one would. The settings
(``calibration_*``) are fields of :class:`model_export.train.TrainConfig`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_export.model import PAD, SASRec

# User vectors computed per forward pass when the calibration queries are collected.
BATCH = 512


@dataclass(frozen=True)
class HeldOut:
    """The calibration pairs of a training run: where they are, and the targets removed from the loss."""

    positions: np.ndarray  # int64 (P, 2): (window, position) of each pair
    targets: torch.Tensor  # int64 (P,): the calibration item at each pair

    @classmethod
    def none(cls) -> HeldOut:
        return cls(np.zeros((0, 2), dtype=np.int64), torch.zeros(0, dtype=torch.int64))


def calibration_items(items: Sequence[str], trained: np.ndarray, has_text: np.ndarray, share: float) -> np.ndarray:
    """Rows (bool (N + 1,)) of the items whose text the projection must not fit: the calibration items.

    About ``share`` of the trained items with text, chosen by a hash of the item id rather than the seed, so
    that a warm-started model keeps the same ones (its parent's projection never fitted them either). At
    least one when any item qualifies.

    Args:
        items: The item index (``items[i]`` is row ``i + 1``).
        trained: bool (N + 1,): rows with training events.
        has_text: bool (N + 1,): rows with a text embedding.
        share: ``TrainConfig.calibration_item_share``.
    """
    draw = np.ones(len(items) + 1)
    draw[1:] = [zlib.crc32(item.encode()) / 2**32 for item in items]  # uniform in [0, 1), stable
    draw[~(trained & has_text)] = np.inf
    draw[PAD] = np.inf
    probe = draw < share
    if not probe.any() and np.isfinite(draw).any():
        probe[np.argmin(draw)] = True
    return probe


def calibration_positions(
    y: np.ndarray, probe: np.ndarray, rng: np.random.Generator, pairs: int, holdout: float
) -> np.ndarray:
    """(window, position) int64 (P, 2) of the calibration pairs: next items that are calibration items.

    At most one per training window, its newest such position (the most history, as a served user has), from
    up to ``pairs`` windows and at most ``holdout`` of those items' next-item events.
    """
    is_probe = probe[y]  # (W, L)
    windows = np.flatnonzero(is_probe.any(1))
    n = min(pairs, int(holdout * is_probe.sum()))
    pick = np.sort(rng.permutation(windows)[:n])
    pos = y.shape[1] - 1 - is_probe[pick, ::-1].argmax(1)  # (P,)
    return np.stack([pick, pos], axis=1).astype(np.int64)


def hold_out(y: np.ndarray, probe: np.ndarray, rng: np.random.Generator, pairs: int, holdout: float) -> HeldOut:
    """Pick the calibration pairs and mask their targets out of ``y`` (int64 (W, L), in place).

    Pairs trained on overstate how well a row ranks (the user vectors were fitted to them), so they are left
    out of the loss: their recall is then measured as on new events.
    """
    at = calibration_positions(y, probe, rng, pairs, holdout)
    targets = torch.from_numpy(y[at[:, 0], at[:, 1]].copy())
    y[at[:, 0], at[:, 1]] = PAD
    return HeldOut(at, targets)


def user_vectors_at(
    model: SASRec, x: torch.Tensor, g: torch.Tensor, c: torch.Tensor, at: np.ndarray
) -> torch.Tensor:
    """The model's user vectors float (P, d) at (window, position) pairs ``at`` of the training windows."""
    w, p = torch.from_numpy(at[:, 0]), torch.from_numpy(at[:, 1])
    out = [torch.zeros(0, model.cfg.d)]
    with torch.no_grad():
        for s in range(0, len(at), BATCH):
            ws, ps = w[s : s + BATCH], p[s : s + BATCH]
            out.append(model.forward(x[ws], g[ws], c[ws])[torch.arange(len(ws)), ps])
    return torch.cat(out)


def calibrate(
    model: SASRec,
    windows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    held: HeldOut,
    exposure: float,
    k: int,
) -> None:
    """Scale the trained model's text-only rows against its held-out calibration pairs (model on CPU, eval).

    Args:
        model: The trained model.
        windows: The training windows ``(inputs, targets, gaps, scenarios)``, int64 (W, L) each, targets
            with the held-out ones masked.
        held: The calibration pairs (:func:`hold_out`).
        exposure: ``TrainConfig.cold_exposure``.
        k: The cutoff the exposure is measured at.
    """
    x, y, g, c = windows
    at = held.positions
    queries = user_vectors_at(model, torch.from_numpy(x), torch.from_numpy(g), torch.from_numpy(c), at)
    # The window's other items do not compete: the earlier ones are seen (filtered when serving), and
    # the later ones were trained as next items of nearly the same history, so they crowd its top k.
    window = np.concatenate([x[at[:, 0]], y[at[:, 0]]], axis=1)  # (P, 2 max_len)
    exclude = torch.zeros(len(at), model.n_items + 1, dtype=torch.bool)
    exclude.scatter_(1, torch.from_numpy(window), True)
    model.calibrate_text_only(queries, held.targets, exposure, k, exclude)
