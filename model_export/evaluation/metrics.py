"""Full-ranking metrics of any scorer of item rows over a split's test cases.

Every case ranks ALL items of the training item index, the items already in the user's history excluded, one
target per case (so Recall@k = HR@k). Ties in score rank by item row (as a stable sort would), so metrics are
deterministic. A target the training data never saw cannot be ranked and counts as a miss, as does a target
whose score is NaN or infinite.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.splits import History, Ranker, Split
from streamrec.config import CUTOFF
from streamrec.events import DEFAULT_SCENARIO


class _Histories:
    """Every case's :class:`History` as slices of per-user arrays built once.

    Building each case's history from the user's whole sequence is quadratic in a user's length (90 s
    of the 200k-case ``time`` split of ML-1M went there): here each user's known rows, times and
    scenarios are built once and a case takes a prefix of them.
    """

    def __init__(self, split: Split, row: Mapping[str, int]) -> None:
        self.split, self.row = split, row
        self._users: dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]] = {}

    def __call__(self, user: str, t: int) -> History:
        cached = self._users.get(user)
        if cached is None:
            seq, times = self.split.sequences[user], self.split.times[user]
            scen = self.split.scenarios.get(user) or [DEFAULT_SCENARIO] * len(seq)
            rows = np.array([self.row.get(i, 0) for i in seq], dtype=np.int64)
            known = rows > 0
            # known_before[t]: how many known items come before position t.
            known_before = np.concatenate([[0], np.cumsum(known)])
            cached = (
                rows[known],
                np.asarray(times, dtype=np.int64)[known],
                tuple(sc for sc, k in zip(scen, known, strict=True) if k),
                known_before,
            )
            self._users[user] = cached
        rows_k, ts_k, scen_k, before = cached
        n = int(before[t])
        scenarios = self.split.scenarios.get(user)
        now = self.split.times[user][t]
        return History(rows_k[:n], ts_k[:n], scen_k[:n], now, scenarios[t] if scenarios else DEFAULT_SCENARIO)


@dataclass(frozen=True)
class CaseRanks:
    """Where each test case's target landed in its ranking, and which items made any top-k.

    Attributes:
        ranks: 0-based rank of each case's target among the unseen items, int64 (C,), in
            ``split.cases`` order; -1 where the item index does not know the target (a miss).
        top_k: Whether each row (N + 1,) was in at least one case's top-k (row 0 never is).
        k: The cut-off of ``top_k``.
    """

    ranks: np.ndarray
    top_k: np.ndarray
    k: int


def _in_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of each case's top-k, bool (B, N + 1): descending score, ties by row (a stable sort), -inf never."""
    n = scores.shape[1]
    if k >= n:
        return np.isfinite(scores)
    kth = np.partition(scores, n - k, axis=1)[:, n - k : n - k + 1]  # (B, 1): the k-th best score
    greater = scores > kth
    tied = scores == kth
    room = k - greater.sum(1)  # (B,): places left for the tied rows, lowest row first
    over = np.nonzero(tied.sum(1) > room)[0]  # cases with more ties than places (cumsum only there: it is slow)
    tied[over] &= np.cumsum(tied[over], axis=1) <= room[over, None]
    return (greater | tied) & (scores > -np.inf)


