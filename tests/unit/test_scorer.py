"""The ONNX scorer against eager torch: same top-k, seen items excluded, any batch size."""

from pathlib import Path

import numpy as np
import pytest
import torch

from model_export.artifact.export import export_artifact
from model_export.features import tower_inputs
from model_export.model import ModelConfig, SASRec
from model_export.train import TrainConfig, train
from serving.scorer import Scorer

ITEMS = [f"i{n}" for n in range(40)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SASRec, Path]:
    rng = np.random.default_rng(0)
    seqs = {f"u{u}": [ITEMS[(s + t) % 40] for t in range(10)] for u, s in enumerate(rng.integers(0, 40, 50))}
    cfg = TrainConfig(model=ModelConfig(max_len=6, d=16, n_blocks=2, n_heads=2), epochs=3, batch_size=16)
    tm = train(seqs, cfg, seed=0)
    assert tm.items == sorted(ITEMS)
    out = tmp_path_factory.mktemp("art") / "a"
    export_artifact(tm.model, tm.items, out, version="t1", metrics={}, train_data={"min_ts": 0, "max_ts": 1})
    return tm.model, out


@pytest.fixture(scope="module")
def scorer(trained: tuple[SASRec, Path]) -> Scorer:
    return Scorer(trained[1], prefer_gpu=False)


def torch_topk(
    model: SASRec, history: list[str], k: int, exclude: set[str], times: list[int] | None = None
) -> list[str]:
    row = {item: r for r, item in enumerate(sorted(ITEMS), start=1)}
    names = ["item_seq", "time_gaps", "scenarios"]
    feed = tower_inputs([[row[i] for i in history]], [times], [None], model.cfg.max_len, {}, names)
    with torch.no_grad():
        user = model.user_vector(*(torch.from_numpy(feed[n]) for n in names))
        scores = (user @ model.output_matrix().T)[0].numpy()
    scores[0] = -np.inf
    scores[[row[i] for i in exclude]] = -np.inf
    ids = [None, *sorted(ITEMS)]
    return [ids[r] for r in np.argsort(-scores, kind="stable")[:k]]


def test_metadata(scorer: Scorer) -> None:
    assert scorer.version == "t1" and scorer.max_len == 6
    assert scorer.provider == "CPUExecutionProvider"
    assert scorer.item_ids == sorted(ITEMS) and scorer.knows("i3") and not scorer.knows("nope")


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_same_topk_as_torch_and_seen_excluded(
    trained: tuple[SASRec, Path], scorer: Scorer, batch: int
) -> None:
    rng = np.random.default_rng(batch)
    histories = [list(rng.choice(ITEMS, size=int(rng.integers(1, 12)), replace=False)) for _ in range(batch)]
    times = [sorted(rng.integers(0, 10**10, size=len(h)).tolist()) for h in histories]
    out = scorer.score(histories, k=10, times=times)
    assert len(out) == batch
    for h, t, recs in zip(histories, times, out, strict=True):
        ids = [i for i, _ in recs]
        assert ids == torch_topk(trained[0], h, 10, set(h), t)
        assert not set(ids) & set(h)
        scores = [s for _, s in recs]
        assert scores == sorted(scores, reverse=True)


def test_unknown_and_empty_histories(scorer: Scorer) -> None:
    out = scorer.score([["nope", "i1"], ["nope"], []], k=5)
    assert len(out[0]) == 5 and out[1] == [] and out[2] == []
    assert scorer.score([], k=5) == []


def test_explicit_exclude_and_k_larger_than_catalog(scorer: Scorer) -> None:
    (recs,) = scorer.score([["i1", "i2"]], k=100, exclude=[{"i5"}])
    ids = [i for i, _ in recs]
    assert len(ids) == 39 and "i5" not in ids and "i1" in ids


def test_restrict_to_the_live_catalog(trained: tuple[SASRec, Path]) -> None:
    s = Scorer(trained[1], prefer_gpu=False)
    assert s.restrict_to(["i1", "i2", "i3", "unknown"]) == 3
    (recs,) = s.score([["i1"]], k=10)
    assert {i for i, _ in recs} == {"i2", "i3"}
    s.restrict_to(None)
    assert len(s.score([["i1"]], k=50)[0]) == 39


