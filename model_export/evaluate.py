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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.datasets import sort_events
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

DEFAULT_SCENARIO = "default"


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

    def history(self, user: str, t: int, row: Mapping[str, int]) -> History:
        """The history of case ``(user, t)``: the user's events before position ``t``, as item rows."""
        seq, times = self.sequences[user], self.times[user]
        scen = self.scenarios.get(user) or [DEFAULT_SCENARIO] * len(seq)
        keep = [j for j in range(t) if seq[j] in row]
        return History(
            np.array([row[seq[j]] for j in keep], dtype=np.int64),
            np.array([times[j] for j in keep], dtype=np.int64),
            tuple(scen[j] for j in keep),
            times[t],
            scen[t],
        )


def _timelines(events: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, str, str]]]:
    """:func:`~model_export.datasets.build_timelines` with each event's scenario: ``(ts, item, scenario)``."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    for e in sort_events(events):
        scenario = e.get("scenario")
        out.setdefault(str(e["user_id"]), []).append(
            (int(e["ts"]), str(e["item_id"]), str(scenario) if scenario else DEFAULT_SCENARIO)
        )
    return out


def leave_one_out(events: Iterable[Mapping[str, Any]]) -> Split:
    """The leave-one-out split: each user's last item held out (see the module docstring)."""
    lines = _timelines(events)
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
    lines = _timelines(events)
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
    return _split_at(_timelines(events), cutoff_ts)


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
    row = {item: r for r, item in enumerate(items, start=1)}
    hits = ndcg = mrr = 0.0
    for start in range(0, len(split.cases), batch_size):
        batch = split.cases[start : start + batch_size]
        hist = [split.history(u, t, row) for u, t in batch]
        tgt = np.array([row.get(split.sequences[u][t], -1) for u, t in batch])  # (B,); -1: a miss
        scores = np.array(rank(hist), dtype=np.float32)  # (B, N + 1), a copy we may mask
        scores[:, 0] = -np.inf
        for b, h in enumerate(hist):
            scores[b, h.rows] = -np.inf  # seen items are never recommended
        known = tgt > 0
        b_idx = np.nonzero(known)[0]
        t_score = scores[b_idx, tgt[known]][:, None]  # (b, 1)
        cols = np.arange(scores.shape[1])[None, :]
        # 0-based rank as a stable sort by descending score would give it.
        above = (scores[b_idx] > t_score).sum(1)
        ranks = above + ((scores[b_idx] == t_score) & (cols < tgt[known, None])).sum(1)
        in_k = ranks < k
        hits += float(in_k.sum())
        ndcg += float((in_k / np.log2(ranks + 2.0)).sum())
        mrr += float((1.0 / (ranks + 1.0)).sum())
    n = len(split.cases)
    return {
        f"recall@{k}": hits / n,
        f"ndcg@{k}": ndcg / n,
        "mrr": mrr / n,
        "cases": n,
        "users": len({u for u, _ in split.cases}),
    }


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
        left_pad,
        read_item_embeddings,
        read_items,
        verify_artifact,
    )

    contract = verify_artifact(artifact_dir)
    items = [str(i) for i in read_items(artifact_dir, contract)[1:]]
    emb = read_item_embeddings(artifact_dir, contract)  # (N + 1, d)
    sess = ort.InferenceSession(str(Path(artifact_dir) / MODEL_FILE), providers=["CPUExecutionProvider"])
    name_in, name_out = contract.inputs[0].name, contract.outputs[0].name

    def rank(histories: Sequence[History]) -> np.ndarray:
        batch = left_pad([h.rows for h in histories], contract.max_len, contract.padding_id)  # (B, L)
        (user,) = sess.run([name_out], {name_in: batch})  # (B, d)
        return user @ emb.T  # (B, N + 1)

    return rank, items
