"""The interest job against real Kafka and Redis, on the MiniCluster (parallelism 1 and 2) and a standalone cluster."""

from __future__ import annotations

import base64
import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaConsumer

from jobs import launcher
from jobs.batch_writer import audit_rows
from jobs.producer import EventProducer
from serving.store import connect, decode_user, key

pytestmark = pytest.mark.integration

BAD_RECORDS = {
    b"{not json": "not JSON",
    b"\xff\xfe\x00garbage": "not",
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "teleport", "ts": 1}).encode(): "field 'type'",
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "ts": -5}).encode(): "field 'ts'",
    json.dumps({"user_id": 7, "item_id": "i1", "type": "view", "ts": 1}).encode(): "field 'user_id'",
    json.dumps(["a", "list"]).encode(): "JSON object",
}


def sample_events(users: int = 6, per_user: int = 7) -> list[dict]:
    events = []
    for n in range(users * per_user):
        u = n % users
        events.append(
            {
                "user_id": f"user-{u}",
                "item_id": f"item-{(n * 7) % 23}",
                "type": "view",
                "ts": 1_700_000_000_000 + n * 1000,
                "scenario": "web" if u % 2 else "app",
            }
        )
    return events


def expected_views(events: list[dict]) -> dict[str, dict]:
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_user[e["user_id"]].append(e)
    return {
        u: {"events": len(es), "last_ts": max(e["ts"] for e in es), "recent": [e["item_id"] for e in es]}
        for u, es in by_user.items()
    }


def consume_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 60) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        group_id=None,
    )
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < expect:
        out.extend(m.value for m in consumer)
    consumer.close()
    return out


def run_path(settings, config_path, cluster=None) -> None:
    events = sample_events()
    r = connect(settings.redis.url)
    r.flushdb()
    launcher.start(settings, str(config_path), cluster=cluster, say=lambda *_: None)
    try:
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for i, e in enumerate(events):
                p.send(e)
                if i == 10:
                    for raw in BAD_RECORDS:
                        p.send_raw(raw)
        want = expected_views(events)
        deadline = time.monotonic() + 120
        got: dict = {}
        while time.monotonic() < deadline:
            views = {u: decode_user(r.hgetall(key("user", u))) for u in want}
            got = {u: v and {k: v[k] for k in ("events", "last_ts", "recent")} for u, v in views.items()}
            if got == want:
                break
            time.sleep(0.5)
        assert got == want
        assert launcher.status(settings)["running"]
        for u, view in views.items():  # every view event was a "view" (weight 1) in one scenario
            scenario = "web" if int(u.split("-")[1]) % 2 else "app"
            assert set(view["interests"]) == {f"scenario:{scenario}"}
            assert 0 < view["interests"][f"scenario:{scenario}"] <= want[u]["events"]

        dlq = [
            json.loads(v)
            for v in consume_all(settings.kafka.bootstrap, settings.kafka.dlq_topic, len(BAD_RECORDS))
        ]
        assert len(dlq) == len(BAD_RECORDS)
        by_original = {base64.b64decode(d["original_b64"]): d["reason"] for d in dlq}
        assert set(by_original) == set(BAD_RECORDS)
        for raw, fragment in BAD_RECORDS.items():
            assert fragment in by_original[raw], (raw, by_original[raw])

        audit = [
            row
            for v in consume_all(settings.kafka.bootstrap, settings.kafka.recommendations_topic, 1)
            for row in audit_rows(v)
        ]
        final = defaultdict(int)
        for a in audit:
            final[a["user_id"]] = max(final[a["user_id"]], a["events"])
            assert a["written_at"] >= a["ts"]  # Redis acknowledged the batch after it was scored
        assert dict(final) == {u: v["events"] for u, v in want.items()}
    finally:
        launcher.stop(settings, say=lambda *_: None)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_minicluster_path(make_settings, parallelism):
    settings, path = make_settings(flink={"parallelism": parallelism, "checkpoint_interval_ms": 1000})
    run_path(settings, path)


def test_standalone_cluster_path(make_settings, flink_cluster):
    settings, path = make_settings()
    run_path(settings, path, cluster=flink_cluster.rest_url)
