"""MMR re-ranking (serving.diversity), the offline diversity metrics, and the diversity bench's core on a tiny slice."""

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from bench import quality_diversity as qd
from model_export.data.datasets import Dataset, load_dataset
from model_export.data.splits import holdout
from model_export.evaluation.harness import EvalData, HarnessConfig, prepare
from model_export.evaluation.metrics import (
    beyond_accuracy,
    category_coverage,
    genre_distance,
    interaction_counts,
    intra_list_diversity,
    novelty,
)
from serving.diversity import intra_list_distance, mmr_order

E1, E2 = [1.0, 0.0], [0.0, 1.0]


# --- mmr_order ---------------------------------------------------------------------------------------------


def test_diversity_zero_is_the_stable_top_k_in_any_order() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(np.float64)  # many ties, not sorted
    vectors = rng.normal(size=(40, 8))
    assert mmr_order(scores, vectors, 10, 0.0) == list(np.argsort(-scores, kind="stable")[:10])
    assert mmr_order(np.ones(5), np.zeros((5, 3)), 3, 0.0) == [0, 1, 2]  # ties keep the given order


def test_the_knob_trades_relevance_for_unlikeness_by_hand() -> None:
    # A and B are the same direction, C another; relevance (min-max) is 1, 0.8, 0.
    scores, vectors = np.array([10.0, 9.0, 5.0]), np.array([E1, E1, E2])
    # diversity 0.1, second pick: B 0.9 * 0.8 - 0.1 * 1 = 0.62 against C 0.9 * 0 - 0 = 0 -> B
    assert mmr_order(scores, vectors, 2, 0.1) == [0, 1]
    # diversity 0.5: B 0.5 * 0.8 - 0.5 * 1 = -0.1 against C 0 -> C
    assert mmr_order(scores, vectors, 2, 0.5) == [0, 2]
    assert mmr_order(scores, vectors, 3, 0.5) == [0, 2, 1]
    # The score scale does not matter (min-max), nor the vectors' lengths (cosine).
    assert mmr_order(scores * 1000 - 7, vectors * 3, 2, 0.5) == [0, 2]
    # Diversity 1 still starts from the best-scored item.
    assert mmr_order(scores[::-1].copy(), vectors[::-1].copy(), 2, 1.0) == [2, 0]


def test_edge_cases_and_refusals() -> None:
    scores, vectors = np.array([3.0, 2.0, 1.0]), np.zeros((3, 4))  # zero rows: similar to nothing
    assert mmr_order(scores, vectors, 10, 0.7) == [0, 1, 2]  # k above n: all of them
    assert mmr_order(scores, vectors, 0, 0.7) == [] and mmr_order(np.zeros(0), np.zeros((0, 4)), 5, 0.3) == []
    assert mmr_order(np.full(3, 2.0), np.array([E1, E1, E2]), 2, 0.5) == [0, 2]  # equal scores: no relevance
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="diversity"):
            mmr_order(scores, vectors, 2, bad)
    with pytest.raises(ValueError, match="finite"):
        mmr_order(np.array([1.0, np.inf, 0.0]), vectors, 2, 0.3)
    with pytest.raises(ValueError, match="match"):
        mmr_order(scores, np.zeros((2, 4)), 2, 0.3)


def test_a_list_of_10_from_50_takes_well_under_a_millisecond() -> None:
    rng = np.random.default_rng(1)
    scores, vectors = np.sort(rng.normal(size=50))[::-1].copy(), rng.normal(size=(50, 64)).astype(np.float32)
    took = []
    for _ in range(200):
        t0 = time.perf_counter()
        mmr_order(scores, vectors, 10, 0.3)
        took.append(time.perf_counter() - t0)
    assert np.median(took) < 1e-3


def test_intra_list_distance_by_hand() -> None:
    assert intra_list_distance(np.array([E1, E1])) == pytest.approx(0.0)
    assert intra_list_distance(np.array([E1, E2])) == pytest.approx(1.0)
    assert intra_list_distance(np.array([E1, [-2.0, 0.0]])) == pytest.approx(2.0)
    assert intra_list_distance(np.array([E1, E2, E1])) == pytest.approx(2 / 3)  # pairs: 1, 0, 1
    assert intra_list_distance(np.array([E1, [0.0, 0.0]])) == pytest.approx(1.0)  # a zero row
    assert intra_list_distance(np.array([E1])) == 0.0


# --- the offline metrics -----------------------------------------------------------------------------------

GENRES = {"a": ["Drama", "Comedy"], "b": ["Drama"], "c": ["Horror"], "d": []}
COUNTS = {"a": 4, "b": 2, "c": 1, "d": 1}  # 8 interactions: shares 1/2, 1/4, 1/8, 1/8


def test_genre_diversity_and_coverage_by_hand() -> None:
    assert genre_distance(GENRES["a"], GENRES["b"]) == pytest.approx(0.5)  # 1 - |{Drama}| / |{Drama, Comedy}|
    assert genre_distance(GENRES["a"], GENRES["c"]) == 1.0 and genre_distance(GENRES["a"], GENRES["d"]) == 1.0
    assert genre_distance([], []) == 0.0
    assert intra_list_diversity(["a", "b", "c"], GENRES) == pytest.approx((0.5 + 1 + 1) / 3)
    assert intra_list_diversity(["a", "zzz"], GENRES) == 1.0  # an unknown item has no genre
    assert intra_list_diversity(["a"], GENRES) is None
    assert category_coverage(["a", "b"], GENRES, 4) == 0.5 and category_coverage(["a", "b", "c"], GENRES, 4) == 0.75


