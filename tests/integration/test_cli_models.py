"""`streamrec train --from-kafka --promote` and `streamrec models list|register|promote|rollback` on real services."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.producer import EventProducer
from model_export.data.datasets import load_dataset
from serving.store import MODEL_CURRENT, MODEL_HISTORY, POPULAR, connect

pytestmark = pytest.mark.integration


def cli(config, *args):
    return subprocess.run([sys.executable, "-m", "streamrec.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=600)


def test_train_from_kafka_and_the_registry(make_settings, tmp_path):
    settings, config = make_settings()
    r = connect(settings.redis.url)
    r.flushdb()
    data = load_dataset("ml-100k")
    events = data.events[:2000]
    seen = {e["item_id"] for e in events}
    items = [i for i in data.items if i["item_id"] in seen]
    with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic, settings.kafka.items_topic) as p:
        for item in items:
            p.send_item(item)
        for e in events:
            p.send(e)

    trained = cli(config, "train", "--from-kafka", "--epochs", "1", "--promote")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"read 2000 events and {len(items)} items back" in trained.stdout
    assert r.get(MODEL_CURRENT) == b"v0001"
    assert len(json.loads(r.get(POPULAR))["items"]) > 10

    rows = json.loads(cli(config, "models", "list", "--json").stdout)
    assert [(row["version"], row["promoted"], row["parent"]) for row in rows] == [("v0001", True, None)]
    assert set(rows[0]) == {"version", "path", "parent", "metrics", "promoted"}
    assert {"time", "loo"} <= set(rows[0]["metrics"])
    contract = json.loads((Path(rows[0]["path"]) / "contract.json").read_text())
    assert contract["text_encoder_file"] and contract["text_projection_file"]  # the catalog fed the text tower

    artifact = tmp_path / "copy"
    shutil.copytree(rows[0]["path"], artifact)
    assert cli(config, "models", "register", str(artifact)).returncode == 0
    assert cli(config, "models", "promote", "latest").returncode == 0
    assert r.get(MODEL_CURRENT) == b"v0002"
    assert json.loads(r.lindex(MODEL_HISTORY, 0))["version"] == "v0001"
    assert cli(config, "models", "rollback").returncode == 0
    assert r.get(MODEL_CURRENT) == b"v0001"

    (artifact / "model.onnx").write_bytes(b"not a model")
    refused = cli(config, "models", "register", str(artifact))
    assert refused.returncode == 2 and "error: refused:" in refused.stderr and "Traceback" not in refused.stderr
    assert [row["version"] for row in json.loads(cli(config, "models", "list", "--json").stdout)] == ["v0001", "v0002"]