def rank_cases(
    rank: Ranker, split: Split, items: Sequence[str], k: int = CUTOFF, batch_size: int = 512
) -> CaseRanks:
    """Score every test case with full ranking and locate its target (the core of :func:`evaluate`).

    Args:
        rank: Maps histories to scores (B, N + 1) over the rows of ``items``.
        split: The held-out data.
        items: Item index: ``items[i]`` is row ``i + 1``; row 0 is padding and never ranked.
        k: Cut-off of :attr:`CaseRanks.top_k`.
        batch_size: Cases scored per call.

    Returns:
        The target ranks and the rows that reached a top-k.
    """
    row = {item: r for r, item in enumerate(items, start=1)}
    history = _Histories(split, row)
    ranks = np.full(len(split.cases), -1, dtype=np.int64)
    top_k = np.zeros(len(items) + 1, dtype=bool)
    for start in range(0, len(split.cases), batch_size):
        batch = split.cases[start : start + batch_size]
        hist = [history(u, t) for u, t in batch]
        tgt = np.array([row.get(split.sequences[u][t], -1) for u, t in batch])  # (B,); -1: a miss
        raw = np.asarray(rank(hist))
        # (B, N + 1), a copy we may mask: float32, or float64 for rankers that need its exact integers.
        scores = np.array(raw, dtype=np.float64 if raw.dtype == np.float64 else np.float32)
        known = tgt > 0
        # A target whose score is not a finite number is a miss (a NaN would otherwise rank first); any other
        # such score ranks last.
        tgt[known] = np.where(np.isfinite(scores[np.nonzero(known)[0], tgt[known]]), tgt[known], -1)
        scores[~np.isfinite(scores)] = -np.inf
        scores[:, 0] = -np.inf
        for b, h in enumerate(hist):
            scores[b, h.rows] = -np.inf  # seen items are never recommended
        top_k |= _in_top_k(scores, k).any(0)
        known = tgt > 0
        b_idx = np.nonzero(known)[0]
        t_score = scores[b_idx, tgt[known]][:, None]  # (b, 1)
        cols = np.arange(scores.shape[1])[None, :]
        # 0-based rank as a stable sort by descending score would give it.
        above = (scores[b_idx] > t_score).sum(1)
        ranks[start + b_idx] = above + ((scores[b_idx] == t_score) & (cols < tgt[known, None])).sum(1)
    return CaseRanks(ranks, top_k, k)


def _ranking_metrics(ranks: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k, NDCG@k and MRR of target ranks (-1: a miss), means over the cases (0 with no case)."""
    n = max(len(ranks), 1)
    known = ranks[ranks >= 0]
    in_k = known[known < k]
    return {
        f"recall@{k}": float(len(in_k)) / n,
        f"ndcg@{k}": float((1.0 / np.log2(in_k + 2.0)).sum()) / n,
        "mrr": float((1.0 / (known + 1.0)).sum()) / n,
    }


def evaluate(
    rank: Ranker, split: Split, items: Sequence[str], k: int = CUTOFF, batch_size: int = 512
) -> dict[str, float]:
    """Full-ranking metrics of a ranker on a split's held-out targets.

    Args:
        rank: Maps histories (item rows, oldest first) to scores (B, N + 1) over the rows of ``items``.
        split: The held-out data.
        items: Item index: ``items[i]`` is row ``i + 1``; row 0 is padding and never ranked.
        k: Cut-off of Recall and NDCG.
        batch_size: Users scored per call.

    Returns:
        ``{"recall@k", "ndcg@k", "mrr", "cases", "users"}``, means over the test cases (MRR over
        the full ranking).
    """
    ranked = rank_cases(rank, split, items, k, batch_size)
    return {
        **_ranking_metrics(ranked.ranks, k),
        "cases": len(split.cases),
        "users": len({u for u, _ in split.cases}),
    }


def evaluate_quality(
    rank: Ranker,
    split: Split,
    items: Sequence[str],
    k: int = CUTOFF,
    batch_size: int = 512,
    cold: Collection[str] = (),
) -> dict[str, Any]:
    """:func:`evaluate` plus catalogue coverage and, given cold items, recall split by target kind.

    Args:
        rank: As for :func:`evaluate`.
        split: As for :func:`evaluate`.
        items: As for :func:`evaluate`; coverage is a share of its N items.
        k: Cut-off of Recall, NDCG and coverage.
        batch_size: Cases scored per call.
        cold: Items whose interactions were hidden from the ranker's training (see
            :func:`hide_items`): the cases whose target is one of them are measured apart.

    Returns:
        :func:`quality_metrics` of the ranking.
    """
    return quality_metrics(rank_cases(rank, split, items, k, batch_size), split, cold)


# Buckets of a case's history length (the user's earlier events): new and rare users apart from the rest.
HISTORY_BUCKETS: tuple[tuple[str, int, int], ...] = (("1", 1, 1), ("2-5", 2, 5), ("6-20", 6, 20), (">20", 21, 1 << 62))


def by_history(ranked: CaseRanks, split: Split) -> dict[str, dict[str, float | int]]:
    """Recall@k and NDCG@k by the length of each case's history (:data:`HISTORY_BUCKETS`), with case counts."""
    lengths = np.array([t for _, t in split.cases], dtype=np.int64)
    out: dict[str, dict[str, float | int]] = {}
    for name, lo, hi in HISTORY_BUCKETS:
        mask = (lengths >= lo) & (lengths <= hi)
        m = _ranking_metrics(ranked.ranks[mask], ranked.k)
        out[name] = {"cases": int(mask.sum()), f"recall@{ranked.k}": m[f"recall@{ranked.k}"],
                     f"ndcg@{ranked.k}": m[f"ndcg@{ranked.k}"]}
    return out


