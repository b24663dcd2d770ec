"""The baselines of the quality harness on tiny hand-made data, with the rankings worked out by hand."""

import math

import numpy as np
import pytest

from model_export.data.splits import History
from model_export.evaluation import baselines
from model_export.evaluation.baselines import DAY_MS, itemknn_ranker, recent_popularity_ranker

W = 7 * DAY_MS
NOW = 100 * DAY_MS


def hist(rows: list[int], now: int = NOW) -> History:
    return History(np.array(rows, dtype=np.int64), np.zeros(len(rows), dtype=np.int64), ("web",) * len(rows), now)


def order(scores: np.ndarray, items: list[str]) -> list[str]:
    """Items best first, ties by row (the evaluation's stable order); row 0 left out."""
    rows = np.argsort(-scores[1:], kind="stable")
    return [items[r] for r in rows]


def stream(events: list[tuple[str, int]]) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """One user per event: the ranker must count events whoever made them."""
    seqs = {f"u{n}": [item] for n, (item, _) in enumerate(events)}
    times = {f"u{n}": [ts] for n, (_, ts) in enumerate(events)}
    return seqs, times


RECENT_ITEMS = ["a", "b", "c", "x", "y", "z"]
RECENT_EVENTS = (
    [("z", 0)] * 3  # old favourite: nothing in the window, 3 before now
    + [("x", NOW - W - 1)] * 2  # 1 ms too old for the window
    + [("y", NOW - W)]  # exactly at the window's start: counts
    + [("b", NOW - 5 * DAY_MS), ("b", NOW - 4 * DAY_MS)]
    + [("c", NOW - 3 * DAY_MS)]
    + [("c", NOW)] * 2  # at the prediction time itself: not before it
    + [("a", NOW + 1)] * 5  # the future
)


def test_recent_popularity_counts_the_window_strictly_before_now_with_all_time_ties() -> None:
    seqs, times = stream(RECENT_EVENTS)
    rank = recent_popularity_ranker(seqs, times, RECENT_ITEMS)
    scores = rank([hist([]), hist([], now=50 * DAY_MS)])
    assert scores.shape == (2, 7)
    # window counts b 2, c 1, y 1, others 0; ties by count before now (z 3 > x 2 > a 0), then by row (c < y)
    assert order(scores[0], RECENT_ITEMS) == ["b", "c", "y", "z", "x", "a"]
    assert scores[0, 3] == scores[0, 5]  # c and y tie exactly: (1 in the window, 1 before now)
    # at day 50 only z's events are before now (none in its window): z, then the rest by row
    assert order(scores[1], RECENT_ITEMS) == ["z", "a", "b", "c", "x", "y"]


def test_recent_popularity_matches_a_direct_count_beyond_the_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "_CHECKPOINTS", 7)  # ~430 events per checkpoint: most counts add a tail
    rng = np.random.default_rng(3)
    items = [f"i{j:02d}" for j in range(40)]
    ev_items = rng.integers(0, 40, 3000)
    ev_ts = rng.integers(0, 60 * DAY_MS // 1000, 3000) * 1000  # second resolution: many equal times
    seqs = {f"u{n}": [items[j]] for n, j in enumerate(ev_items)}
    times = {f"u{n}": [int(t)] for n, t in enumerate(ev_ts)}
    rank = recent_popularity_ranker(seqs, times, items + ["never"])
    nows = [int(t) for t in rng.choice(ev_ts, 25)] + [0, 61 * DAY_MS]
    scores = rank([hist([], now) for now in nows])
    for b, now in enumerate(nows):
        window = [int(((ev_items == j) & (ev_ts >= now - W) & (ev_ts < now)).sum()) for j in range(40)] + [0]
        before = [int(((ev_items == j) & (ev_ts < now)).sum()) for j in range(40)] + [0]
        expected = sorted(range(41), key=lambda r: (-window[r], -before[r], r))
        assert list(np.argsort(-scores[b, 1:], kind="stable")) == expected


# u1: a b | u2: a b c | u3: b c | u4: c d   ->  |U_a| 2, |U_b| 3, |U_c| 3, |U_d| 1
KNN_TRAIN = {"u1": ["a", "b"], "u2": ["a", "b", "c", "a"], "u3": ["b", "c"], "u4": ["c", "d"]}
KNN_ITEMS = ["a", "b", "c", "d"]


def cos(co: int, n_i: int, n_j: int, shrink: float) -> float:
    return co / (math.sqrt(n_i * n_j) + shrink)


def test_itemknn_scores_are_sums_of_shrunk_cosines_over_the_history() -> None:
    rank = itemknn_ranker(KNN_TRAIN, KNN_ITEMS, neighbours=10, shrink=1.0)
    s_ab, s_ac, s_bc, s_cd = cos(2, 2, 3, 1), cos(1, 2, 3, 1), cos(2, 3, 3, 1), cos(1, 3, 1, 1)
    scores = rank([hist([1]), hist([3]), hist([1, 4])])
    np.testing.assert_allclose(scores[0], [0, 0, s_ab, s_ac, 0], rtol=1e-6)
    np.testing.assert_allclose(scores[1], [0, s_ac, s_bc, 0, s_cd], rtol=1e-6)
    np.testing.assert_allclose(scores[2], [0, 0, s_ab, s_ac + s_cd, 0], rtol=1e-6)
    assert order(scores[1], KNN_ITEMS)[:3] == ["b", "d", "a"]


def test_itemknn_keeps_only_each_items_top_neighbours() -> None:
    # With one neighbour per item: a keeps b, b keeps a, c keeps b (0.67 > d 0.58 > a 0.41), d keeps c.
    rank = itemknn_ranker(KNN_TRAIN, KNN_ITEMS, neighbours=1, shrink=0.0)
    scores = rank([hist([3]), hist([1, 4])])
    np.testing.assert_allclose(scores[0], [0, 0, 0, 0, cos(1, 3, 1, 0)], rtol=1e-6)  # only d links back to c
    assert order(scores[0], KNN_ITEMS)[0] == "d"  # with every neighbour it would be b
    np.testing.assert_allclose(scores[1], [0, 0, cos(2, 2, 3, 0), 0, 0], rtol=1e-6)  # c keeps b, not a or d


def test_itemknn_gives_items_without_training_data_nothing() -> None:
    rank = itemknn_ranker(KNN_TRAIN, [*KNN_ITEMS, "new"])
    scores = rank([hist([1, 2, 3, 4, 5])])  # a cold item in the history adds nothing either
    assert scores[0, 5] == 0.0
    np.testing.assert_allclose(scores[0, :5], rank([hist([1, 2, 3, 4])])[0, :5])
