"""The periodic trainer without services: weights in the artifact, warm start, the gate, the schedule, run_once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from model_export.artifact.contract import (
    CONTRACT_FILE,
    EMBEDDINGS_FILE,
    MODEL_FILE,
    PARITY_TOLERANCE,
    WEIGHTS_FILE,
    load_contract,
    sha256_file,
    verify_artifact,
)
from model_export.artifact.export import export_artifact, load_model, parity_inputs, save_weights
from model_export.artifact.registry import Registry
from model_export.data.event_log import MemoryEventLog
from model_export.errors import ArtifactError
from model_export.model import ModelConfig, SASRec
from model_export.train import TrainConfig, train
from model_export.trainer import (
    DECISION_LOG,
    Schedule,
    TrainerResult,
    gate,
    holdout_cutoff,
    run_forever,
    run_once,
)
from serving.scorer import Scorer
from streamrec.config import TrainerConfig
from tests.unit.test_model_export import walk_events

TINY = TrainConfig(model=ModelConfig(max_len=8, d=16, n_blocks=1, dropout=0.0), batch_size=32, lr=1e-2)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = SASRec(5, ModelConfig(max_len=4, d=8, n_blocks=1)).eval()
    out = tmp_path_factory.mktemp("art") / "a"
    return export_artifact(model, list("abcde"), out, version="w", metrics={}, train_data={"min_ts": 1, "max_ts": 2})


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_contract(path: Path, **fields: object) -> None:
    data = json.loads((path / CONTRACT_FILE).read_text())
    data.update(fields)
    (path / CONTRACT_FILE).write_text(json.dumps(data))


# -- weights in the artifact ----------------------------------------------------------------------


def test_weights_round_trip(artifact: Path) -> None:
    contract = verify_artifact(artifact)
    assert WEIGHTS_FILE in contract.files and contract.files[WEIGHTS_FILE] == sha256_file(artifact / WEIGHTS_FILE)
    loaded = load_model(artifact)
    assert loaded is not None and loaded.items == list("abcde")
    assert loaded.model.cfg == ModelConfig(max_len=4, d=8, n_blocks=1) and loaded.model.n_items == 5
    # the rebuilt module computes what the exported graph computes
    feed = parity_inputs(loaded.model, seed=3)
    assert list(feed) == [t.name for t in contract.inputs]
    sess = ort.InferenceSession(str(artifact / MODEL_FILE), providers=["CPUExecutionProvider"])
    (graph,) = sess.run(["user_vector"], feed)
    with torch.no_grad():
        eager = loaded.model.user_vector(*(torch.from_numpy(v) for v in feed.values())).numpy()
    np.testing.assert_allclose(eager, graph, atol=PARITY_TOLERANCE)
    np.testing.assert_array_equal(loaded.model.output_matrix().detach().numpy(), np.load(artifact / EMBEDDINGS_FILE))


def test_an_artifact_without_weights_still_serves_and_trains_from_scratch(artifact: Path, tmp_path: Path) -> None:
    old = copy(artifact, tmp_path / "old")
    (old / WEIGHTS_FILE).unlink()
    files = json.loads((old / CONTRACT_FILE).read_text())["files"]
    del files[WEIGHTS_FILE]
    rewrite_contract(old, files=files)
    verify_artifact(old)
    assert load_model(old) is None
    assert Scorer(old, prefer_gpu=False).contract.n_items == 5


def test_tampered_weights_are_refused(artifact: Path, tmp_path: Path) -> None:
    bad = copy(artifact, tmp_path / "bad")
    raw = bytearray((bad / WEIGHTS_FILE).read_bytes())
    raw[-30] ^= 0xFF
    (bad / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"weights\.pt does not match its sha256"):
        load_model(bad)
    with pytest.raises(ArtifactError, match="sha256"):
        Registry(tmp_path / "models").publish(bad)


def test_weights_of_another_model_are_refused_even_with_a_matching_checksum(artifact: Path, tmp_path: Path) -> None:
    bad = copy(artifact, tmp_path / "bad")
    save_weights(SASRec(6, ModelConfig(max_len=4, d=8, n_blocks=1)), bad / WEIGHTS_FILE)
    files = json.loads((bad / CONTRACT_FILE).read_text())["files"]
    rewrite_contract(bad, files={**files, WEIGHTS_FILE: sha256_file(bad / WEIGHTS_FILE)})
    with pytest.raises(ArtifactError, match="is for 6 items"):
        load_model(bad)
    save_weights(SASRec(5, ModelConfig(max_len=4, d=8, n_blocks=1)), bad / WEIGHTS_FILE)  # same shape, other values
    rewrite_contract(bad, files={**files, WEIGHTS_FILE: sha256_file(bad / WEIGHTS_FILE)})
    with pytest.raises(ArtifactError, match="different item embeddings"):
        load_model(bad)


def test_warm_start_continues_from_the_given_weights_and_index() -> None:
    seqs = {f"u{u}": [f"i{(u + t) % 7}" for t in range(6)] for u in range(10)}
    torch.manual_seed(1)
    start = SASRec(8, ModelConfig(max_len=5, d=8, n_blocks=1))
    index = [f"i{n}" for n in (6, 5, 4, 3, 2, 1, 0)] + ["never-seen"]  # not the sorted index train() would build
    before = {k: v.clone() for k, v in start.state_dict().items()}
    cfg = TrainConfig(model=ModelConfig(max_len=99), epochs=1, batch_size=4, lr=1e-4)
    tm = train(seqs, cfg, seed=0, init=(start, index))
    assert tm.model is start and tm.items == index and tm.config.model == start.cfg
    moved = max(float((v - before[k]).abs().max()) for k, v in tm.model.named_parameters())
    assert 0 < moved < 1e-2  # trained, but from where it started
    with pytest.raises(ValueError, match="lacks 1 items"):
        train({"u": ["i0", "new"]}, cfg, init=(start, index))


# -- the rule, the window, the schedule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("cand", "serv", "delta", "promote"),
    [
        (0.20, 0.10, 0.0, True),
        (0.10, 0.10, 0.0, True),  # not worse is enough
        (0.09, 0.10, 0.0, False),
        (0.11, 0.10, 0.02, False),  # a required gain not met
        (0.12, 0.10, 0.02, True),
        (0.09, 0.10, -0.02, True),  # a tolerated loss
        (0.07, 0.10, -0.02, False),
    ],
)
def test_gate_rule(cand: float, serv: float, delta: float, promote: bool) -> None:
    ok, why = gate({"ndcg@10": cand, "mrr": 0.0}, {"ndcg@10": serv, "mrr": 1.0}, "ndcg@10", delta)
    assert ok is promote
    assert f"{cand:.4f}" in why and f"{serv:.4f}" in why and ("<" in why) is not promote


def test_gate_without_a_serving_model_promotes() -> None:
    assert gate({"mrr": 0.0}, None, "mrr", 0.5) == (True, "no serving version to compare with (bootstrap)")


def test_holdout_window_is_the_newest_share_with_a_floor_and_leaves_training_data() -> None:
    ts = list(range(100, 0, -10))  # 10 events, any order
    assert holdout_cutoff(ts, 0.2, 1) == 90  # newest 2
    assert holdout_cutoff(ts, 0.2, 5) == 60  # at least 5
    assert holdout_cutoff(ts, 0.99, 1) == 20  # never all of them
    assert holdout_cutoff([5, 5, 5, 9], 0.5, 1) == 5  # ties at the cutoff are all held out
    with pytest.raises(ValueError):
        holdout_cutoff([1], 0.5, 1)


def test_schedule_runs_on_interval_on_new_records_and_backs_off_after_failure() -> None:
    s = Schedule(interval_s=100, min_new_events=10, retry_s=1)
    assert s.due(0, 0) == "first run"
    s.ran(0, 0, ok=True)
    assert s.due(50, 9) is None
    assert s.due(50, 10) == "10 new records on the events topic"
    assert s.due(100, 0) == "100 s since the last run"
    s.ran(50, 10, ok=False)
    assert s.due(50.5, 100) is None and s.due(51, 10) is not None  # retry after 1 s, whatever arrived
    s.ran(51, 10, ok=False)
    assert s.due(52.9, 10) is None and s.due(53, 10) == "retry 2 after a failed run"  # then 2 s
    for _ in range(10):
        s.ran(53, 10, ok=False)
    assert s.due(152, 10) is None and s.due(153, 10) is not None  # capped at interval_s
    s.ran(153, 10, ok=True)
    assert s.due(154, 19) is None and s.due(154, None) is None


# -- run_once on an in-memory log --------------------------------------------------------------


def catalog(n_items: int) -> list[dict]:
    genres = ["Comedy", "Drama", "Sci-Fi", "Horror", "Romance"]
    return [
        {"item_id": f"i{k}", "title": f"Movie number {k}", "categories": [genres[k % 5]], "ts": 0}
        for k in range(n_items)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, list[TrainerResult], list, MemoryEventLog]:
    """Skip (empty log), bootstrap, skip (nothing new), then a refused fine-tune with 10 new items."""
    root = tmp_path_factory.mktemp("trainer")
    registry = Registry(root / "models")
    cfg = TrainerConfig(min_new_events=100, min_holdout_events=20, epochs=8, fine_tune_epochs=2, max_train_seconds=None)
    first = walk_events(n_users=30, n_items=30, length=8)  # 240 events
    t_end = max(e["ts"] for e in first)
    later = [{**e, "ts": t_end + 1000 + e["ts"]} for e in walk_events(n_users=30, n_items=40, length=6, seed=1)]
    log = MemoryEventLog(item_records=catalog(40))
    promoted: list = []
    kw = {"train_config": TINY, "on_promote": lambda v, ev: promoted.append((v, len(ev))), "work_dir": root}
    results = [run_once(log, registry, cfg, **kw)]
    log.extend(first)
    results.append(run_once(log, registry, cfg, **kw))
    results.append(run_once(log, registry, cfg, **kw))
    log.extend(later)
    results.append(run_once(log, registry, replace_cfg(cfg, gate_min_delta=1.0), **kw))
    return registry, results, promoted, log


def replace_cfg(cfg: TrainerConfig, **changes: object) -> TrainerConfig:
    return TrainerConfig.model_validate({**cfg.model_dump(), **changes})


def test_run_once_skips_bootstraps_skips_and_refuses(runs: tuple) -> None:
    registry, results, promoted, _ = runs
    assert [r.decision for r in results] == ["skipped", "promoted", "skipped", "refused"]
    empty, boot, idle, refused = results
    assert "0 events in the log < min_new_events=100" in empty.reason
    assert boot.candidate == "v0001" and boot.serving is None and not boot.warm_start
    assert promoted == [("v0001", 240)]
    assert idle.candidate is None and "newer than v0001's training data" in idle.reason
    assert idle.new_events == boot.window["events"]  # the held-out window is new to the promoted model
    assert refused.candidate == "v0002" and refused.serving == "v0001" and registry.current() == "v0001"
    assert refused.candidate_metrics is not None and refused.serving_metrics is not None
    assert "< serving" in refused.reason and "v0001 stays in service" in refused.reason


def test_the_window_is_new_to_the_serving_model_and_unseen_by_the_candidate(runs: tuple) -> None:
    registry, results, _, _ = runs
    boot, refused = results[1], results[3]
    serving_data = load_contract(registry.path("v0001")).train_data
    cand_data = load_contract(registry.path("v0002")).train_data
    assert refused.window["min_ts"] > serving_data["max_ts"]
    assert cand_data["max_ts"] < refused.window["cutoff_ts"] == cand_data["holdout"]["cutoff_ts"]
    assert refused.window["cases"] == refused.candidate_metrics["cases"] == refused.serving_metrics["cases"]
    assert boot.window["events"] >= 20


def test_fine_tune_starts_from_the_parent_and_grows_new_items_from_text(runs: tuple) -> None:
    registry, results, _, _ = runs
    refused = results[3]
    contract = load_contract(registry.path("v0002"))
    assert contract.parent == "v0001"
    assert refused.init == contract.hyper_parameters["init"]
    assert refused.init["from"] == "v0001" and refused.init["copied"] == 30 and refused.init["from_text"] == 10
    parent, child = load_model(registry.path("v0001")), load_model(registry.path("v0002"))
    assert parent is not None and child is not None
    assert child.items[:30] == parent.items and sorted(child.items[30:]) == [f"i{k}" for k in range(30, 40)]
    # Two epochs from the parent's weights stay close to them; a model from scratch would not.
    for name, value in parent.model.state_dict().items():
        if value.is_floating_point() and value.dim() == 2 and name not in ("item_emb.weight", "text_feat"):
            p, c = value.flatten(), child.model.state_dict()[name].flatten()
            assert float(torch.nn.functional.cosine_similarity(p, c, dim=0)) > 0.5, name
    metrics = contract.metrics["window"]
    assert metrics["candidate"] == refused.candidate_metrics and metrics["serving"] == refused.serving_metrics
    assert {"recall@10", "ndcg@10", "mrr"} <= set(metrics["popularity"])


def test_decision_log_has_one_json_line_per_run(runs: tuple) -> None:
    registry, results, _, _ = runs
    lines = [json.loads(line) for line in (registry.root / DECISION_LOG).read_text().splitlines()]
    assert [line["decision"] for line in lines] == ["skipped", "promoted", "skipped", "refused"]
    assert lines[-1] == json.loads(results[-1].to_json())
    keys = {"ts", "decision", "reason", "candidate", "serving", "metric", "candidate_metrics", "serving_metrics",
            "window", "seconds"}
    assert all(keys <= set(line) for line in lines)
    assert lines[-1]["metric"] == "ndcg@10" and lines[-1]["serving_metrics"]["ndcg@10"] >= 0


def test_a_corrupt_serving_version_fails_the_run_clearly(runs: tuple, tmp_path: Path) -> None:
    registry, _, _, log = runs
    reg = Registry(tmp_path / "models")
    reg.promote(reg.publish(registry.path("v0001")))
    (reg.path("v0001") / WEIGHTS_FILE).write_bytes(b"tampered")
    cfg = TrainerConfig(min_new_events=100, min_holdout_events=20)
    with pytest.raises(ArtifactError, match=r"v0001: weights\.pt does not match its sha256"):
        run_once(log, reg, cfg, train_config=TINY, work_dir=tmp_path)
    assert reg.versions() == ["v0001"]
    last = json.loads((reg.root / DECISION_LOG).read_text().splitlines()[-1])
    assert last["decision"] == "failed" and "ArtifactError" in last["reason"]


def test_a_serving_version_without_weights_is_followed_by_a_model_from_scratch(
    runs: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="model_export")
    registry, _, _, log = runs
    old = copy(registry.path("v0001"), tmp_path / "old")  # as `streamrec train` exported before weights.pt
    (old / WEIGHTS_FILE).unlink()
    files = json.loads((old / CONTRACT_FILE).read_text())["files"]
    del files[WEIGHTS_FILE]
    rewrite_contract(old, files=files)
    reg = Registry(tmp_path / "models")
    reg.promote(reg.publish(old))
    cfg = TrainerConfig(
        min_new_events=100, min_holdout_events=20, epochs=2, max_train_seconds=None, gate_min_delta=-1,
        cold_exposure=0.5,
    )

    def hook(version: str, events: object) -> None:
        raise ConnectionError("redis away")

    result = run_once(log, reg, cfg, train_config=TINY, work_dir=tmp_path, on_promote=hook)

    assert result.candidate == "v0002" and not result.warm_start
    assert result.init == {"from": None, "reason": "v0001 has no weights.pt"}
    out = caplog.text
    assert "v0001 carries no weights" in out
    # a failing promote hook leaves the promotion, and its decision line, in place
    assert result.decision == "promoted" and reg.current() == "v0002"
    assert "v0002 is promoted, but the on_promote hook failed: redis away" in out
    assert decisions(reg) == ["promoted"]
    contract = load_contract(reg.path("v0002"))
    assert contract.parent == "v0001" and contract.hyper_parameters["epochs_run"] == 2
    assert contract.hyper_parameters["cold_exposure"] == 0.5  # the trainer's setting reached the training
    assert WEIGHTS_FILE in contract.files  # the next run can warm-start from this one


# -- run_forever ------------------------------------------------------------------------------------


class FlakyLog(MemoryEventLog):
    """Fails its first read, as a broker that is not up yet would."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.closed = False

    def events(self) -> list[dict]:
        self.reads += 1
        if self.reads == 1:
            raise RuntimeError("broker not available")
        return super().events()

    def close(self) -> None:
        self.closed = True


