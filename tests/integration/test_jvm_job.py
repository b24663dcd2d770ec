"""The job through real Kafka and Redis: dead letters that point back at their record, event ids applied once,
coalesced writes, and `job rebuild` from the retained topic (the path between job versions no savepoint fits)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, KafkaProducer

from jobs import launcher
from jobs.batch_writer import audit_rows
from jobs.producer import EventProducer
from serving.store import connect, key

pytestmark = pytest.mark.integration

TS = 1_700_000_000_000


def counts(r, users) -> dict[str, int]:
    return {u: int(r.hget(key("user", u), "events") or 0) for u in users}


def wait_for(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 60) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, group_id=None)
    out: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < expect:
        out.extend(consumer)
    consumer.close()
    return out


def test_dead_letters_keep_key_headers_and_the_records_position(make_settings):
    settings, config = make_settings()
    k = settings.kafka
    producer = KafkaProducer(bootstrap_servers=k.bootstrap)
    bad = producer.send(k.events_topic, key=b"user-7", value=b'{"user_id": "user-7", "item_id": "i1", "ty',
                        headers=[("trace-id", b"abc-123")]).get(timeout=30)
    good = {"user_id": "user-7", "item_id": "i1", "type": "view", "ts": TS}
    producer.send(k.events_topic, key=b"user-7", value=json.dumps(good).encode()).get(timeout=30)
    producer.close()
    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        (dead,) = read_topic(k.bootstrap, k.dlq_topic, 1)
        assert wait_for(lambda: counts(connect(settings.redis.url), ["user-7"]) == {"user-7": 1}, 60)
    finally:
        launcher.stop(settings, say=lambda *_: None)
    assert dead.key == b"user-7"
    headers = dict(dead.headers)
    assert headers["trace-id"] == b"abc-123"
    assert headers["__connect.errors.topic"] == k.events_topic.encode()
    assert headers["__connect.errors.partition"] == str(bad.partition).encode()
    assert headers["__connect.errors.offset"] == str(bad.offset).encode()
    assert headers["__connect.errors.exception.message"].startswith(b"not JSON")
    envelope = json.loads(dead.value)
    assert (envelope["partition"], envelope["offset"], envelope["key"]) == (bad.partition, bad.offset, "user-7")
    assert envelope["original"] == '{"user_id": "user-7", "item_id": "i1", "ty'


def test_a_redelivered_event_id_is_applied_once_and_a_burst_is_written_once(make_settings):
    # A long flush interval: each user's burst lands in one flush, so it is written (and scored) once.
    settings, config = make_settings(job={"flush_interval_ms": 1000})
    r = connect(settings.redis.url)
    r.flushdb()
    sent = []
    for u in range(5):
        for n in range(20):
            sent.append(
                {"user_id": f"d{u}", "item_id": f"i{n}", "type": "click", "ts": TS + n, "event_id": f"e{u}-{n}"}
            )
    duplicates = [dict(e) for e in sent[::3]]  # the same ids again (a producer retry, a replayed file)
    no_id = [{"user_id": "d0", "item_id": "x", "type": "view", "ts": TS + 99}] * 2  # without an id: both apply
    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for e in sent + duplicates + no_id:
                p.send(e)
        want = Counter(e["user_id"] for e in sent) + Counter(e["user_id"] for e in no_id)
        assert wait_for(lambda: counts(r, want) == dict(want), 90), counts(r, want)
        time.sleep(2.0)  # any late (wrong) duplicate application would show now
        assert counts(r, want) == dict(want)
        records = read_topic(settings.kafka.bootstrap, settings.kafka.recommendations_topic, 1, timeout_s=10)
        audit = [row for m in records for row in audit_rows(m.value)]
    finally:
        launcher.stop(settings, say=lambda *_: None)
    writes = Counter(a["user_id"] for a in audit)
    assert set(writes) == set(want)
    # 20-22 events per user, sent within a second: written a few times at most, never once per event.
    assert all(n <= 4 for n in writes.values()), writes


def test_rebuild_replays_the_retained_topic_into_a_fresh_job(make_settings):
    settings, config = make_settings()
    r = connect(settings.redis.url)
    r.flushdb()
    events = [{"user_id": f"b{i % 6}", "item_id": f"m{i % 11}", "type": "click", "ts": TS + i} for i in range(120)]
    events.append({"user_id": "b5", "type": "forget", "ts": TS + 500})
    want = Counter(e["user_id"] for e in events[:-1])
    want["b5"] = 0
    with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
        for e in events:
            p.send(e)
    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        assert wait_for(lambda: counts(r, want) == dict(want) and launcher.latest_checkpoint(settings), 120)
    finally:
        launcher.stop(settings, say=lambda *_: None)
    old_checkpoints = settings.run_path(settings.flink.checkpoint_dir)
    assert any(old_checkpoints.iterdir())

    # A version whose graph no checkpoint fits rebuilds from the topic instead of restoring.
    r.delete(*[key("user", u) for u in want])  # what the rebuild writes is the rebuilt state, not leftovers
    said: list[str] = []
    job = launcher.rebuild(settings, str(config), say=said.append)
    try:
        assert job["restored_from"] is None
        assert any("before-rebuild" in line for line in said)
        assert list(old_checkpoints.parent.glob(f"{old_checkpoints.name}.before-rebuild-*"))
        assert wait_for(lambda: counts(r, want) == dict(want), 120), counts(r, want)
        assert not r.exists(key("user", "b5"))  # the forget record replays too
    finally:
        launcher.stop(settings, say=lambda *_: None)