def _with_cold_rows(s: Scorer, rows: np.ndarray, fold: bool) -> list[str]:
    """Add rows the way Scorer.add_items does (new ids, unblocked), kept beside the session or folded in."""
    ids = [f"new{n}" for n in range(len(rows))]
    for item_id in ids:
        s._ids.append(item_id)
        s._row[item_id] = len(s._ids)
    s._blocked = np.concatenate([s._blocked, np.zeros(len(ids), dtype=bool)])
    s._bias = s._blocked_bias()
    if fold:
        s._emb = np.concatenate([s._emb, rows.astype(np.float32)])
        s._build_scoring()
    else:
        s._cold_t = np.concatenate([s._cold_t, rows.T.astype(np.float32)], axis=1)
    return ids


def test_rows_added_beside_the_session_score_as_folded_ones(trained: tuple[SASRec, Path]) -> None:
    rng = np.random.default_rng(1)
    beside, folded = Scorer(trained[1], prefer_gpu=False), Scorer(trained[1], prefer_gpu=False)
    rows = rng.normal(size=(7, beside._emb.shape[1])) * beside._emb[1:].std()
    new = _with_cold_rows(beside, rows, fold=False)
    _with_cold_rows(folded, rows, fold=True)
    assert beside._cold_t.shape[1] == 7 and folded._cold_t.shape[1] == 0
    histories = [[ITEMS[n], ITEMS[(n + 3) % 40]] for n in range(12)]
    got, want = beside.score(histories, k=15), folded.score(histories, k=15)
    assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
    for g, w in zip(got, want, strict=True):
        assert [x for _, x in g] == pytest.approx([x for _, x in w], abs=1e-4)
    assert any(i in new for r in got for i, _ in r)  # the new rows do compete
    # Restricted to a catalog, new items enter it one by one (allow), as the writer adds catalog items.
    beside.restrict_to(["i1", "i2"])
    assert {i for i, _ in beside.score([["i5"]], k=10)[0]} == {"i1", "i2"}
    assert beside.allow([new[0], "unknown"]) == 1
    assert {i for i, _ in beside.score([["i5"]], k=10)[0]} == {"i1", "i2", new[0]}


def test_item_vectors_are_the_rows_it_scores_with(trained: tuple[SASRec, Path]) -> None:
    beside, folded = Scorer(trained[1], prefer_gpu=False), Scorer(trained[1], prefer_gpu=False)
    d = beside._emb.shape[1]
    rows = np.random.default_rng(2).normal(size=(3, d)) * beside._emb[1:].std()
    new = _with_cold_rows(beside, rows, fold=False)
    _with_cold_rows(folded, rows, fold=True)
    ids = ["i3", new[1], "nope", "i0", new[0], new[2]]
    got = beside.item_vectors(ids)
    assert got.shape == (6, d) and got.dtype == np.float32
    row = {item: r for r, item in enumerate(sorted(ITEMS), start=1)}
    np.testing.assert_array_equal(got[0], beside._emb[row["i3"]])
    np.testing.assert_array_equal(got[3], beside._emb[row["i0"]])
    np.testing.assert_allclose(got[[1, 4, 5]], rows[[1, 0, 2]].astype(np.float32))  # the rows beside the session
    assert not got[2].any()  # an unknown id: a zero row
    np.testing.assert_array_equal(folded.item_vectors(ids), got)  # the same rows once folded into the session
    assert beside.item_vectors([]).shape == (0, d)
    # The scores are these rows against the user's vector.
    vec, _ = beside.user_vectors([["i1", "i2"]])
    (recs,) = beside.score([["i1", "i2"]], k=12)
    assert any(i in new for i, _ in recs)
    np.testing.assert_allclose(beside.item_vectors([i for i, _ in recs]) @ vec[0], [x for _, x in recs], atol=1e-4)


def test_serving_does_not_load_torch() -> None:
    import subprocess
    import sys

    code = "import sys, serving.scorer, model_export; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
