"""The quality harness: k-core, coverage, the cold run, ``streamrec eval --json`` and the ML-1M reference."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model_export.data.datasets import k_core, load_dataset
from model_export.data.splits import (
    History,
    hide_items,
    item_index,
    leave_one_out,
    make_split,
    pick_cold_items,
    time_split,
)
from model_export.evaluation import harness
from model_export.evaluation.baselines import popularity_ranker
from model_export.evaluation.harness import EvalData, HarnessConfig, evaluate_models
from model_export.evaluation.metrics import _in_top_k, evaluate, evaluate_quality, rank_cases
from streamrec import run_options
from streamrec.cli import main


def events_of(seqs: dict[str, list[str]]) -> list[dict]:
    """Each user's items in order, users interleaved in time."""
    return [
        {"user_id": u, "item_id": item, "type": "click", "ts": 1000 * (t * len(seqs) + n)}
        for n, (u, seq) in enumerate(seqs.items())
        for t, item in enumerate(seq)
    ]


def fixed(vector: list[float]):
    """A ranker that gives every case the same scores."""
    v = np.array(vector, dtype=np.float32)
    return lambda histories: np.tile(v, (len(histories), 1))


def test_k_core_is_one_pass_of_counting() -> None:
    # u3 has 4 events and goes; i4 has 4 events and goes; u2 then keeps only 4 (i4 gone): one pass keeps it.
    seqs = {
        "u1": ["i1", "i2", "i3", "i4", "i1", "i2"],
        "u2": ["i1", "i2", "i3", "i4", "i3"],
        "u3": ["i1", "i2", "i3", "i4"],
        "u4": ["i1", "i2", "i3", "i4", "i5", "i3"],
    }
    events = events_of(seqs)
    kept = k_core(events, 5)
    assert {e["user_id"] for e in kept} == {"u1", "u2", "u4"}
    assert {e["item_id"] for e in kept} == {"i1", "i2", "i3"}
    assert sum(e["user_id"] == "u2" for e in kept) == 4  # below k after the drop: SASRec does not iterate
    assert [e for e in events if e in kept] == kept  # input order kept
    assert k_core(events, 1) == events


def test_top_k_breaks_ties_by_row_and_never_takes_masked_rows() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (50, 30)).astype(np.float32)  # many ties
    scores[rng.random((50, 30)) < 0.3] = -np.inf
    scores[0, 3:] = -np.inf  # fewer than k candidates
    top = _in_top_k(scores, 5)
    for b in range(50):
        ranked = [r for r in np.argsort(-scores[b], kind="stable") if scores[b, r] > -np.inf][:5]
        assert set(np.nonzero(top[b])[0]) == set(ranked)


def test_coverage_is_the_share_of_items_in_any_top_k() -> None:
    split = leave_one_out(events_of({"u1": ["i1", "i2", "i3"], "u2": ["i1", "i4"], "u3": ["i5", "i6"]}))
    items = item_index(split.sequences)  # i1..i6 = rows 1..6
    # rows 1..6 score 3 1 1 1 0 2: u1 (saw i1 i2) gets i6 then i3 (tied with i4, lower row);
    # u2 (saw i1) gets i6, i2; u3 (saw i5) gets i1, i6
    ranker = fixed([0, 3, 1, 1, 1, 0, 2])
    ranked = rank_cases(ranker, split, items, k=2)
    assert set(np.nonzero(ranked.top_k)[0]) == {1, 2, 3, 6}
    assert list(ranked.ranks) == [1, 3, 1]  # i3 after i6 for u1; i4 after i6, i2, i3 for u2; i6 after i1 for u3
    m = evaluate_quality(ranker, split, items, k=2)
    assert m["coverage@2"] == pytest.approx(4 / 6)
    assert m["recall@2"] == pytest.approx(2 / 3) and m["ndcg@2"] == pytest.approx(2 / 3 / np.log2(3))
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4 + 1 / 2) / 3)
    # evaluate() keeps its keys and values
    assert evaluate(ranker, split, items, k=2) == {
        key: m[key] for key in ("recall@2", "ndcg@2", "mrr", "cases", "users")
    }


def test_float64_scores_keep_the_order_float32_would_round_away() -> None:
    split = leave_one_out(events_of({"u1": ["a", "b"], "u2": ["a", "c"]}))
    big = 2.0**30  # float32 cannot tell big from big + 1
    rank = lambda hs: np.tile(np.array([0, 0, big, big + 1], dtype=np.float64), (len(hs), 1))  # noqa: E731
    ranked = rank_cases(rank, split, ["a", "b", "c"], k=1)
    assert list(ranked.ranks) == [1, 0]  # u1: c above the target b; u2: c first
    assert set(np.nonzero(ranked.top_k)[0]) == {3}


