"""Rows for items the serving model has never seen: grow its item table, initialising new rows from text.

When the trainer fine-tunes the serving model on newer events, items first seen since its training
need rows in the (tied input/output) item embedding table. Known items keep their learned rows. A
new item's row is predicted from its text: a ridge regression (closed form, with intercept) maps the
all-MiniLM-L6-v2 embeddings of the parent's best-known items to their learned id embeddings, and is
applied to the new items' text embeddings. Items without text get the mean of the known rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_export.model import PAD, SASRec

# Ridge penalty on centred, unit-norm MiniLM vectors.
RIDGE_ALPHA = 1.0
# Fit on at most this many known items, the most interacted first: rarely seen items' rows are still
# mostly their random initialisation, so fitting on them teaches the map noise; it also bounds the text
# encoding a run pays for.
MAX_FIT_ITEMS = 1024
# Fewer known items with text than this: no regression, new rows are the mean row.
MIN_FIT_ITEMS = 8

# Texts -> unit-norm float32 (n, t) vectors, e.g. model_export.text_embedding.encode_texts.
TextEncode = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class GrowStats:
    """How a grown item table was filled.

    Attributes:
        copied: Rows of known items copied from the parent.
        from_text: New rows predicted from their item's text.
        mean: New rows set to the mean known row (no text, or too few known items to fit on).
        fit_items: Known items the regression was fitted on.
    """

    copied: int
    from_text: int
    mean: int
    fit_items: int


def ridge_predict(
    x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray, alpha: float = RIDGE_ALPHA
) -> np.ndarray:
    """Closed-form ridge regression with an (unpenalised) intercept: fit ``x_fit -> y_fit``, apply to ``x_new``.

    Args:
        x_fit: Features of the fitted rows, (n, t).
        y_fit: Targets, (n, d).
        x_new: Features to predict for, (m, t).
        alpha: L2 penalty on the weights (> 0 keeps the system solvable when n < t).

    Returns:
        Predictions, float32 (m, d).
    """
    x_mean, y_mean = x_fit.mean(0), y_fit.mean(0)
    xc = (x_fit - x_mean).astype(np.float64)  # (n, t)
    gram = xc.T @ xc + alpha * np.eye(xc.shape[1])  # (t, t)
    w = np.linalg.solve(gram, xc.T @ (y_fit - y_mean))  # (t, d)
    return ((x_new - x_mean) @ w + y_mean).astype(np.float32)  # (m, d)


def text_rows(
    known_texts: Sequence[str],
    known_rows: np.ndarray,
    new_texts: Sequence[str],
    encode: TextEncode,
    alpha: float = RIDGE_ALPHA,
    fallback: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for new items from their texts, regressed on known items' texts and rows.

    Args:
        known_texts: Texts of the known items to fit on (``""``: no text, left out of the fit).
        known_rows: Their learned rows, (n, d), in the same order.
        new_texts: Texts of the new items (``""``: no text).
        encode: The text encoder.
        alpha: Ridge penalty.
        fallback: The row of items that get none from text, (d,); default: the mean of ``known_rows``.

    Returns:
        Rows float32 (m, d), and a bool mask (m,) of the rows that came from text; the others are
        ``fallback``.
    """
    if fallback is None:
        fallback = known_rows.mean(0) if len(known_rows) else np.zeros(known_rows.shape[1])
    rows = np.tile(np.asarray(fallback, dtype=np.float32), (len(new_texts), 1))  # (m, d)
    has_text = np.array([bool(t) for t in new_texts], dtype=bool)
    fit = [i for i, t in enumerate(known_texts) if t]
    if len(fit) < MIN_FIT_ITEMS or not has_text.any():
        return rows, np.zeros(len(new_texts), dtype=bool)
    new_idx = np.nonzero(has_text)[0]
    vectors = encode([known_texts[i] for i in fit] + [new_texts[i] for i in new_idx])  # (n' + m', t)
    rows[new_idx] = ridge_predict(vectors[: len(fit)], known_rows[fit], vectors[len(fit) :], alpha)
    return rows, has_text


def grow_item_table(
    model: SASRec,
    items: Sequence[str],
    new_items: Sequence[str],
    texts: Mapping[str, str],
    counts: Mapping[str, int],
    encode: TextEncode,
) -> tuple[SASRec, list[str], GrowStats]:
    """A copy of ``model`` with rows appended for ``new_items``; every other weight is the parent's.

    Args:
        model: The parent model; ``items[i]`` is its row ``i + 1``. It is not modified.
        items: The parent's item index.
        new_items: Items to add (none of them in ``items``), in the order their rows get.
        texts: Item id -> text (see :func:`model_export.text_embedding.item_text`); missing ids have none.
        counts: Item id -> interactions in the training data: the most interacted known items are
            the ones the regression is fitted on (at most :data:`MAX_FIT_ITEMS`).
        encode: The text encoder (only called when there is something to encode).

    Returns:
        The grown model (eval mode), its item index ``[*items, *new_items]``, and how rows were filled.
    """
    if set(new_items) & set(items):
        msg = "grow_item_table: new_items must not be in the parent's index"
        raise ValueError(msg)
    n_old, n_new = len(items), len(new_items)
    grown = SASRec(n_old + n_new, model.cfg, model.n_scenarios, model.text_dim)
    per_item = ("item_emb.weight", "has_id", "text_feat")
    state = {k: v for k, v in model.state_dict().items() if k not in per_item}
    missing, unexpected = grown.load_state_dict(state, strict=False)
    if sorted(missing) != sorted(per_item) or unexpected:
        msg = f"grow_item_table: parent and grown model differ beyond the item table: {missing} {unexpected}"
        raise RuntimeError(msg)
    if model.text_proj is not None:
        # A text model scores a new item from its text until the item has events to learn an id row from.
        texts_new = [texts.get(i, "") for i in new_items]
        feats = np.zeros((n_new, model.text_dim), dtype=np.float32)
        have = [j for j, t in enumerate(texts_new) if t]
        if have:
            feats[have] = encode([texts_new[j] for j in have])
        with torch.no_grad():
            grown.item_emb.weight[: n_old + 1].copy_(model.item_emb.weight.detach())
            grown.item_emb.weight[n_old + 1 :].zero_()
        grown.set_items(
            has_id=torch.cat([model.has_id.detach(), torch.zeros(n_new)]),
            text=torch.cat([model.text_feat.detach(), torch.from_numpy(feats)]),
        )
        return grown.eval(), [*items, *new_items], GrowStats(n_old, len(have), 0, 0)
    known = model.item_matrix().detach().numpy()[1:]  # (N, d), row 0 (padding) dropped
    order = sorted(range(len(items)), key=lambda i: -counts.get(items[i], 0))  # stable: ties by row
    fit = [i for i in order if texts.get(items[i])][:MAX_FIT_ITEMS]
    rows, from_text = text_rows(
        [texts[items[i]] for i in fit],
        known[fit],
        [texts.get(i, "") for i in new_items],
        encode,
        fallback=known.mean(0) if len(known) else None,  # every known row, not only the fitted ones
    )
    with torch.no_grad():
        table = torch.cat([model.item_emb.weight.detach(), torch.from_numpy(rows)])  # (N + M + 1, d)
        grown.item_emb.weight.copy_(table)
        grown.item_emb.weight[PAD].zero_()
    grown.set_items(has_id=torch.cat([model.has_id.detach(), torch.ones(n_new)]))
    stats = GrowStats(n_old, int(from_text.sum()), int((~from_text).sum()), len(fit))
    return grown.eval(), [*items, *new_items], stats
