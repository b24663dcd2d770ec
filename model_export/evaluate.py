"""Offline evaluation: reproducible splits and full-ranking metrics for any scorer of item rows.

Protocols (both rank ALL items of the training item index, the items already in the user's
history excluded, one target per test case, so Recall@k = HR@k):

* ``loo`` (leave-one-out): each user's last item is the target, everything before is history
  and training data. Users with a single event only train.
* ``time`` (global time split, replayed): events before the cutoff (the ``1 - test_fraction``
  quantile of event times) are training data. Every later event is then a test case, in time
  order, as the stream would see it: the history is all of that user's earlier events (training
  or test), the target the event's item. Cases without history, or whose item the user already
  had, are skipped. A target the training data never saw cannot be ranked and counts as a miss.

Ties in score rank by item row (as a stable sort would), so metrics are deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from model_export.datasets import DEFAULT_SCENARIO, build_scenario_timelines
from model_export.errors import NotEnoughDataError

PROTOCOLS = ("loo", "time")


@dataclass(frozen=True)
class History:
    """What a ranker knows of one user at prediction time, oldest first, aligned.

    Attributes:
        rows: Item rows (1..N) of the items the index knows; unknown items are left out.
        ts: Their event times (epoch ms), int64.
        scenarios: Their ``scenario`` (``"default"`` when the event had none).
        now: Time of the prediction (the target event's ts), epoch ms.
        scenario: Scenario of the prediction (the target event's).
    """

    rows: np.ndarray
    ts: np.ndarray
    scenarios: tuple[str, ...]
    now: int
    scenario: str = "default"


# A ranker maps a batch of histories to scores (B, N + 1) over the rows of its item index.
Ranker = Callable[[Sequence[History]], np.ndarray]


@dataclass(frozen=True)
class Split:
    """Training sequences and held-out test cases of one protocol.

    Attributes:
        protocol: ``"loo"`` or ``"time"``.
        train: ``{user_id: [item_id, ...]}`` oldest first: everything a model may learn from.
        sequences: ``{user_id: [item_id, ...]}`` every known item, training and held out.
        times: ``{user_id: [ts, ...]}`` aligned with ``sequences`` (epoch ms).
        scenarios: ``{user_id: [scenario, ...]}`` aligned with ``sequences``.
        cases: ``(user_id, t)``: predict ``sequences[user][t]`` from ``sequences[user][:t]``.
        min_ts: Earliest training event time (epoch ms).
        max_ts: Latest training event time (epoch ms).
        cutoff_ts: Events at or after this time are held out (``time`` only).
    """

    protocol: str
    train: dict[str, list[str]]
    sequences: dict[str, list[str]]
    cases: list[tuple[str, int]]
    min_ts: int
    max_ts: int
    cutoff_ts: int | None = None
    times: dict[str, list[int]] = field(default_factory=dict)
    scenarios: dict[str, list[str]] = field(default_factory=dict)


def leave_one_out(events: Iterable[Mapping[str, Any]]) -> Split:
    """The leave-one-out split: each user's last item held out (see the module docstring)."""
    lines = build_scenario_timelines(events)
    sequences = {user: [item for _, item, _ in line] for user, line in lines.items()}
    train = {user: seq[:-1] if len(seq) >= 2 else seq for user, seq in sequences.items()}
    cases = [(user, len(seq) - 1) for user, seq in sequences.items() if len(seq) >= 2]
    if not cases:
        raise NotEnoughDataError("no user has two events, so leave-one-out has nothing to hold out")
    times = [line[j][0] for user, line in lines.items() for j in range(len(train[user]))]
    return Split("loo", train, sequences, cases, min(times), max(times), None, *_aligned(lines))


def _aligned(lines: Mapping[str, list[tuple[int, str, str]]]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    times = {user: [ts for ts, _, _ in line] for user, line in lines.items()}
    scenarios = {user: [sc for _, _, sc in line] for user, line in lines.items()}
    return times, scenarios


def time_split(events: Iterable[Mapping[str, Any]], test_fraction: float = 0.2) -> Split:
    """The global time split at the ``1 - test_fraction`` quantile of event times (module docstring)."""
    lines = build_scenario_timelines(events)
    all_ts = sorted(ts for line in lines.values() for ts, _, _ in line)
    if len(all_ts) < 2:
        what = f"{len(all_ts)} events cannot be split in time"
        raise NotEnoughDataError(what)
    return _split_at(lines, all_ts[min(int(len(all_ts) * (1.0 - test_fraction)), len(all_ts) - 1)])


def window_split(events: Iterable[Mapping[str, Any]], cutoff_ts: int) -> Split:
    """The ``time`` protocol with a given cutoff: events at or after ``cutoff_ts`` are the held-out window.

    The periodic trainer uses it to measure the candidate and the serving model on the same
    most recent events (module docstring: every later event is a case, in time order).

    Raises:
        NotEnoughDataError: nothing before the cutoff, or no window event has a history before it.
    """
    return _split_at(build_scenario_timelines(events), cutoff_ts)


def _split_at(lines: Mapping[str, list[tuple[int, str, str]]], cutoff: int) -> Split:
    train: dict[str, list[str]] = {}
    sequences: dict[str, list[str]] = {}
    timed_cases: list[tuple[int, str, int]] = []
    for user, line in lines.items():
        seq = sequences[user] = [item for _, item, _ in line]
        before = [item for ts, item, _ in line if ts < cutoff]
        if before:
            train[user] = before
        seen = set(before)
        for t in range(len(before), len(seq)):
            if t > 0 and seq[t] not in seen:
                timed_cases.append((line[t][0], user, t))
            seen.add(seq[t])
    train_ts = [ts for line in lines.values() for ts, _, _ in line if ts < cutoff]
    if not timed_cases or not train_ts:
        raise NotEnoughDataError("no event after the time cutoff has a history before it")
    # Replay order: by event time, ties by user's order then position (the sorts are stable).
    cases = [(user, t) for _, user, t in sorted(timed_cases, key=lambda c: c[0])]
    return Split("time", train, sequences, cases, min(train_ts), max(train_ts), cutoff, *_aligned(lines))


def make_split(events: Iterable[Mapping[str, Any]], protocol: str, test_fraction: float = 0.2) -> Split:
    """The split of ``protocol`` (one of :data:`PROTOCOLS`)."""
    if protocol == "loo":
        return leave_one_out(events)
    if protocol == "time":
        return time_split(events, test_fraction)
    msg = f"unknown protocol {protocol!r}; use one of {PROTOCOLS}"
    raise ValueError(msg)


def item_index(train: Mapping[str, Sequence[str]]) -> list[str]:
    """The item index of a training set: item ids sorted, item ``i`` of the list is row ``i + 1``."""
    return sorted({item for seq in train.values() for item in seq})


def popularity_ranker(train: Mapping[str, Sequence[str]], items: Sequence[str]) -> Ranker:
    """Most-popular baseline: every user gets the training interaction counts as scores."""
    counts = Counter(item for seq in train.values() for item in seq)
    pop = np.array([0.0] + [float(counts[i]) for i in items], dtype=np.float32)  # (N + 1,)
    return lambda histories: np.broadcast_to(pop, (len(histories), pop.shape[0]))


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
    rank: Ranker, split: Split, items: Sequence[str], k: int = 10, batch_size: int = 512
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
    rank: Ranker, split: Split, items: Sequence[str], k: int = 10, batch_size: int = 512
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
    k: int = 10,
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


def pick_cold_items(items: Sequence[str], fraction: float, seed: int = 0) -> frozenset[str]:
    """A seeded random ``fraction`` of an item index, to hide from training (the cold-start measurement).

    The pick depends on the set of items and the seed only (the ids are sorted first).

    Raises:
        ValueError: ``fraction`` is not in [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        msg = f"cold fraction must be in [0, 1), got {fraction}"
        raise ValueError(msg)
    pool = sorted(set(items))
    n = round(len(pool) * fraction)
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return frozenset(pool[i] for i in picked)


def hide_items(split: Split, hidden: Collection[str]) -> Split:
    """The split with every event of ``hidden`` items removed from its training data only.

    Training sequences skip those items (a user left with none drops out of ``train``); the full
    sequences, times, scenarios and test cases are unchanged, so the same cases are measured and
    a case's history still holds the hidden items the user met, as the stream would.
    ``min_ts``/``max_ts`` keep describing the unfiltered training window.
    """
    hidden = frozenset(hidden)
    train = {u: kept for u, seq in split.train.items() if (kept := [i for i in seq if i not in hidden])}
    return replace(split, train=train)


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

    from model_export.artifact import (
        MODEL_FILE,
        read_item_embeddings,
        read_items,
        scenario_vocab,
        tower_inputs,
        verify_artifact,
    )

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
