"""Non-neural baselines for the offline evaluation: :data:`~model_export.evaluation.metrics.Ranker` s of an item index.

Each builder takes what the baseline may know and the item index (``items[i]`` is row ``i + 1``; row 0
is padding) and returns a ranker: histories (B) -> scores (B, N + 1). Ties rank by row (the
evaluation's stable order), so every score here is deterministic.

* :func:`popularity_ranker`: training interaction counts, the same for everyone (the literature's
  "MostPop").
* :func:`recent_popularity_ranker`: interactions of the ``window_ms`` (7 days) before each case's
  prediction time, counted over the whole stream, training or test (what a streaming system knows
  then), ties by all the interactions before that time ("Popular-7-days" of Gusak et al.'s benchmark).
* :func:`itemknn_ranker`: item-item cosine similarity on the binary training user-item matrix with a
  shrink term, top-``neighbours`` per item kept; a user's score for an item is the sum of its
  similarities to the items of the history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from model_export.data.splits import History, Ranker

__all__ = ["ITEMKNN_NEIGHBOURS", "ITEMKNN_SHRINK", "itemknn_ranker", "popularity_ranker", "recent_popularity_ranker"]

DAY_MS = 86_400_000
# The "Popular-7-days" window of the transformer benchmark (Gusak et al.): short enough to follow trends.
RECENT_WINDOW_MS = 7 * DAY_MS
# Tuned lightly on ML-100k (5-core) validation cases, never on the test targets (each user's 2nd..6th item
# from the end as the target, the items after it unseen), over neighbours {20, 50, 100, 200, 400, all} x
# shrink {0, 10, 50, 100, 200}: 400 and 10 sit within one standard error of the best and keep a long
# catalogue's weakest links and pairs of little support down.
ITEMKNN_NEIGHBOURS = 400
ITEMKNN_SHRINK = 10.0
# Positions per checkpoint of cumulative counts in recent_popularity_ranker: ~E/1024 keeps the table
# at about 1,024 x (N + 1) counts and each count to at most that many events to add.
_CHECKPOINTS = 1024


def recent_popularity_ranker(
    sequences: Mapping[str, Sequence[str]],
    times: Mapping[str, Sequence[int]],
    items: Sequence[str],
    window_ms: int = RECENT_WINDOW_MS,
) -> Ranker:
    """Most popular items over the ``window_ms`` before each case's prediction time (``History.now``).

    Every event strictly before ``now`` counts, whoever made it and whether it is training or test
    data: the stream has seen them all by then. The case's own event (at ``now``) and anything later
    never count. Ties (e.g. items with no event in the window) rank by the count of all events
    before ``now``, then by row.

    It is vectorised: events sorted by time once; cumulative per-item counts kept every ~E/1024
    events, so the count vector before any time is one checkpoint plus at most E/1024 events.

    Args:
        sequences: ``{user: [item_id, ...]}``: every event of the stream (``Split.sequences``).
        times: Their event times, epoch ms, aligned (``Split.times``).
        items: The item index; events of other items are ignored.
        window_ms: Length of the popularity window.

    Returns:
        The ranker; scores ``window count * (E + 1) + count before now``, float64 (B, N + 1): float32
        would round the tie-break away.
    """
    row = {item: r for r, item in enumerate(items, start=1)}
    n_rows = len(items) + 1
    ev_rows: list[int] = []
    ev_ts: list[int] = []
    for user, seq in sequences.items():
        for item, ts in zip(seq, times[user], strict=True):
            r = row.get(item)
            if r is not None:
                ev_rows.append(r)
                ev_ts.append(ts)
    ts_arr = np.asarray(ev_ts, dtype=np.int64)
    order = np.argsort(ts_arr, kind="stable")
    ts_sorted, rows_sorted = ts_arr[order], np.asarray(ev_rows, dtype=np.int64)[order]
    n_events = len(ts_sorted)
    step = max(1, -(-n_events // _CHECKPOINTS))
    # snap[j]: per-row counts of the first j * step events, int64 (J, N + 1).
    snap = np.zeros((n_events // step + 1, n_rows), dtype=np.int64)
    for j in range(1, len(snap)):
        snap[j] = snap[j - 1] + np.bincount(rows_sorted[(j - 1) * step : j * step], minlength=n_rows)

    def counts_before(t: np.ndarray) -> np.ndarray:
        """Per-row counts of the events strictly before each time in ``t`` (Q,), int64 (Q, N + 1)."""
        pos = np.searchsorted(ts_sorted, t, side="left")  # (Q,): events before t
        base = pos // step
        extra = pos - base * step  # events after the checkpoint, < step each
        q = np.repeat(np.arange(len(t)), extra)
        first = np.repeat(base * step, extra)
        offset = np.arange(len(q)) - np.repeat(np.cumsum(extra) - extra, extra)
        tail = np.bincount(q * n_rows + rows_sorted[first + offset], minlength=len(t) * n_rows)
        return snap[base] + tail.reshape(len(t), n_rows)

    def rank(histories: Sequence[History]) -> np.ndarray:
        now = np.array([h.now for h in histories], dtype=np.int64)
        before = counts_before(now)  # (B, N + 1)
        recent = before - counts_before(now - window_ms)  # (B, N + 1): events in [now - window, now)
        # (recent, before) in lexicographic order as one number, exact in float64 (< 2^53) up to ~90M events.
        return (recent * (n_events + 1) + before).astype(np.float64)

    return rank


def itemknn_ranker(
    train: Mapping[str, Sequence[str]],
    items: Sequence[str],
    neighbours: int = ITEMKNN_NEIGHBOURS,
    shrink: float = ITEMKNN_SHRINK,
) -> Ranker:
    """Item-based nearest neighbours (cosine with shrink) on the binary training user-item matrix.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)`` over the sets of training users
    ``U``, ``sim(i, i) = 0``; for each candidate item ``j`` only its ``neighbours`` most similar
    items ``i`` keep their similarity (ties by row). A case's score for ``j`` is the sum of
    ``sim(i, j)`` over the distinct items ``i`` of its history, so items without training data score
    0. Dense numpy: (N + 1)^2 float32 (47 MB for ML-1M's 3.4k items); a catalogue of 100k items
    would need a sparse top-k build instead.

    Args:
        train: ``{user: [item_id, ...]}`` the data the similarities come from.
        items: The item index; training items outside it are ignored.
        neighbours: Neighbours kept per item (``>= N`` keeps all).
        shrink: Added to the cosine's denominator: pairs with little support count less.

    Returns:
        The ranker, float32 scores (B, N + 1).
    """
    row = {item: r for r, item in enumerate(items, start=1)}
    n_rows = len(items) + 1
    users = [sorted({row[i] for i in seq if i in row}) for seq in train.values()]
    user_of = np.repeat(np.arange(len(users)), [len(u) for u in users])
    x = np.zeros((len(users), n_rows), dtype=np.float32)  # (U, N + 1), binary
    x[user_of, np.concatenate(users).astype(np.int64) if users else np.zeros(0, np.int64)] = 1.0
    co = x.T @ x  # (N + 1, N + 1): co-occurrence counts
    norm = np.sqrt(np.diag(co)).astype(np.float32)  # (N + 1,)
    sim = co / (norm[:, None] * norm[None, :] + shrink + 1e-12)
    np.fill_diagonal(sim, 0.0)
    if neighbours < n_rows - 1:
        # Keep, in each column j, its `neighbours` largest entries (the stable order breaks ties by row).
        top = np.argsort(-sim, axis=0, kind="stable")[:neighbours]  # (K, N + 1)
        kept = np.zeros_like(sim)
        cols = np.arange(n_rows)[None, :]
        kept[top, cols] = sim[top, cols]
        sim = kept

    def rank(histories: Sequence[History]) -> np.ndarray:
        h = np.zeros((len(histories), n_rows), dtype=np.float32)  # (B, N + 1): distinct history items
        for b, hist in enumerate(histories):
            h[b, hist.rows] = 1.0
        return h @ sim  # (B, N + 1)

    return rank


def popularity_ranker(train: Mapping[str, Sequence[str]], items: Sequence[str]) -> Ranker:
    """Most-popular baseline: every user gets the training interaction counts as scores."""
    counts = Counter(item for seq in train.values() for item in seq)
    pop = np.array([0.0] + [float(counts[i]) for i in items], dtype=np.float32)  # (N + 1,)
    return lambda histories: np.broadcast_to(pop, (len(histories), pop.shape[0]))
