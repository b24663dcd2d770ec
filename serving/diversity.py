"""Diversity of a recommendation list by maximal marginal relevance (MMR), and its online measure.

A top 10 by score alone often holds near-duplicates: the model's embedding puts similar items close, so
whatever the user is scored close to comes in clusters. MMR (Carbonell & Goldstein, 1998) re-ranks a pool
of the best-scored candidates greedily: each step takes the candidate that is relevant *and* unlike the
items already taken,

    argmax_i  (1 - diversity) * relevance_i - diversity * max_{j chosen} cos(v_i, v_j)

``relevance`` is the candidates' scores min-max normalised over the pool, so a knob value means the same
for any model's score scale (dot products of one version are not on another's scale). ``diversity = 0`` is
the plain top k; 1 ignores the scores after the first pick. The knob's default is chosen on validation
data (``bench/quality_diversity.py``, docs/quality.md "Diversity").

This runs in the streaming job once per user scored, so it is plain vectorised numpy: O(k * n * d) for a
list of k from n candidates of dimension d (a list of 10 from 50 at d = 64 takes tens of microseconds;
the bench measures it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["intra_list_distance", "mmr_order"]


# Rows shorter than this are scaled by it instead of their length: a zero row stays zero (no division by 0).
_TINY = 1e-12


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float64; a zero row stays zero (its cosine with anything is then 0)."""
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", v, v))
    return v / np.maximum(norms, _TINY)[:, None]


def mmr_order(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Indices of ``k`` candidates in MMR order: the re-ranked list, best first.

    Args:
        scores: The candidates' scores, (n,), finite, in any order (the scorer gives them best first).
        vectors: The candidates' item rows, (n, d) (``Scorer.item_vectors``); cosine similarity is taken
            between them, so their scale does not matter. A zero row (an item without a row) is similar
            to nothing.
        k: Items to return (fewer when there are fewer candidates).
        diversity: 0 <= diversity <= 1: the weight of unlikeness against relevance.

    Returns:
        Indices into ``scores``, ``min(k, n)`` of them. With ``diversity == 0`` exactly the top k by score,
        equal scores in the given order (a stable sort), so a pool from the scorer comes back as it was.

    Raises:
        ValueError: ``diversity`` outside [0, 1], a non-finite score, or shapes that do not match.
    """
    if not 0.0 <= diversity <= 1.0:  # also refuses NaN
        msg = f"diversity must be within [0, 1], got {diversity!r}"
        raise ValueError(msg)
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if s.ndim != 1 or np.ndim(vectors) != 2 or np.shape(vectors)[0] != n:
        msg = f"scores (n,) and vectors (n, d) do not match: {s.shape} and {np.shape(vectors)}"
        raise ValueError(msg)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (min-max normalisation needs a finite range)")
    if min(k, n) <= 0:
        return []
    # Candidates best first, equal scores in the given order: every argmax then breaks ties by score, so
    # diversity 0 is the stable top k, and at diversity 1 the first pick is still the best-scored item.
    order = np.argsort(-s, kind="stable")
    if diversity == 0.0:
        return [int(i) for i in order[: min(k, n)]]
    picks = mmr_batch(s[order][None, :], np.asarray(vectors)[order][None, :, :], k, np.array([diversity]))[0]
    return [int(order[p]) for p in picks if p >= 0]


def mmr_batch(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: np.ndarray) -> np.ndarray:
    """MMR for a batch of lists at once: one numpy pass per pick for every list (the stream's chunks).

    Args:
        scores: (B, n) each list's candidates, best first; ``-inf`` pads a list with fewer than n.
        vectors: (B, n, d) their item rows (zero rows are similar to nothing).
        k: Picks per list.
        diversity: (B,) each list's knob in [0, 1] (0: the candidates' order).

    Returns:
        (B, min(k, n)) indices into each list's candidates in pick order, -1 once a list has no candidate
        left. Ties go to the earlier candidate, so candidates given best first give the stable top k at 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    b, n = s.shape
    k = min(k, n)
    picks = np.full((b, k), -1, dtype=np.int64)
    if b == 0 or k <= 0:
        return picks
    valid = np.isfinite(s)
    top = np.where(valid, s, -np.inf).max(axis=1, initial=-np.inf)
    low = np.where(valid, s, np.inf).min(axis=1, initial=np.inf)
    span = np.where(valid.any(axis=1), top - low, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relevance = np.where(valid & (span[:, None] > 0), (s - low[:, None]) / span[:, None], 0.0)
    v = np.asarray(vectors, dtype=np.float64)
    unit = v / np.maximum(np.sqrt(np.einsum("bnd,bnd->bn", v, v)), _TINY)[:, :, None]
    div = np.asarray(diversity, dtype=np.float64).reshape(b, 1)
    gain = (1.0 - div) * relevance
    max_sim = np.zeros((b, n))
    taken = ~valid
    rows = np.arange(b)
    for t in range(k):
        objective = np.where(taken, -np.inf, gain - div * max_sim)
        pick = objective.argmax(axis=1)
        ok = np.isfinite(objective[rows, pick])
        picks[ok, t] = pick[ok]
        taken[rows[ok], pick[ok]] = True
        np.maximum(max_sim, np.einsum("bnd,bd->bn", unit, unit[rows, pick]), out=max_sim)
    return picks


def intra_list_distance(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cosine) of a list's item rows, (m, d): how unlike its items are.

    The online counterpart of the offline genre measure (``model_export.evaluation.metrics``): the stream
    has the item rows at hand, not a curated taxonomy. 0 for a list of fewer than two items; a zero row is
    at distance 1 from everything.
    """
    unit = _unit_rows(np.asarray(vectors))
    m = unit.shape[0]
    if m < 2:
        return 0.0
    sims = unit @ unit.T
    upper = np.triu_indices(m, k=1)
    return float(np.mean(1.0 - sims[upper]))
