"""Model, training, evaluation, ONNX export parity and the artifact contract (tiny synthetic data)."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_export.artifact.contract import (
    CONTRACT_FILE,
    EMBEDDINGS_FILE,
    ITEMS_FILE,
    MODEL_FILE,
    PARITY_TOLERANCE,
    WEIGHTS_FILE,
    load_contract,
    verify_artifact,
)
from model_export.artifact.export import check_parity, export_artifact, export_onnx, parity_batch
from model_export.data.datasets import load_dataset
from model_export.data.splits import item_index, leave_one_out, make_split, time_split
from model_export.errors import ArtifactError, ModelExportError, NotEnoughDataError, ParityError
from model_export.evaluation.baselines import popularity_ranker
from model_export.evaluation.metrics import evaluate
from model_export.features import gap_buckets, scenario_ids, tower_inputs
from model_export.model import ModelConfig, SASRec
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig, train

TINY = TrainConfig(
    model=ModelConfig(max_len=8, d=16, n_blocks=1, dropout=0.0), epochs=15, batch_size=32, lr=1e-2
)


def walk_events(n_users: int = 40, n_items: int = 30, length: int = 12, seed: int = 0) -> list[dict]:
    """Each user walks item i -> i+1 (mod n): a pattern a sequential model learns in a few epochs."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            item = (start + t) % n_items
            events.append(
                {"user_id": f"u{u}", "item_id": f"i{item}", "type": "click", "ts": 1000 * (t * n_users + u)}
            )
    return events


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_and_export_events(walk_events(), tmp_path_factory.mktemp("art"), name="walk", config=TINY)


def test_model_learns_the_walk_and_beats_popularity(artifact: Path) -> None:
    metrics = load_contract(artifact).metrics
    for protocol in ("loo", "time"):
        assert metrics[protocol]["streamrec"]["recall@10"] > metrics[protocol]["popularity"]["recall@10"]
    assert metrics["loo"]["streamrec"]["recall@10"] > 0.9


def test_padding_rows_give_finite_outputs() -> None:
    model = SASRec(10, ModelConfig(max_len=6, d=8)).eval()
    out = model.user_vector(torch.zeros(3, 6, dtype=torch.long))
    assert out.shape == (3, 8) and torch.isfinite(out).all()


def test_training_is_reproducible() -> None:
    seqs = {f"u{u}": [f"i{(u + t) % 7}" for t in range(6)] for u in range(10)}
    cfg = TrainConfig(model=ModelConfig(max_len=5, d=8, n_blocks=1), epochs=2, batch_size=4)
    a, b = train(seqs, cfg, seed=3), train(seqs, cfg, seed=3)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_on_epoch_sees_every_epoch_and_the_rate_decays_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = {f"u{u}": [f"i{(u + t) % 7}" for t in range(6)] for u in range(10)}
    cfg = TrainConfig(model=ModelConfig(max_len=5, d=8, n_blocks=1), epochs=3, batch_size=4, lr=1e-2)
    rates: list[float] = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):  # the rate each update used
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    seen: list[tuple[int, bool]] = []
    train(seqs, cfg, seed=0, on_epoch=lambda snap: seen.append((snap.epochs_run, snap.model.training)))
    assert seen == [(1, True), (2, True), (3, True)]
    assert rates[0] == pytest.approx(1e-2) and rates[-1] < 1e-3  # cosine: full rate first, near 0 last
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    rates.clear()
    from dataclasses import replace

    train(seqs, replace(cfg, lr_decay=False), seed=0)
    assert set(rates) == {1e-2}


def test_onnx_matches_torch_for_every_batch_size(artifact: Path) -> None:
    contract = verify_artifact(artifact)
    assert contract.parity["max_abs_diff"] <= PARITY_TOLERANCE
    sess = ort.InferenceSession(str(artifact / MODEL_FILE), providers=["CPUExecutionProvider"])
    batch = parity_batch(contract.n_items, contract.max_len, seed=1)
    ts = [np.arange(len(r)) * 60_000 for r in batch]  # one event a minute
    names = [t.name for t in contract.inputs]
    feed = tower_inputs(list(batch), ts, [["web"] * len(r) for r in batch], contract.max_len, {"web": 2}, names)
    full = sess.run(["user_vector"], feed)[0]
    assert full.shape == (len(batch), contract.embedding_dim)
    one = sess.run(["user_vector"], {name: v[-1:] for name, v in feed.items()})[0]
    np.testing.assert_allclose(one[0], full[-1], atol=PARITY_TOLERANCE)