def decisions(registry: Registry) -> list[str]:
    path = registry.root / DECISION_LOG
    return [json.loads(line)["decision"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_run_forever_survives_a_failed_run_and_runs_on_new_records(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    log = FlakyLog()
    cfg = TrainerConfig(interval_s=3600, check_interval_s=0.05, min_new_events=5, min_holdout_events=1)
    stop = threading.Event()
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(run_forever(log, registry, cfg, stop=stop)))
    thread.start()
    try:
        wait_for(lambda: decisions(registry) == ["failed", "skipped"])  # the retry came at the next tick
        time.sleep(0.3)
        assert decisions(registry) == ["failed", "skipped"]  # nothing new: no run before interval_s
        log.extend([{"user_id": "u", "item_id": f"i{n}", "type": "skip", "ts": n} for n in range(5)])
        wait_for(lambda: decisions(registry) == ["failed", "skipped", "skipped"])
    finally:
        stop.set()
        thread.join(10)
    assert out == [3] and log.closed


def test_run_forever_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    cfg = TrainerConfig(interval_s=3600, check_interval_s=0.05, min_new_events=5, min_holdout_events=1)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.monotonic()
    assert run_forever(MemoryEventLog(), registry, cfg) == 1
    assert time.monotonic() - t0 < 5
    assert signal.getsignal(signal.SIGTERM) == before
    assert decisions(registry) == ["skipped"]


def test_trainer_options_are_validated() -> None:
    with pytest.raises(ValueError, match="min_holdout_events"):
        TrainerConfig(min_new_events=100, min_holdout_events=100)
    assert replace(TINY, epochs=2).epochs == 2