def test_cold_items_are_hidden_from_training_only() -> None:
    seqs = {f"u{n}": [f"i{(n + t) % 20:02d}" for t in range(8)] for n in range(12)}
    split = make_split(events_of(seqs), "loo")
    index = item_index(split.sequences)
    cold = pick_cold_items(index, 0.25, seed=1)
    assert len(cold) == 5 and cold <= set(index)
    assert cold == pick_cold_items(list(reversed(index)), 0.25, seed=1)  # seeded, order-free
    assert cold != pick_cold_items(index, 0.25, seed=2)
    hidden = hide_items(split, cold)
    assert all(not set(seq) & cold for seq in hidden.train.values())
    assert all(hidden.train[u] == [i for i in split.train[u] if i not in cold] for u in hidden.train)
    assert hidden.sequences == split.sequences and hidden.cases == split.cases and hidden.times == split.times
    # cold cases are exactly the cases whose target is cold; this ranker ranks the cold items first
    scores = [0.0] + [1.0 if item in cold else 0.0 for item in index]
    m = evaluate_quality(fixed(scores), hidden, index, k=5, cold=cold)
    targets = [split.sequences[u][t] for u, t in split.cases]
    assert m["cold_cases"] == sum(t in cold for t in targets) > 0
    assert m["cold_recall@5"] == 1.0  # at most the 5 cold items rank above (or at) a cold target
    warm_hits, cold_rr = [], []
    for u, t in split.cases:
        unseen = [i for i in index if i not in split.sequences[u][:t]]
        best_first = sorted(unseen, key=lambda i: (i not in cold, index.index(i)))
        if split.sequences[u][t] in cold:
            cold_rr.append(1 / (1 + best_first.index(split.sequences[u][t])))
        else:
            warm_hits.append(split.sequences[u][t] in best_first[:5])
    assert m["warm_recall@5"] == pytest.approx(np.mean(warm_hits))
    assert m["cold_mrr"] == pytest.approx(np.mean(cold_rr))
    assert m["recall@5"] == pytest.approx((m["cold_cases"] + sum(warm_hits)) / len(split.cases))


def test_cold_history_items_stay_in_the_case_history() -> None:
    split = time_split(events_of({"u1": ["a", "b", "c", "d"], "u2": ["b", "c", "d", "a"]}), 0.5)
    hidden = hide_items(split, {"b"})
    seen: list[Sequence[int]] = []

    def spy(histories: Sequence[History]) -> np.ndarray:
        seen.extend(h.rows.tolist() for h in histories)
        return np.zeros((len(histories), 5), dtype=np.float32)

    evaluate(spy, hidden, ["a", "b", "c", "d"])
    assert [1, 2, 3] in seen  # u1 predicting d: a, b (hidden from training), c


