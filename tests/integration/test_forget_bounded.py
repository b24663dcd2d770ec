"""`forget` records through the job graph on bounded inputs (jobs.testing doubles) with real Redis, all in one writer
batch, so the order inside a batch counts (delete first, then what came after the record).

Parallelism 1 only: the in-memory source hands records round-robin to parallel subtasks, which reorders one user's
records, where Kafka keeps a key's records in order on its partition. tests/e2e/test_forget.py runs the same path
through Kafka at parallelism 2.
"""

from __future__ import annotations

import json

import pytest

from jobs.batch_writer import audit_rows
from jobs.interest import build_interest_job
from jobs.kafka_io import make_env
from jobs.testing import collect, records_source
from serving.store import connect, decode_user, encode_recommendations, key

pytestmark = pytest.mark.integration


def click(user: str, item: str, ts: int) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "type": "click", "ts": ts}).encode()


def forget(user: str, ts: int) -> bytes:
    return json.dumps({"user_id": user, "type": "forget", "ts": ts}).encode()


def test_forget_records_clear_state_and_keys_and_emit_nothing(make_settings):
    settings, _ = make_settings(flink={"restart_strategy": "none"}, job={"flush_interval_ms": 60_000})
    r = connect(settings.redis.url)
    r.flushdb()
    # Lists of an earlier run (the job has no model here, so it writes no rec: of its own).
    for u in ("u0", "u2", "u3"):
        r.set(key("rec", u), encode_recommendations([("i9", 1.0)], "v0", 1))
    r.hset(key("user", "u3"), mapping={"events": "7", "last_ts": "1", "recent": "[]"})
    events = [
        click("u0", "i0", 1_000),
        click("u1", "i2", 1_001),
        click("u0", "i1", 1_002),
        click("u2", "i1", 1_003),
        forget("u0", 2_000),
        click("u0", "i3", 2_001),  # after the forget: the user starts afresh
        forget("u2", 2_002),  # nothing after it
        forget("u3", 2_003),  # a user known only from an earlier run
        forget("u4", 2_004),  # a user never seen
        json.dumps({"type": "forget", "ts": 5}).encode(),  # no user: a dead letter
    ]
    env = make_env(settings)
    job = build_interest_job(env, records_source(env, events), settings, records_source(env, []))
    out = collect(writes=job.writes, dead=job.dead_letters)

    # The flush interval is a minute: one end-of-input batch per shard, with the forget records inside it.
    audit = [row for w in out["writes"] for row in audit_rows(w)]
    assert sorted((a["user_id"], a["events"]) for a in audit) == [("u0", 1), ("u1", 1)]  # nothing for u2, u3, u4
    assert decode_user(r.hgetall(key("user", "u0")))["recent"] == ["i3"]
    assert decode_user(r.hgetall(key("user", "u0")))["events"] == 1
    assert decode_user(r.hgetall(key("user", "u1")))["events"] == 1
    for u in ("u0", "u2", "u3", "u4"):
        assert not r.exists(key("rec", u)), u
    for u in ("u2", "u3", "u4"):
        assert not r.exists(key("user", u)), u
    assert [json.loads(d)["reason"] for d in out["dead"]] == ["field 'user_id' must be a string, got NoneType"]
