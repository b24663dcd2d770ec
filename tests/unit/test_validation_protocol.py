"""The harness's validation protocol: holdouts that never leak, tie orders, NaN scores, intervals and paired tests."""

import numpy as np
import pytest

from model_export.data.splits import holdout, loo_holdout, time_holdout
from model_export.evaluation import harness
from model_export.evaluation.harness import HarnessConfig, order_ties, paired_test, seed_interval, user_bootstrap
from model_export.evaluation.metrics import by_history, rank_cases
from model_export.model import ModelConfig
from model_export.train import TrainConfig, train


def events_of(seqs: dict[str, list[str]], step: int = 1000) -> list[dict]:
    """Each user's items in order, users interleaved in time."""
    return [
        {"user_id": u, "item_id": item, "type": "click", "ts": step * (t * len(seqs) + n)}
        for n, (u, seq) in enumerate(seqs.items())
        for t, item in enumerate(seq)
    ]


def test_loo_validates_on_the_second_to_last_item_and_tests_on_the_last() -> None:
    ho = loo_holdout(events_of({"u1": ["a", "b", "c", "d"], "u2": ["b", "c"], "u3": ["e"]}))
    assert ho.train == {"u1": ["a", "b"], "u2": ["b"], "u3": ["e"]}
    assert ho.validation.cases == [("u1", 2)] and ho.validation.sequences["u1"] == ["a", "b", "c"]
    assert all("d" not in seq for seq in ho.validation.sequences.values())  # no test item in validation
    assert ho.test.cases == [("u1", 3), ("u2", 1)] and ho.test.train == ho.train
    assert ho.test.sequences["u1"] == ["a", "b", "c", "d"]  # the test history holds the validation item
    assert ho.test.max_ts == ho.validation.max_ts < ho.validation.times["u1"][2]


def test_the_time_split_filters_and_indexes_from_its_training_period_alone() -> None:
    # 10 users rate x early; y is first rated in the test period, by everyone: a future 5-core would keep it.
    early = {f"u{n}": ["x", f"a{n % 2}", f"b{n % 2}", f"c{n % 2}", "y"] for n in range(10)}
    events = events_of(early)
    ho = time_holdout(events, test_fraction=0.2, validation_fraction=0.2, core=3)
    trained = {i for seq in ho.train.values() for i in seq}
    assert "y" not in trained and trained <= {"x", "a0", "a1", "b0", "b1", "c0", "c1"}
    test_cut = ho.test.cutoff_ts
    assert test_cut is not None and ho.validation.cutoff_ts is not None and ho.validation.cutoff_ts < test_cut
    # validation never holds a test-period event; training never a validation-period one
    assert all(ts < test_cut for times in ho.validation.times.values() for ts in times)
    assert ho.test.max_ts < ho.validation.cutoff_ts
    targets = {ho.test.sequences[u][t] for u, t in ho.test.cases}
    assert "y" in targets  # a new item, however often it is rated later
    # the core filter counted training events only: items with fewer than 3 there do not train
    counts: dict[str, int] = {}
    for e in events:
        if e["ts"] < ho.validation.cutoff_ts:
            counts[e["item_id"]] = counts.get(e["item_id"], 0) + 1
    assert trained == {i for i, n in counts.items() if n >= 3}
    with pytest.raises(ValueError, match="unknown protocol"):
        holdout(events, "nope")


def test_the_time_protocol_measures_new_items_on_the_main_run() -> None:
    seqs = {f"u{n}": [f"i{(n + t) % 40:02d}" for t in range(8)] + [f"new{n % 3}"] for n in range(30)}
    events = events_of(seqs)
    data = harness.EvalData("tiny", events, sorted({e["item_id"] for e in events}), {}, 1, events)
    out = harness.evaluate_models(data, "time", ["popularity"], HarnessConfig(core=1), log=lambda _: None)
    assert out["new_items"] >= 3
    m = out["models"]["popularity"]["test"]
    assert m["cold_cases"] > 0 and m["cold_recall@10"] == 0.0  # popularity never ranks an item it never saw


def test_quicksort_ties_reorder_equal_timestamps_only() -> None:
    events = [{"user_id": "u", "item_id": f"i{n}", "ts": ts} for n, ts in enumerate([5, 1, 5, 5, 1, 3] * 40)]
    stable = order_ties(events, "file")
    quick = order_ties(events, "quicksort")
    assert [e["ts"] for e in stable] == [e["ts"] for e in quick] == sorted(e["ts"] for e in events)
    assert stable == sorted(events, key=lambda e: e["ts"])  # file order within a timestamp
    assert quick != stable  # numpy's (introsort) quicksort moves ties at this size
    assert sorted(map(id, quick)) == sorted(map(id, events))
    with pytest.raises(ValueError, match="unknown tie order"):
        order_ties(events, "random")


