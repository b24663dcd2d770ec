"""The job graph on bounded in-memory inputs (jobs.testing doubles), with real Redis: the end-of-input flush."""

from __future__ import annotations

import json

import pytest

from jobs.batch_writer import audit_rows
from jobs.interest import build_interest_job
from jobs.kafka_io import make_env
from jobs.testing import collect, records_source
from serving.store import connect, decode_user, key

pytestmark = pytest.mark.integration


def test_bounded_run_flushes_everything(make_settings):
    settings, _ = make_settings(flink={"restart_strategy": "none"}, job={"flush_interval_ms": 60_000})
    r = connect(settings.redis.url)
    r.flushdb()
    items = [json.dumps({"item_id": f"i{n}", "title": f"Item {n}", "categories": ["Drama" if n % 2 else "Comedy"],
                         "ts": 1}).encode() for n in range(4)] + [b'{"item_id": "x"}']
    events = [json.dumps({"user_id": f"u{n % 2}", "item_id": f"i{n % 4}", "type": "click", "ts": 1_000 + n}).encode()
              for n in range(8)] + [b"[]"]
    env = make_env(settings)
    job = build_interest_job(env, records_source(env, events), settings, records_source(env, items))
    out = collect(writes=job.writes, dead=job.dead_letters)

    # The flush interval is a minute: only the end-of-input timer can have written these.
    rows = [row for w in out["writes"] for row in audit_rows(w)]
    assert {row["user_id"]: row["events"] for row in rows} == {"u0": 4, "u1": 4}
    reasons = sorted(json.loads(d)["reason"] for d in out["dead"])
    assert len(reasons) == 2 and any("title" in x for x in reasons) and any("JSON object" in x for x in reasons)
    views = {u: decode_user(r.hgetall(key("user", u))) for u in ("u0", "u1")}
    assert views["u0"]["recent"] == ["i0", "i2", "i0", "i2"] and views["u0"]["events"] == 4
    assert r.hget(key("item", "i1"), "title") == b"Item 1"