def case_gains(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-case Recall@k (hit) and NDCG@k of target ranks (-1: a miss), float64 (C,) each: for paired tests."""
    hit = (ranks >= 0) & (ranks < k)
    ndcg = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    return {f"recall@{k}": hit.astype(np.float64), f"ndcg@{k}": ndcg}


def quality_metrics(ranked: CaseRanks, split: Split, cold: Collection[str] = ()) -> dict[str, Any]:
    """Metrics of a ranking of ``split``'s cases (:func:`rank_cases`), over all cases and by target kind.

    Returns:
        ``{"recall@k", "ndcg@k", "mrr", "coverage@k", "cases", "users"}``; ``coverage@k`` is the
        share of the N ranked items that are in at least one case's top-k. With ``cold``, also
        ``cold_cases``, ``cold_recall@k`` and ``cold_mrr`` (over the cases whose target is cold;
        None without any), ``warm_recall@k`` and ``warm_mrr`` (over the other cases of the same ranking).
    """
    k = ranked.k
    out: dict[str, Any] = {
        **_ranking_metrics(ranked.ranks, k),
        f"coverage@{k}": float(ranked.top_k.sum()) / max(len(ranked.top_k) - 1, 1),
        "cases": len(split.cases),
        "users": len({u for u, _ in split.cases}),
    }
    if cold:
        is_cold = np.array([split.sequences[u][t] in cold for u, t in split.cases], dtype=bool)
        out["cold_cases"] = int(is_cold.sum())
        cold_m = _ranking_metrics(ranked.ranks[is_cold], k) if is_cold.any() else None
        warm_m = _ranking_metrics(ranked.ranks[~is_cold], k)
        out[f"cold_recall@{k}"] = cold_m[f"recall@{k}"] if cold_m else None
        out[f"warm_recall@{k}"] = warm_m[f"recall@{k}"]
        # MRR over the full ranking still moves when no cold target reaches a top-k yet.
        out["cold_mrr"] = cold_m["mrr"] if cold_m else None
        out["warm_mrr"] = warm_m["mrr"]
    return out


def artifact_ranker(artifact_dir: Path | str) -> tuple[Ranker, list[str]]:
    """A ranker that scores through an exported artifact (ONNX Runtime on CPU), as the stream would.

    Args:
        artifact_dir: An artifact folder; it is verified first (checksums, contract, graph).

    Returns:
        The ranker (scores (B, N + 1) over the artifact's own rows) and its item index
        (``items[i]`` is row ``i + 1``), to pass to :func:`evaluate` together: targets the
        artifact does not know count as misses.

    Raises:
        model_export.errors.ArtifactError: the artifact fails verification.
    """
    import onnxruntime as ort

    from model_export.artifact.contract import MODEL_FILE, read_item_embeddings, read_items, verify_artifact
    from model_export.features import scenario_vocab, tower_inputs

    contract = verify_artifact(artifact_dir)
    items = [str(i) for i in read_items(artifact_dir, contract)[1:]]
    emb = read_item_embeddings(artifact_dir, contract)  # (N + 1, d)
    sess = ort.InferenceSession(str(Path(artifact_dir) / MODEL_FILE), providers=["CPUExecutionProvider"])
    names, name_out = [t.name for t in contract.inputs], contract.outputs[0].name
    vocab = scenario_vocab(contract.scenarios)

    def rank(histories: Sequence[History]) -> np.ndarray:
        feed = tower_inputs(
            [h.rows for h in histories],
            [h.ts for h in histories],
            [h.scenarios for h in histories],
            contract.max_len,
            vocab,
            names,
        )
        (user,) = sess.run([name_out], feed)  # (B, d)
        return user @ emb.T  # (B, N + 1)

    return rank, items


# Beyond accuracy: how varied and how unexpected a recommended list is. They are measured on what the
# catalogue says of an item (its genres) and how often it was interacted with in training, never on a
# model's own embedding: a re-ranker that spreads a list out in embedding space must show it on a measure
# that embedding did not define.


def genre_distance(a: Collection[str], b: Collection[str]) -> float:
    """1 - Jaccard similarity of two items' genre sets; two items without any genre are at distance 0.

    Two genre-less items cannot be told apart by genre, so they count as alike (the measure never rewards
    a list for holding items the catalogue says nothing about).
    """
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return 1.0 - len(sa & sb) / union if union else 0.0


def intra_list_diversity(items: Sequence[str], genres: Mapping[str, Collection[str]]) -> float | None:
    """Mean pairwise :func:`genre_distance` of one list's items (None for fewer than two items).

    Items ``genres`` does not know have no genre.
    """
    sets = [frozenset(genres.get(i, ())) for i in items]
    pairs = [genre_distance(sets[x], sets[y]) for x in range(len(sets)) for y in range(x + 1, len(sets))]
    return float(np.mean(pairs)) if pairs else None


def category_coverage(items: Sequence[str], genres: Mapping[str, Collection[str]], n_genres: int) -> float:
    """Distinct genres of one list's items over the ``n_genres`` distinct genres of the catalogue."""
    found = {g for i in items for g in genres.get(i, ())}
    return len(found) / n_genres if n_genres > 0 else 0.0


def interaction_counts(train: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """How often each item occurs in the training sequences: the popularity novelty is measured against."""
    counts: dict[str, int] = {}
    for seq in train.values():
        for item in seq:
            counts[item] = counts.get(item, 0) + 1
    return counts


def novelty(items: Sequence[str], counts: Mapping[str, int]) -> float | None:
    """Mean self-information, -log2(item's share of the training interactions), of one list (None if empty).

    A rarely interacted item is an unexpected one. An item without training interactions counts as
    interacted with once, so its novelty is finite: the largest any item gets.
    """
    total = sum(counts.values())
    if not items or total <= 0:
        return None
    return float(np.mean([-np.log2(max(counts.get(i, 0), 1) / total) for i in items]))


def beyond_accuracy(
    lists: Sequence[Sequence[str]], genres: Mapping[str, Collection[str]], n_genres: int, counts: Mapping[str, int]
) -> dict[str, float | None]:
    """Means over lists of :func:`intra_list_diversity`, :func:`category_coverage` and :func:`novelty`.

    Lists where a measure is undefined (too short) are left out of its mean; None when none is defined.

    Returns:
        ``{"ild_genres", "category_coverage", "novelty"}``.
    """

    def mean(values: Sequence[float | None]) -> float | None:
        defined = [v for v in values if v is not None]
        return float(np.mean(defined)) if defined else None

    return {
        "ild_genres": mean([intra_list_diversity(x, genres) for x in lists]),
        "category_coverage": mean([category_coverage(x, genres, n_genres) for x in lists]),
        "novelty": mean([novelty(x, counts) for x in lists]),
    }