def test_a_nan_score_is_never_a_hit() -> None:
    ho = loo_holdout(events_of({"u1": ["a", "b", "c"], "u2": ["a", "c", "b"]}))
    items = ["a", "b", "c", "d"]

    def nan_ranker(histories):
        return np.full((len(histories), 5), np.nan, dtype=np.float32)

    ranked = rank_cases(nan_ranker, ho.test, items, k=10)
    assert list(ranked.ranks) == [-1, -1]  # misses, though every item would be in a top 10
    assert not ranked.top_k.any()

    def nan_elsewhere(histories):
        s = np.tile(np.array([0, 0, 1, 2, np.nan], dtype=np.float32), (len(histories), 1))
        return s

    ranked = rank_cases(nan_elsewhere, ho.test, items, k=10)
    assert list(ranked.ranks) == [0, 0]  # NaN rows rank last, not first


def test_history_buckets_count_every_case() -> None:
    seqs = {"u1": ["a", "b"], "u2": ["a", "b", "c", "d", "e", "f", "g"], "u3": [f"i{n}" for n in range(30)]}
    ho = loo_holdout(events_of(seqs))
    items = sorted({i for s in seqs.values() for i in s})
    ranked = rank_cases(lambda hs: np.zeros((len(hs), len(items) + 1), dtype=np.float32), ho.test, items, k=10)
    buckets = by_history(ranked, ho.test)
    assert {b: v["cases"] for b, v in buckets.items()} == {"1": 1, "2-5": 0, "6-20": 1, ">20": 1}


def test_intervals_and_the_paired_test() -> None:
    assert seed_interval([0.3]) is None
    lo, hi = seed_interval([0.30, 0.32, 0.31])  # type: ignore[misc]
    assert lo < 0.31 < hi and hi - lo == pytest.approx(2 * 4.303 * 0.01 / np.sqrt(3))
    rng = np.random.default_rng(0)
    users = [f"u{n // 3}" for n in range(3000)]  # three cases per user
    a = (rng.random(3000) < 0.30).astype(float)
    lo, hi = user_bootstrap(a, users)
    assert lo < a.mean() < hi and hi - lo < 0.06
    same = paired_test(a, a, users)
    assert same["difference"] == 0.0 and same["p"] == 1.0
    better = np.maximum(a, (rng.random(3000) < 0.2).astype(float))
    t = paired_test(better, a, users)
    assert t["difference"] > 0 and t["ci"][0] > 0 and t["p"] <= 0.01


def test_training_keeps_the_weights_validation_scores_best() -> None:
    seqs = {f"u{u}": [f"i{(u + t) % 7}" for t in range(6)] for u in range(10)}
    cfg = TrainConfig(model=ModelConfig(max_len=5, d=8, n_blocks=1), epochs=6, batch_size=4, validate_every=2)
    scores = iter([0.5, 0.9, 0.1])  # epochs 2, 4, 6: the epoch-4 weights are kept
    snapshots: dict[int, list] = {}

    def select(snapshot):
        snapshots[snapshot.epochs_run] = [p.detach().clone() for p in snapshot.model.parameters()]
        return next(scores)

    trained = train(seqs, cfg, seed=0, select=select)
    assert trained.selected_epoch == 4 and trained.epochs_run == 6
    assert trained.validation_curve == [(2, 0.5), (4, 0.9), (6, 0.1)]
    kept = [p.detach() for p in trained.model.parameters()]
    same = [np.allclose(x.numpy(), y.numpy()) for x, y in zip(kept, snapshots[4], strict=True)]
    assert sum(same) >= len(same) - 1  # calibration may rescale the text-only scale afterwards, nothing else


def test_overrides_reach_the_training_config_and_refuse_unknown_keys() -> None:
    cfg = HarnessConfig(train_overrides=(("lr", "0.001"), ("model.dropout", "0.3"), ("lr_decay", "false")))
    tc = harness.streamrec_config(cfg)
    assert (tc.lr, tc.model.dropout, tc.lr_decay) == (0.001, 0.3, False)
    assert harness.sasrec_id_config(cfg).lr == 0.001
    with pytest.raises(ValueError, match="unknown training setting"):
        harness.train_config(HarnessConfig(train_overrides=(("model.nope", "1"),)))
