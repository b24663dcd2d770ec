"""`streamrec dlq list|replay` against a real Kafka: dead letters of both kinds, read back, filtered and re-sent."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from jobs.dlq import CONNECT_PREFIX, REPLAYED_FROM, read_dead_letters, replay
from streamrec.events import dead_letter

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)
HOUR = 3_600_000
EVENT_TS = 1_700_000_000_000


def jvm_dead_letter(topic: str, original: bytes, key: bytes | None, reason: str, partition: int, offset: int,
                    failed_at: int, headers: list[tuple[str, bytes]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) as DeadLetterSink.java writes them: the original headers, then the context headers."""
    env: dict = {"reason": reason, "topic": topic, "partition": partition, "offset": offset, "timestamp": EVENT_TS}
    if key is not None:
        env["key_b64"] = base64.b64encode(key).decode()
        env["key"] = key.decode()
    env["original_b64"] = base64.b64encode(original).decode()
    env["failed_at"] = failed_at
    env["original"] = original.decode()
    context = [
        (CONNECT_PREFIX + "topic", topic.encode()),
        (CONNECT_PREFIX + "partition", str(partition).encode()),
        (CONNECT_PREFIX + "offset", str(offset).encode()),
        (CONNECT_PREFIX + "exception.message", reason.encode()),
        (CONNECT_PREFIX + "stage", b"VALUE_CONVERTER"),
    ]
    return json.dumps(env).encode(), headers + context


def produce_dead_letters(settings) -> None:
    """Three dead letters of the events (JVM path; one old, one not a JSON object) and one of the items."""
    k = settings.kafka
    producer = KafkaProducer(bootstrap_servers=k.bootstrap, acks="all")

    def jvm(original: bytes, key: bytes, reason: str, offset: int, failed_at: int, headers: list) -> None:
        value, all_headers = jvm_dead_letter(k.events_topic, original, key, reason, 1, offset, failed_at, headers)
        producer.send(k.dlq_topic, key=key, value=value, headers=all_headers, timestamp_ms=EVENT_TS)

    jvm(json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "ts": -5}).encode(), b"u1",
        "field 'ts': must not be negative", 10, NOW - 3 * HOUR, [("trace-id", b"t10"), ("bin", b"\x00\xff")])
    jvm(json.dumps({"user_id": "u2", "item_id": "i2", "type": "teleport", "ts": 1}).encode(), b"u2",
        "field 'type': unknown TYPE", 11, NOW - 1000, [("trace-id", b"t11")])
    jvm(b'["a", "list"]', b"u3", "not a JSON object", 12, NOW - 500, [])
    # The items' path (streamrec.events.dead_letter): no key, no headers, no source partition or offset.
    items_value = dead_letter(b'{"item_id": "i9", "title": ""}', "field 'title': must be non-empty", k.items_topic)
    producer.send(k.dlq_topic, value=items_value)
    producer.flush()
    producer.close()


def consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    consumer.close()
    return out


