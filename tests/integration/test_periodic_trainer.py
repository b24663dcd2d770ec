"""The periodic trainer on real Kafka and Redis: bootstrap, warm start, refusal, rollback, corrupt artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jobs.producer import EventProducer
from model_export.artifact.contract import CONTRACT_FILE, MODEL_FILE, WEIGHTS_FILE, load_contract
from model_export.artifact.export import load_model
from model_export.artifact.registry import Registry
from model_export.data.datasets import load_dataset
from model_export.data.event_log import KafkaEventLog
from model_export.errors import ArtifactError
from model_export.model import ModelConfig
from model_export.train import TrainConfig
from model_export.trainer import DECISION_LOG, TrainerResult, run_once
from serving.store import MODEL_CURRENT, POPULAR, connect
from streamrec.config import Settings
from streamrec.publish import announce

pytestmark = pytest.mark.integration

# A few hundred ML-100k ratings: a bootstrap chunk, then a chunk that brings ~150 items first seen.
FIRST, SECOND = slice(0, 300), slice(300, 600)
TRAINER = {"min_new_events": 100, "min_holdout_events": 20, "epochs": 3, "fine_tune_epochs": 2,
           "max_train_seconds": 30}
TINY = TrainConfig(model=ModelConfig(max_len=16, d=16, n_blocks=1, dropout=0.0), batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


def produce(settings: Settings, data, part: slice) -> int:
    """Send a slice of the ratings, and the catalog records of their items, to the test's topics."""
    events = data.events[part]
    wanted = {e["item_id"] for e in events}
    k = settings.kafka
    with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
        for item in data.items:
            if item["item_id"] in wanted:
                p.send_item(item)
        for e in events:
            p.send(e)
    return len(events)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300)


def trainer_run(settings: Settings, **overrides: object) -> TrainerResult:
    """One run_once on the test's topics and registry, announcing promotions in Redis like the CLI."""
    k = settings.kafka
    config = settings.trainer.model_copy(update=overrides)
    return run_once(
        KafkaEventLog(k.bootstrap, k.events_topic, k.items_topic),
        Registry(settings.path(settings.models.registry_dir)),
        config,
        train_config=TINY,
        on_promote=lambda version, events: announce(settings, version),
        work_dir=settings.run_dir,
        source=k.events_topic,
    )


def decision_lines(registry: Registry) -> list[dict]:
    return [json.loads(line) for line in (registry.root / DECISION_LOG).read_text().splitlines()]


def test_bootstrap_through_the_cli_promotes_and_announces_the_first_version(make_settings, ml100k):
    settings, config = make_settings(trainer=TRAINER)
    r = connect(settings.redis.url)
    r.flushdb()
    produce(settings, ml100k, FIRST)

    ran = cli(config, "trainer", "--once")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "trainer: promoted v0001 on" in ran.stderr and "(bootstrap)" in ran.stderr  # the trainer logs

    registry = Registry(settings.path(settings.models.registry_dir))
    assert registry.current() == "v0001"
    assert r.get(MODEL_CURRENT) == b"v0001" and len(json.loads(r.get(POPULAR))["items"]) > 10
    contract = load_contract(registry.path("v0001"))
    assert contract.parent is None and WEIGHTS_FILE in contract.files
    assert contract.train_data["source"] == settings.kafka.events_topic
    assert contract.train_data["events"] + contract.train_data["holdout"]["events"] == 300
    (line,) = decision_lines(registry)
    assert line["decision"] == "promoted" and line["candidate"] == "v0001" and line["serving"] is None
    assert line["window"]["events"] == 60 and line["candidate_metrics"]["cases"] == line["window"]["cases"] > 0

    # Nothing new since (only the held-out window is newer than v0001's data): the next run skips, saying why.
    again = trainer_run(settings)
    assert again.decision == "skipped" and again.reason.startswith("60 events newer than v0001's training data")
    assert registry.versions() == ["v0001"] and decision_lines(registry)[-1]["decision"] == "skipped"