def test_contract_describes_the_files(artifact: Path) -> None:
    c = load_contract(artifact)
    assert [(t.name, t.dtype, t.shape) for t in c.inputs] == [
        (name, "int64", ["batch", 8]) for name in ("item_seq", "time_gaps", "scenarios")
    ]
    assert [(t.name, t.dtype, t.shape) for t in c.outputs] == [("user_vector", "float32", ["batch", 16])]
    items = json.loads((artifact / ITEMS_FILE).read_text())
    assert items[0] is None and len(items) == c.n_items + 1 == 31
    assert np.load(artifact / EMBEDDINGS_FILE).shape == (31, 16)
    assert set(c.files) == {MODEL_FILE, ITEMS_FILE, EMBEDDINGS_FILE, WEIGHTS_FILE}
    assert c.train_data["min_ts"] <= c.train_data["max_ts"] and c.parent is None
    assert set(c.metrics) == {"loo", "time"}


def test_the_served_model_learns_every_event_each_users_latest_included(artifact: Path) -> None:
    c = load_contract(artifact)
    events = walk_events()
    # the measured runs hold events out; the exported weights saw all of them
    assert c.train_data["events"] == len(events)
    assert c.train_data["max_ts"] == max(e["ts"] for e in events)
    assert "every event" in c.hyper_parameters["metrics_from"]


def copy_artifact(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_verify_refuses_a_corrupted_file(artifact: Path, tmp_path: Path) -> None:
    bad = copy_artifact(artifact, tmp_path / "bad")
    emb = np.load(bad / EMBEDDINGS_FILE)
    emb[1, 0] += 1.0
    np.save(bad / EMBEDDINGS_FILE, emb)
    with pytest.raises(ArtifactError, match="sha256"):
        verify_artifact(bad)
    (bad / MODEL_FILE).unlink()
    with pytest.raises(ModelExportError, match="missing"):
        verify_artifact(bad)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("max_len", 0, "max_len"),
        ("format_version", 99, "format_version"),
        ("inputs", [{"name": "x", "dtype": "int64", "shape": ["batch", 8]}], "inputs"),
        ("metrics", {"loo": {"streamrec": {"recall@10": float("nan")}}}, "non-finite"),
        ("surprise", 1, "unknown"),
    ],
)
def test_verify_refuses_a_bad_contract(
    artifact: Path, tmp_path: Path, field: str, value: object, match: str
) -> None:
    bad = copy_artifact(artifact, tmp_path / "bad")
    data = json.loads((bad / CONTRACT_FILE).read_text())
    data[field] = value
    (bad / CONTRACT_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=match):
        verify_artifact(bad)


def test_export_refuses_a_non_empty_directory(artifact: Path) -> None:
    model = SASRec(3, ModelConfig(max_len=4, d=8))
    with pytest.raises(ArtifactError, match="not empty"):
        export_artifact(
            model, ["a", "b", "c"], artifact, version="x", metrics={}, train_data={"min_ts": 0, "max_ts": 0}
        )


def test_splits_hold_out_the_right_items() -> None:
    events = walk_events(n_users=3, length=5)
    loo = leave_one_out(events)
    assert loo.cases == [("u0", 4), ("u1", 4), ("u2", 4)]
    assert all(loo.train[u] == loo.sequences[u][:4] for u in ("u0", "u1", "u2"))
    ts = time_split(events, test_fraction=0.4)
    assert ts.cutoff_ts is not None and ts.max_ts < ts.cutoff_ts
    # 15 events, cutoff at the 10th: 3 users x 3 training items; every later event is a case, in time order
    assert all(len(s) == 3 for s in ts.train.values())
    assert ts.cases == [("u0", 3), ("u1", 3), ("u2", 3), ("u0", 4), ("u1", 4), ("u2", 4)]
    with pytest.raises(NotEnoughDataError):
        leave_one_out(events[:1])


