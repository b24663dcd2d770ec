"""`streamrec import` into a real broker, read back; then `streamrec eval --from-kafka` on what was imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kafka import KafkaConsumer, TopicPartition

from model_export.data.event_log import read_items
from streamrec.importer import EXIT_REJECTED

pytestmark = pytest.mark.integration

T0 = 1_700_000_000


def cli(config, *args):
    return subprocess.run([sys.executable, "-m", "streamrec.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300)


def records(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    """(key, value) of every record on the topic, by partition then offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out = []
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for _, recs in sorted(consumer.poll(timeout_ms=500).items()):
                out.extend((r.key, json.loads(r.value)) for r in recs)
        return out
    finally:
        consumer.close()


def test_import_sends_the_good_rows_and_reports_the_bad(make_settings, tmp_path):
    settings, config = make_settings()
    k = settings.kafka
    events = tmp_path / "log.csv"
    events.write_text(
        "customer,product,at,action,stars\n"
        f"c1,p1,{T0},purchase,5\n"  # line 2
        f"c2,p2,{T0 + 60},click,\n"  # line 3
        f"c3,p1,not-a-time,click,\n"  # line 4: bad ts
        f"c1,,{T0 + 120},view,\n"  # line 5: no item
        f"c2,p3,2023-11-14T22:15:20Z,view,\n"  # line 6: ISO time
    )
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": "p1", "name": "Kettle", "tags": "kitchen|steel", "price": 30}) + "\n"
        + json.dumps({"id": "p2", "name": ""}) + "\n"  # line 2: empty title
    )
    rejects = tmp_path / "rejects.jsonl"
    done = cli(config, "import", "--events", str(events), "--items", str(items), "--user-col", "customer",
               "--item-col", "product", "--ts-col", "at", "--ts-unit", "s", "--type-col", "action",
               "--value-col", "stars", "--item-id-col", "id", "--title-col", "name", "--categories-col", "tags",
               "--rejects", str(rejects), "--json")
    assert done.returncode == EXIT_REJECTED, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert {n: summary["events"][n] for n in ("read", "sent", "rejected", "topic")} == {
        "read": 5, "sent": 3, "rejected": 2, "topic": k.events_topic
    }
    assert (summary["items"]["sent"], summary["items"]["rejected"]) == (1, 1)
    assert f"{events}:4: rejected: field 'ts' is neither a number (epoch s) nor an ISO-8601 time" in done.stderr
    assert f"{events}:5: rejected: field 'item_id' must not be empty" in done.stderr
    assert f"{items}:2: rejected: field 'title' must be a non-empty string" in done.stderr
    assert [(r["file"], r["line"]) for r in map(json.loads, rejects.read_text().splitlines())] == [
        (str(items), 2), (str(events), 4), (str(events), 5)
    ]

    sent = sorted(records(k.bootstrap, k.events_topic), key=lambda kv: kv[1]["ts"])
    assert sent == [
        (b"c1", {"user_id": "c1", "item_id": "p1", "type": "purchase", "ts": T0 * 1000, "value": 5.0}),
        (b"c2", {"user_id": "c2", "item_id": "p2", "type": "click", "ts": (T0 + 60) * 1000}),
        (b"c2", {"user_id": "c2", "item_id": "p3", "type": "view", "ts": (T0 + 120) * 1000}),
    ]
    assert [key for key, _ in records(k.bootstrap, k.items_topic)] == [b"p1"]
    assert read_items(k.bootstrap, k.items_topic) == {
        "p1": {"item_id": "p1", "title": "Kettle", "ts": 0, "categories": ["kitchen", "steel"],
               "attributes": {"price": 30}}
    }


def test_eval_from_kafka_on_an_imported_log(make_settings, tmp_path):
    settings, config = make_settings()
    # 30 users, 8 of 12 items each, one minute apart: every user and item passes the 5-core filter.
    rows = [f"u{u},i{(u + 5 * j) % 12},{T0 + 60 * (u * 8 + j)}" for u in range(30) for j in range(8)]
    events = tmp_path / "log.csv"
    events.write_text("user_id,item_id,ts\n" + "\n".join(rows) + "\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{n},Item {n}\n" for n in range(12)))
    done = cli(config, "import", "--events", str(events), "--items", str(items), "--ts-unit", "s", "--type", "click")
    assert done.returncode == 0, done.stderr[-2000:]

    evaluated = cli(config, "eval", "--from-kafka", "--models", "popularity,itemknn", "--no-cold", "--protocol", "loo",
                    "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    out = json.loads(evaluated.stdout)
    assert (out["dataset"], out["protocol"]) == ("events-log", "loo")
    assert set(out["models"]) == {"popularity", "itemknn"}
    # The harness's per-model layout grows (validation/test, seeds): look for the metrics wherever they are.
    for name, entry in out["models"].items():
        found = [v for key, v in leaves(entry) if key in ("recall@10", "ndcg@10") and v is not None]
        assert found and all(0.0 <= v <= 1.0 for v in found), (name, entry)
    assert "read 240 events and 12 items back" in evaluated.stderr


def leaves(obj, key=None):
    """(key, value) of every non-container value inside ``obj``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from leaves(v, key)
    else:
        yield key, obj