def test_read_filters_and_replay_resends(make_settings):
    settings, _ = make_settings()
    k = settings.kafka
    produce_dead_letters(settings)

    letters = read_dead_letters(settings)
    assert len(letters) == 4
    assert [r.failed_at for r in letters] == sorted(r.failed_at for r in letters)  # oldest failure first
    by_topic = {r.topic for r in letters}
    assert by_topic == {k.events_topic, k.items_topic}
    first = letters[0]
    assert (first.key, first.partition, first.offset, first.timestamp) == (b"u1", 1, 10, EVENT_TS)
    assert first.headers == (("trace-id", b"t10"), ("bin", b"\x00\xff"))  # context headers left out
    assert json.loads(first.original)["ts"] == -5
    item = next(r for r in letters if r.topic == k.items_topic)
    assert (item.key, item.headers, item.partition, item.offset) == (None, (), None, None)

    recent = read_dead_letters(settings, since_ms=NOW - HOUR)
    assert len(recent) == 3 and first not in recent
    assert [r.offset for r in read_dead_letters(settings, reason="FIELD 'TYPE'")] == [11]
    assert len(read_dead_letters(settings, reason="field", limit=2)) == 2
    assert read_dead_letters(settings, reason="no such reason") == []

    # Replay the events' dead letters with a fix: the one that is not a JSON object is skipped, not sent.
    to_replay = [r for r in letters if r.topic == k.events_topic]
    report = replay(settings, to_replay, fix={"ts": EVENT_TS, "type": "view"})
    assert report.sent == 2 and not report.failed
    assert [s.reason.split(":")[0] for s in report.skipped] == ["cannot fix"]

    sent = consume(k.bootstrap, k.events_topic, expect=2)
    assert len(sent) == 2
    by_key = {m.key: m for m in sent}
    assert set(by_key) == {b"u1", b"u2"}
    for m, r in ((by_key[b"u1"], to_replay[0]), (by_key[b"u2"], to_replay[1])):
        value = json.loads(m.value)
        assert value["ts"] == EVENT_TS and value["type"] == "view" and value["user_id"] == m.key.decode()
        assert m.timestamp == EVENT_TS  # the original record's timestamp: record timestamps are event times
        assert m.headers == [*r.headers, (REPLAYED_FROM, f"{k.dlq_topic}/{r.dlq_partition}/{r.dlq_offset}".encode())]

    # The items' dead letter, replayed as it is: keyed by its item id (the items topic's key), no headers but ours.
    report = replay(settings, [item], fix={"title": "Fixed"})
    assert report.sent == 1
    [m] = consume(k.bootstrap, k.items_topic, expect=1)
    assert m.key == b"i9" and json.loads(m.value) == {"item_id": "i9", "title": "Fixed"}
    assert m.headers == [(REPLAYED_FROM, f"{k.dlq_topic}/{item.dlq_partition}/{item.dlq_offset}".encode())]

    # A dry run sends nothing.
    before = len(consume(k.bootstrap, k.events_topic, expect=3, timeout_s=2))
    report = replay(settings, to_replay, dry_run=True)
    assert report.sent == 0 and len(report.replayed) == 3
    assert len(consume(k.bootstrap, k.events_topic, expect=before + 1, timeout_s=2)) == before


def test_read_of_a_missing_topic_is_empty(make_settings):
    settings, _ = make_settings()
    missing = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"dlq_topic": "no-such-dlq"})})
    assert read_dead_letters(missing) == []


def cli(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_list_and_replay(make_settings):
    settings, config = make_settings()
    k = settings.kafka
    produce_dead_letters(settings)

    out = cli(config, "dlq", "list", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 4
    first = rows[0]
    assert (first["topic"], first["partition"], first["offset"], first["key"]) == (k.events_topic, 1, 10, "u1")
    assert json.loads(first["original"])["ts"] == -5
    assert first["headers"][0] == {"key": "trace-id", "value": "t10", "value_b64": "dDEw"}
    assert first["headers"][1]["value"] is None and base64.b64decode(first["headers"][1]["value_b64"]) == b"\x00\xff"

    out = cli(config, "dlq", "list", "--json", "--since", "1h", "--reason", "Title")
    assert out.returncode == 0, out.stderr
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["topic"] == k.items_topic and row["key"] is None and row["headers"] == []

    table = cli(config, "dlq", "list", "--limit", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("failed_at (UTC)") and lines[-1] == f"2 dead letters on {k.dlq_topic}"
    assert f"{k.events_topic}/1/10" in lines[1] and "u1" in lines[1] and "field 'ts'" in lines[1]

    dry = cli(config, "dlq", "replay", "--reason", "field 'type'", "--set", 'type="view"', "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would send" in dry.stdout and "(fixed)" in dry.stdout and "dry run: nothing sent" in dry.stdout

    sent = cli(config, "dlq", "replay", "--reason", "field 'type'", "--set", 'type="view"')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[-1].startswith("1 sent, 0 skipped of 1 dead letters")
    [m] = consume(k.bootstrap, k.events_topic, expect=1)
    assert m.key == b"u2" and json.loads(m.value)["type"] == "view"

    bad = cli(config, "dlq", "replay", "--set", "type=view")
    assert bad.returncode == 2 and "is not JSON" in bad.stderr