def test_fine_tune_from_the_serving_version_is_promoted(make_settings, ml100k):
    settings, _ = make_settings(trainer=TRAINER)
    r = connect(settings.redis.url)
    r.flushdb()
    produce(settings, ml100k, FIRST)
    boot = trainer_run(settings)
    assert (boot.decision, boot.candidate, boot.warm_start) == ("promoted", "v0001", False)
    produce(settings, ml100k, SECOND)

    # The gate's comparison is pinned by the refusal test and the unit tests; on 73 test cases of a tiny
    # model the real margin is a coin toss, so any candidate passes here.
    result = trainer_run(settings, gate_min_delta=-1.0)

    assert result.decision == "promoted", result.reason
    assert (result.candidate, result.serving) == ("v0002", "v0001")
    registry = Registry(settings.path(settings.models.registry_dir))
    assert registry.current() == "v0002" and r.get(MODEL_CURRENT) == b"v0002"
    contract = load_contract(registry.path("v0002"))
    assert contract.parent == "v0001"
    # Warm start: the result and the contract say so, and the weights show it.
    assert result.warm_start and result.init == contract.hyper_parameters["init"]
    assert result.init["from"] == "v0001" and result.init["copied"] == load_contract(registry.path("v0001")).n_items
    assert result.init["from_text"] > 100 and result.init["mean"] == 0  # new items got rows from the items topic
    parent, child = load_model(registry.path("v0001")), load_model(registry.path("v0002"))
    assert parent is not None and child is not None and child.items[: len(parent.items)] == parent.items
    # Every matrix (embeddings, projections) is still close to the parent's: random inits would be orthogonal.
    for name, value in parent.model.state_dict().items():
        if value.is_floating_point() and value.dim() == 2:
            kept = child.model.state_dict()[name][: len(value)].flatten()
            assert float(torch.nn.functional.cosine_similarity(value.flatten(), kept, dim=0)) > 0.5, name
    # Both models were measured on the same window, newer than the parent's training data.
    assert result.window["min_ts"] > load_contract(registry.path("v0001")).train_data["max_ts"]
    assert result.candidate_metrics["cases"] == result.serving_metrics["cases"] == result.window["cases"] > 0
    assert contract.metrics["window"]["candidate"] == result.candidate_metrics
    assert contract.metrics["window"]["serving"] == result.serving_metrics
    assert [line["decision"] for line in decision_lines(registry)] == ["promoted", "promoted"]


def test_a_candidate_that_does_not_meet_the_gate_is_registered_not_promoted(make_settings, ml100k):
    settings, _ = make_settings(trainer=TRAINER)
    r = connect(settings.redis.url)
    r.flushdb()
    produce(settings, ml100k, FIRST)
    assert trainer_run(settings).candidate == "v0001"
    produce(settings, ml100k, SECOND)

    result = trainer_run(settings, gate_min_delta=1.0)  # a metric in [0, 1] cannot gain 1.0

    registry = Registry(settings.path(settings.models.registry_dir))
    assert result.decision == "refused" and result.candidate == "v0002"
    assert registry.versions() == ["v0001", "v0002"] and registry.current() == "v0001"
    assert r.get(MODEL_CURRENT) == b"v0001"
    line = decision_lines(registry)[-1]
    assert line["decision"] == "refused" and line["metric"] == "ndcg@10"
    cand, serv = line["candidate_metrics"]["ndcg@10"], line["serving_metrics"]["ndcg@10"]
    assert f"ndcg@10 {cand:.4f} < serving {serv:.4f} + min_delta 1" in line["reason"]
    assert [row["promoted"] for row in Registry(registry.root).list_versions()] == [True, False]


