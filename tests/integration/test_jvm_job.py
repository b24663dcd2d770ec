"""The job through real Kafka and Redis: dead letters that point back at their record, event ids applied once,
coalesced writes, and `job rebuild` from the retained topic (the path between job versions no savepoint fits)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer

from jobs import launcher
from jobs.batch_writer import audit_rows
from jobs.producer import EventProducer
from serving.api import create_app
from serving.store import connect, decode_user, key
from streamrec.cli import _api_senders

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


def test_impressions_through_the_sdk_and_the_api_reach_the_users_hash(make_settings):
    settings, config = make_settings(api={"token": "t0ken"})
    k = settings.kafka
    r = connect(settings.redis.url)
    r.flushdb()
    forget, impressions = _api_senders(settings)  # what `streamrec serve` wires: one producer for both
    api = TestClient(create_app(settings, redis_client=r, forget=forget, impressions=impressions))
    auth = {"Authorization": "Bearer t0ken"}

    def user(u: str) -> dict:
        return {f.decode(): v.decode() for f, v in r.hgetall(key("user", u)).items()}

    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        with EventProducer(k.bootstrap, k.events_topic) as p:
            p.send({"user_id": "w1", "item_id": "i0", "type": "view", "ts": TS})
            p.send_impression("w1", ["i1", "i2"], ts=TS + 1, model_version="v1", arm="exp-1:a", scenario="web")
            dup = {"user_id": "w1", "type": "impression", "items": ["i3"], "ts": TS + 2, "event_id": "imp-1"}
            p.send(dup)
            p.send(dup)  # a redelivery: applied once, like any event id
            p.send_impression("w2", ["i1"], ts=TS)  # shown a list, never acted
            p.send_raw(json.dumps({"user_id": "w1", "type": "impression", "items": [], "ts": TS}).encode(), b"w1")
        sent = api.post("/v1/impressions", json={"user_id": "w1", "items": ["i4", "i1"], "ts": TS + 3}, headers=auth)
        assert sent.status_code == 202, sent.json()
        assert sent.json() == {"user_id": "w1", "type": "impression", "items": ["i4", "i1"], "ts": TS + 3}
        assert wait_for(lambda: user("w1").get("impressions") == "3", 90), user("w1")
        assert user("w1")["events"] == "1"  # impressions are no events
        with EventProducer(k.bootstrap, k.events_topic) as p:
            p.send({"user_id": "w1", "item_id": "i1", "type": "click", "ts": TS + 4})
        assert wait_for(lambda: user("w1").get("events") == "2", 60), user("w1")
        assert user("w1")["impressions"] == "3" and decode_user(r.hgetall(key("user", "w1")))["recent"] == ["i0", "i1"]
        assert not r.exists(key("user", "w2"))  # no action yet: no hash, and the job keeps running
        (dead,) = read_topic(k.bootstrap, k.dlq_topic, 1)
        assert json.loads(dead.value)["reason"] == "field 'items' must be a list of 1..100 item ids"
        # A forget clears the counts with the rest: the user's next action starts a hash without impressions.
        assert api.delete("/v1/users/w1", headers=auth).status_code == 202
        assert wait_for(lambda: not r.exists(key("user", "w1")), 60)
        with EventProducer(k.bootstrap, k.events_topic) as p:
            p.send({"user_id": "w1", "item_id": "i5", "type": "view", "ts": TS + 10})
        assert wait_for(lambda: user("w1").get("events") == "1", 60), user("w1")
        assert "impressions" not in user("w1")
        assert launcher.status(settings)["running"]
    finally:
        launcher.stop(settings, say=lambda *_: None)