def test_the_cold_run_trains_without_the_cold_items_on_the_full_index(monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = {f"u{n}": [f"i{(3 * n + t) % 30:02d}" for t in range(10)] for n in range(30)}
    events = events_of(seqs)
    index = item_index({"": [e["item_id"] for e in events]})
    data = EvalData("tiny", events, index, {}, 1, events)
    calls: list[tuple[dict, list]] = []

    def spy(train, items):
        calls.append((dict(train), list(items)))
        return popularity_ranker(train, items)

    monkeypatch.setattr(harness, "popularity_ranker", spy)
    # Popularity cannot rank a new item, so the harness gives it no cold run; pretend it could.
    monkeypatch.setattr(harness, "SCORES_NEW_ITEMS", frozenset({"popularity"}))
    cfg = HarnessConfig(core=1, cold_fraction=0.2, seed=4)
    out = evaluate_models(data, "loo", ["popularity", "recent-popularity"], cfg, log=lambda _: None)
    cold = pick_cold_items(index, 0.2, seed=4)
    (main_train, main_items), (cold_train, cold_items) = calls
    assert main_items == cold_items == index
    assert any(set(s) & cold for s in main_train.values())  # the main run is the literature protocol
    assert not any(set(s) & cold for s in cold_train.values())
    # both train on everything before each user's validation target
    assert main_train == {u: seq[:-2] for u, seq in seqs.items()}
    split = make_split(events, "loo")
    m = out["models"]["popularity"]["test"]
    assert m["cold_cases"] == sum(split.sequences[u][t] in cold for u, t in split.cases) > 0
    assert {"recall@10", "ndcg@10", "mrr", "coverage@10", "cold_recall@10", "cold_ratio"} <= set(m)
    # popularity trained without the cold items scores them 0: with 30 - 6 > 10 warm items they never reach a top-10
    assert m["cold_recall@10"] == 0.0
    assert out["models"]["recent-popularity"]["test"]["cold_recall@10"] is None  # no cold run for it


def test_eval_cli_json_shape_on_ml100k(capsys: pytest.CaptureFixture[str]) -> None:
    models = ["popularity", "itemknn", "recent-popularity"]
    argv = ["eval", "--dataset", "ml-100k", "--protocol", "loo", "--json", "--models", ",".join(models)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # stdout is the JSON alone; progress went to stderr
    assert "popularity seed 0: fit" in captured.err
    assert {"dataset", "protocol", "models", "paired", "validation_cases", "test_cases"} <= set(out)
    assert (out["dataset"], out["protocol"]) == ("ml-100k", "loo") and list(out["models"]) == models
    assert out["validation_cases"] == out["test_cases"] == 943
    for m in out["models"].values():
        assert m["seeds"] == [0] and m["train_seconds"] >= 0
        for split in ("validation", "test"):
            for key in ("recall@10", "ndcg@10", "mrr", "coverage@10"):
                assert 0.0 <= m[split][key] <= 1.0
            assert m[split]["cases"] == 943
            assert m[split]["recall@10_ci"] is None  # one seed: no interval over seeds
        lo, hi = m["test"]["recall@10_ci_users"]
        assert lo <= m["test"]["recall@10"] <= hi
        assert sum(b["cases"] for b in m["test"]["by_history"].values()) == 943
    # popularity counts each user's items up to the validation target: 81 of 943 last items in its top 10
    assert out["models"]["popularity"]["test"]["recall@10"] == pytest.approx(81 / 943)
    assert out["models"]["itemknn"]["test"]["recall@10"] > out["models"]["popularity"]["test"]["recall@10"]


def test_eval_cli_time_split_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", "ml-100k", "--protocol", "time", "--json", "--models", "popularity",
                 "--core", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["models"]["popularity"]["test"]
    # every item without training events is new, and popularity never ranks one
    assert out["new_items"] > 0 and m["cold_cases"] > 0 and m["cold_recall@10"] == 0.0
    assert main(["eval", "--dataset", "ml-100k", "--protocol", "loo", "--json", "--models", "popularity",
                 "--no-cold"]) == 0
    assert json.loads(capsys.readouterr().out)["models"]["popularity"]["test"]["cold_recall@10"] is None
    assert main(["eval", "--dataset", "ml-100k", "--models", "nope"]) == 2
    assert main(["eval", "--dataset", "ml-100k", "--models", "popularity", "--set", "nope=1"]) == 2
    assert main(["eval", "--dataset", "ml-100k", "--models", "popularity", "--seeds", "0"]) == 2


def test_quality_bench_writes_its_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "quality.json"
    opts = ["--datasets", "ml-100k", "--protocols", "loo", "--models", "popularity", "--out", str(out)]
    assert main(["bench", "quality", "--", *opts]) == 0
    doc = json.loads(out.read_text())
    assert [r["model"] for r in doc["rows"]] == ["popularity"] and doc["published"] == []
    assert doc["machine"]["cpu_cores"] >= 1 and doc["config"]["core"] == 5 and doc["runs"][0]["seconds"] >= 0
    made = doc["produced_by"]
    assert made["command"].startswith("python -m bench.quality") and "--datasets ml-100k" in made["command"]
    assert len(made["git_commit"] or "") == 40


def test_bench_json_leaves_stdout_to_the_json(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`streamrec bench NAME --json -- OPTIONS`: stdout is the result document alone, the table goes to stderr."""
    out = tmp_path / "quality.json"
    opts = ["--datasets", "ml-100k", "--protocols", "loo", "--models", "popularity", "--out", str(out)]
    assert main(["bench", "quality", "--json", "--", *opts]) == 0
    captured = capfd.readouterr()
    assert json.loads(captured.out) == json.loads(out.read_text())
    assert "popularity" in captured.err  # the table


def test_run_options_reach_both_neural_models() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    run_options.add_run_options(parser)
    args = ["--epochs", "3", "--max-len", "200", "--batch-size", "64", "--curve-every", "2", "--no-cold"]
    models, cfg = run_options.run_options(parser.parse_args([*args, "--cold-exposure", "0.5"]))
    assert models == list(harness.MODELS) and cfg.cold_fraction == 0.0 and cfg.curve_every == 2
    ours, ids = harness.streamrec_config(cfg), harness.sasrec_id_config(cfg)
    assert ours.cold_exposure == 0.5
    for bad in ("-0.1", "nan", "many"):
        with pytest.raises(SystemExit):  # argparse: exit 2 with the reason, no training started
            parser.parse_args(["--cold-exposure", bad])
    for tc in (ours, ids):
        assert (tc.epochs, tc.batch_size, tc.model.max_len) == (3, 64, 200)
    assert ours.model.text and ours.model.time_gaps and ours.model.scenarios
    assert not (ids.model.text or ids.model.time_gaps or ids.model.scenarios)
    default = harness.streamrec_config(HarnessConfig())
    assert default.model.max_len == 50 and default.batch_size == 128 and default.cold_exposure == 1.0


def test_the_validation_curve_is_logged_and_picks_the_epoch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="model_export")
    seqs = {f"u{n}": [f"i{(n + t) % 12:02d}" for t in range(8)] for n in range(20)}
    events = events_of(seqs)
    data = EvalData("tiny", events, item_index({"": [e["item_id"] for e in events]}), {}, 1, events)
    cfg = HarnessConfig(core=1, cold_fraction=0.0, epochs=4, curve_every=2, max_len=6, batch_size=8,
                        train_overrides=(("validate_every", "2"),))
    for name in ("sasrec-id", "streamrec"):  # streamrec: with its time-gap and scenario inputs
        out = evaluate_models(data, "loo", [name], cfg)
        lines = [r.getMessage() for r in caplog.records if "curve" in r.getMessage()]
        caplog.clear()
        assert [line.split("epoch ")[1].split(":")[0] for line in lines] == ["2", "4"]
        run = out["models"][name]["per_seed"][0]
        assert [e for e, _ in run["validation_curve"]] == [2, 4]
        best_epoch, best = max(run["validation_curve"], key=lambda c: c[1])
        assert run["selected_epoch"] == best_epoch
        # the kept weights are the ones measured best: the harness's validation NDCG is that score
        assert out["models"][name]["validation"]["ndcg@10"] == pytest.approx(best, abs=1e-6)


@pytest.fixture(scope="module")
def ml1m():
    return load_dataset("ml-1m")


@pytest.mark.slow
def test_popularity_reproduces_the_reference_on_ml1m_after_the_5_core_filter(ml1m) -> None:
    data = harness.prepare(ml1m, core=5)
    assert len(data.index) == 3416 and len({e["user_id"] for e in data.events}) == 6040
    assert len(data.events) == 999_611
    split = make_split(data.events, "loo")
    m = evaluate(popularity_ranker(split.train, data.index), split, data.index)
    assert round(m["recall@10"], 4) == 0.0364 and round(m["ndcg@10"], 4) == 0.0179


def test_the_sweep_reads_validation_only_and_ranks_the_variants(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    opts = ["--variants", "default,cold-exposure-2", "--epochs", "1", "--protocols", "time", "--out", str(out)]
    assert main(["bench", "quality_sweep", "--", *opts]) == 0
    doc = json.loads(out.read_text())
    assert doc["read_test"] is False and doc["complete"] is True
    assert set(doc["ranking"]["time"]) == {"default", "cold-exposure-2"}
    for v in doc["variants"].values():
        got = v["protocols"]["time"]
        assert 0.0 < got["validation"]["ndcg@10"] < 1.0 and got["selected_epochs"] == [1]
    assert doc["variants"]["cold-exposure-2"]["settings"]["cold_exposure"] == 2.0
    best = doc["ranking"]["time"][0]
    assert doc["variants"][best]["protocols"]["time"]["validation"]["ndcg@10"] == max(
        v["protocols"]["time"]["validation"]["ndcg@10"] for v in doc["variants"].values()
    )
    # --rerank recomputes the ranking of a result file without training, keeping who measured it
    assert main(["bench", "quality_sweep", "--", "--rerank", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["ranking"] == doc["ranking"] and again["measured_by"] == doc["produced_by"]


def test_the_tie_bench_counts_the_targets_the_reorder_moves(tmp_path: Path) -> None:
    out = tmp_path / "ties.json"
    assert main(["bench", "quality_ties", "--", "--dataset", "ml-100k", "--models", "popularity",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["users"] == 943 and 0 < doc["changed_targets"]["test"] < 943  # ML-100k has equal timestamps too
    assert [(r["ties"], r["model"]) for r in doc["rows"]] == [("file", "popularity"), ("quicksort", "popularity")]