def test_rollback_after_a_promotion_returns_to_the_previous_version_in_redis_too(make_settings, ml100k):
    settings, config = make_settings(trainer=TRAINER)
    r = connect(settings.redis.url)
    r.flushdb()
    produce(settings, ml100k, FIRST)
    trainer_run(settings)
    produce(settings, ml100k, SECOND)
    assert trainer_run(settings, gate_min_delta=-1.0).decision == "promoted"  # any candidate passes
    assert r.get(MODEL_CURRENT) == b"v0002"

    rolled = cli(config, "models", "rollback")
    assert rolled.returncode == 0 and "serving v0001" in rolled.stdout
    registry = Registry(settings.path(settings.models.registry_dir))
    assert registry.current() == "v0001" and r.get(MODEL_CURRENT) == b"v0001"
    assert [(h["action"], h["version"]) for h in registry.history()][-1] == ("rollback", "v0001")
    assert cli(config, "models", "promote", "v0002").returncode == 0 and r.get(MODEL_CURRENT) == b"v0002"


def test_corrupt_or_incompatible_artifacts_are_refused_by_register_and_promote(make_settings, ml100k, tmp_path):
    settings, config = make_settings(trainer=TRAINER)
    r = connect(settings.redis.url)
    r.flushdb()
    produce(settings, ml100k, FIRST)
    trainer_run(settings)
    registry = Registry(settings.path(settings.models.registry_dir))
    assert r.get(MODEL_CURRENT) == b"v0001"

    tampered = shutil.copytree(registry.path("v0001"), tmp_path / "tampered")
    (tampered / MODEL_FILE).write_bytes((tampered / MODEL_FILE).read_bytes()[:-8] + b"tampered")
    refused = cli(config, "models", "register", str(tampered))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "error: refused: invalid model artifact" in refused.stderr
    assert "model.onnx does not match its sha256" in refused.stderr

    incompatible = shutil.copytree(registry.path("v0001"), tmp_path / "incompatible")
    contract = json.loads((incompatible / CONTRACT_FILE).read_text())
    (incompatible / CONTRACT_FILE).write_text(json.dumps({**contract, "format_version": 99}))
    refused = cli(config, "models", "register", str(incompatible))
    assert refused.returncode == 2 and "format_version 99 (this code reads 1)" in refused.stderr
    assert registry.versions() == ["v0001"]

    # A registered version whose file was changed behind the registry's back cannot be promoted.
    good = cli(config, "models", "register", str(registry.path("v0001")))
    assert good.returncode == 0 and "registered v0002" in good.stdout
    (registry.path("v0002") / WEIGHTS_FILE).write_bytes(b"tampered")
    refused = cli(config, "models", "promote", "v0002")
    assert refused.returncode == 2 and "v0002: weights.pt does not match its sha256" in refused.stderr
    with pytest.raises(ArtifactError, match="sha256"):
        registry.promote("v0002")
    assert registry.current() == "v0001" and r.get(MODEL_CURRENT) == b"v0001"


def test_the_event_log_counts_records_and_keeps_the_latest_item_record(make_settings):
    settings, _ = make_settings()
    k = settings.kafka
    log = KafkaEventLog(k.bootstrap, k.events_topic, k.items_topic)
    try:
        assert log.end() == 0 and log.events() == [] and log.items() == {}
        with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
            p.send_item({"item_id": "a", "title": "Old title", "ts": 1})
            p.send_item({"item_id": "b", "title": "B", "categories": ["Drama"], "ts": 1})
            p.send_item({"item_id": "a", "title": "New title", "text": "upserted", "ts": 2})
            for n in range(5):
                p.send({"user_id": f"u{n % 2}", "item_id": "a", "type": "click", "ts": 10 - n})
            p.send({"user_id": "u0", "item_id": "b", "type": "skip", "ts": 20})
            p.send_raw(b"not json")
        assert log.end() == 7  # every record counts towards the trigger, usable or not
        assert [e["ts"] for e in log.events()] == [6, 7, 8, 9, 10]  # usable ones, in event-time order
        items = log.items()
        assert set(items) == {"a", "b"} and items["a"]["title"] == "New title" and items["a"]["text"] == "upserted"
    finally:
        log.close()