def test_popularity_baseline_reproduces_the_reference_on_ml100k() -> None:
    split = make_split(load_dataset("ml-100k").events, "loo")
    items = item_index(split.train)
    m = evaluate(popularity_ranker(split.train, items), split, items)
    assert round(m["recall@10"], 4) == 0.0859 and round(m["ndcg@10"], 4) == 0.0449


def test_parity_check_catches_a_graph_that_differs_from_the_model(tmp_path: Path) -> None:
    model = SASRec(6, ModelConfig(max_len=5, d=8, n_blocks=1)).eval()
    export_onnx(model, tmp_path / "m.onnx")
    assert check_parity(model, tmp_path / "m.onnx") <= PARITY_TOLERANCE
    with torch.no_grad():
        model.ln_f.bias.add_(0.01)
    with pytest.raises(ParityError, match="parity failed"):
        check_parity(model, tmp_path / "m.onnx")


def test_verify_refuses_a_contract_that_disagrees_with_the_graph(artifact: Path, tmp_path: Path) -> None:
    bad = copy_artifact(artifact, tmp_path / "bad")
    data = json.loads((bad / CONTRACT_FILE).read_text())
    data["max_len"] = 9
    for spec in data["inputs"]:
        spec["shape"] = ["batch", 9]
    (bad / CONTRACT_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="not the contract's"):
        verify_artifact(bad)


def test_verify_refuses_an_unlisted_file(artifact: Path, tmp_path: Path) -> None:
    bad = copy_artifact(artifact, tmp_path / "bad")
    (bad / "model.onnx.data").write_bytes(b"weights nobody checksummed")
    with pytest.raises(ArtifactError, match="not in the contract"):
        verify_artifact(bad)


def test_export_is_one_self_contained_onnx_file(tmp_path: Path) -> None:
    model = SASRec(1700, ModelConfig()).eval()  # ML-100k size: the exporter's default splits weights out
    export_onnx(model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_time_gaps_and_scenarios_are_encoded_as_the_contract_says() -> None:
    from model_export import features
    # first event: 1; same second: 2; 1 s: 3; an hour (3600 s): 2 + floor(log2(3601)) = 13; decades: capped
    ts = [0, 0, 1_000, 3_601_000, 10**13]
    assert gap_buckets(ts).tolist() == [1, 2, 3, 13, features.GAP_BUCKETS - 1]
    assert gap_buckets([]).tolist() == [] and gap_buckets([5]).tolist() == [1]
    assert scenario_ids(["web", "app", None, "tv"], {"web": 2, "app": 3}).tolist() == [2, 3, 1, 1]
    feed = tower_inputs([[4, 5, 6]], [[0, 1_000, 2_000]], [["web", "app", "web"]], 2, {"web": 2, "app": 3},
                        ["item_seq", "time_gaps", "scenarios"])
    # the newest max_len items, left-padded; the oldest kept one keeps its gap to the one before it
    assert feed["item_seq"].tolist() == [[5, 6]] and feed["time_gaps"].tolist() == [[3, 3]]
    assert feed["scenarios"].tolist() == [[3, 2]]


def test_scenario_conditions_the_model() -> None:
    """Two surfaces where the same history leads to different items: only the scenario input tells them apart."""
    seqs, scen, times = {}, {}, {}
    for u in range(60):
        web = u % 2 == 0
        seqs[f"u{u}"] = ["a", "b", "c", "w" if web else "x"] * 3
        scen[f"u{u}"] = ["web" if web else "app"] * 12
        times[f"u{u}"] = list(range(0, 12_000, 1_000))
    cfg = TrainConfig(model=ModelConfig(max_len=8, d=16, n_blocks=1, dropout=0.0), epochs=40, batch_size=32)
    trained = train(seqs, cfg, seed=0, times=times, scenarios=scen)
    row = {item: r for r, item in enumerate(trained.items, start=1)}
    hist = [row[i] for i in ["a", "b", "c"]]
    from model_export.data.splits import History

    ranks = trained.ranker()(
        [History(np.array(hist), np.array([0, 1000, 2000]), (s,) * 3, 3000, s) for s in ("web", "app")]
    )
    assert ranks[0, row["w"]] > ranks[0, row["x"]] and ranks[1, row["x"]] > ranks[1, row["w"]]