def test_novelty_by_hand() -> None:
    assert interaction_counts({"u1": ["a", "b", "a"], "u2": ["a"]}) == {"a": 3, "b": 1}
    assert novelty(["a"], COUNTS) == pytest.approx(1.0)  # -log2(1/2)
    assert novelty(["a", "b", "c"], COUNTS) == pytest.approx((1 + 2 + 3) / 3)
    assert novelty(["zzz"], COUNTS) == pytest.approx(3.0)  # never interacted with: counted once, 1/8
    assert novelty([], COUNTS) is None
    got = beyond_accuracy([["a", "b", "c"], ["a"]], GENRES, 4, COUNTS)
    # ILD: the one-item list has no pair and is left out; coverage (0.75 + 0.5) / 2; novelty (2 + 1) / 2
    assert got == pytest.approx({"ild_genres": 2.5 / 3, "category_coverage": 0.625, "novelty": 1.5})


# --- the bench's core --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> EvalData:
    """ML-100k's first 40 users (5-core within them): real genres, a few hundred events."""
    full = load_dataset("ml-100k")
    users: list[str] = []
    for e in full.events:
        if e["user_id"] not in users:
            users.append(e["user_id"])
        if len(users) == 40:
            break
    keep = set(users)
    return prepare(Dataset("ml-100k-tiny", [e for e in full.events if e["user_id"] in keep], full.items), 5)


# One epoch, no text tower (no MiniLM encoding): the mechanics, not the quality.
TINY = HarnessConfig(seeds=1, epochs=1, cold_fraction=0.0, max_len=20, train_overrides=(("model.text", "false"),))


def test_knob_zero_reproduces_the_scorers_plain_top_10(tiny: EvalData, tmp_path: Path) -> None:
    ho = holdout(tiny.events, "loo")
    scorer, info = qd.train_served(tiny, ho, TINY, 0, tmp_path)
    assert info["selected_epoch"] == 1 and info["dim"] == scorer.contract.embedding_dim
    pools = qd.candidate_pools(scorer, ho.validation, 50)
    assert len(pools.ids) == len(ho.validation.cases) and all(len(x) == 50 for x in pools.ids)
    assert all(v.shape == (50, info["dim"]) for v in pools.vectors)
    plain = scorer.score([ho.validation.sequences[u][:t] for u, t in ho.validation.cases], k=10,
                         times=[ho.validation.times[u][:t] for u, t in ho.validation.cases],
                         scenarios=[ho.validation.scenarios[u][:t] for u, t in ho.validation.cases])
    lists, _, _ = qd.rerank(pools, 0.0, 10)
    assert lists == [[i for i, _ in r] for r in plain]
    diverse, _, _ = qd.rerank(pools, 0.8, 10)
    assert diverse != lists and all(len(x) == 10 and set(x) <= set(p) for x, p in zip(diverse, pools.ids, strict=True))


def test_the_sweep_on_a_tiny_slice(tiny: EvalData, tmp_path: Path) -> None:
    knobs = [0.0, 0.3, 0.8]
    doc = qd.sweep(tiny, TINY, knobs, 50, tmp_path)
    assert doc["knobs"] == knobs and list(doc["validation"]) == ["0.0", "0.3", "0.8"]
    assert doc["validation_cases"] == doc["test_cases"] == 40 and doc["read_test"] is True
    assert doc["chosen"] in knobs and doc["rule"] == qd.RULE
    assert set(doc["test"]) == {str(x) for x in doc["test_knobs"]} == {"0.0", str(doc["chosen"])}
    for split in ("validation", "test"):
        for m in doc[split].values():
            assert 0.0 <= m["recall@10"] <= 1.0 and 0.0 <= m["ndcg@10"] <= m["recall@10"]
            assert m["recall@10_ci"] is None  # one seed: no interval over seeds
            assert 0.0 < m["ild_genres"] <= 1.0 and 0.0 < m["category_coverage"] <= 1.0 and m["novelty"] > 0
    v = doc["validation"]
    assert v["0.0"]["same_as_top_k"] and not v["0.8"]["same_as_top_k"]
    # A higher knob spreads the list: in the embedding MMR reads, and on average in genres too.
    assert v["0.0"]["ild_embedding"] <= v["0.3"]["ild_embedding"] <= v["0.8"]["ild_embedding"]
    assert v["0.8"]["ild_genres"] >= v["0.0"]["ild_genres"]
    (seed,) = doc["per_seed"]
    assert seed["seed"] == 0 and set(seed["validation"]) == set(v)
    # The table and the plot come out of the same document.
    assert any(line.startswith("chosen:") for line in qd.table(doc))
    root = ET.fromstring(qd.svg(doc["validation"], doc["chosen"]))
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 3


def test_the_rule_stops_at_the_first_knob_that_loses_too_much() -> None:
    def val(*ndcg: float) -> dict[float, dict[str, float]]:
        return {x: {"ndcg@10": n} for x, n in zip([0.0, 0.1, 0.2, 0.3], ndcg, strict=True)}

    assert qd.choose(val(0.100, 0.099, 0.0981, 0.090)) == 0.2  # 0.0981 >= 0.098; 0.090 is not
    assert qd.choose(val(0.100, 0.097, 0.099, 0.099)) == 0.0  # 0.1 fails: the noisy passes above do not count
    assert qd.choose(val(0.100, 0.101, 0.102, 0.103)) == 0.3
