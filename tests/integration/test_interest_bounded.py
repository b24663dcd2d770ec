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


def user_records(batches: list[bytes]) -> dict[str, list[dict]]:
    """The user records of the writer's input batches, per user in flush order (what the writer receives)."""
    out: dict[str, list[dict]] = {}
    for b in batches:
        head, _, _commands = b.partition(b"\n")
        for rec in json.loads(head)["records"]:
            out.setdefault(rec["u"], []).append(rec)
    return out


def test_impressions_reach_the_writer_as_shown_counts_until_an_action(make_settings):
    settings, _ = make_settings(flink={"restart_strategy": "none"}, job={"flush_interval_ms": 60_000})
    r = connect(settings.redis.url)
    r.flushdb()

    def ev(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    events = [
        ev(user_id="u1", item_id="i0", type="view", ts=1_000),
        ev(user_id="u1", type="impression", items=["i1", "i2", "i3"], ts=1_001, model_version="v1", arm="exp:a",
           scenario="web"),
        ev(user_id="u1", type="impression", items=["i2", "i4"], ts=1_002, event_id="imp-1"),
        ev(user_id="u1", type="impression", items=["i2", "i4"], ts=1_002, event_id="imp-1"),  # a duplicate
        ev(user_id="u1", item_id="i2", type="click", ts=1_003),  # acted on: i2 no longer counts as shown
        ev(user_id="u1", item_id="i3", type="skip", ts=1_004),  # a skip is no action: i3 stays
        ev(user_id="shown-only", type="impression", items=["i1"], ts=1_000),
        ev(user_id="u2", type="impression", items=["i1"], ts=1_000),
        ev(user_id="u2", type="forget", ts=1_001),  # the shown counts go with the rest
        ev(user_id="u1", type="impression", items=[], ts=1_005),  # dead letters, like any invalid record
        ev(user_id="u1", type="impression", items=["i1"], item_id="i1", ts=1_005),
    ]
    env = make_env(settings)
    job = build_interest_job(env, records_source(env, events), settings, records_source(env, []))
    out = collect(batches=job.batches, writes=job.writes, dead=job.dead_letters)

    # The flush interval is a minute: one record per user, at the end of input.
    records = user_records(out["batches"])
    (u1,) = records["u1"]
    assert u1["n"] == 3  # the view, the click and the skip: impressions are no events
    # A JSON object inside a JSON string: item -> [times shown without an action, the latest time shown].
    assert json.loads(u1["i"]) == {"i1": [1, 1_001], "i3": [1, 1_001], "i4": [1, 1_002]}
    assert list(json.loads(u1["i"])) == ["i1", "i3", "i4"]  # least recently shown first
    assert u1["m"] == [["v1", "exp:a", "web", 3], ["", "", "default", 2]]  # the duplicate is applied once
    assert u1["a"] == [["i0", "default"], ["i2", "default"]]
    (shown_only,) = records["shown-only"]
    assert shown_only["n"] == 0 and json.loads(shown_only["i"]) == {"i1": [1, 1_000]}
    assert shown_only["m"] == [["", "", "default", 1]]
    (u2,) = records["u2"]
    assert u2["f"] is True and "i" not in u2 and "m" not in u2
    # user:{id}: the impressions total beside the action fields; a user without actions has no hash.
    assert r.hget(key("user", "u1"), "impressions") == b"2"
    assert decode_user(r.hgetall(key("user", "u1")))["events"] == 3
    assert not r.exists(key("user", "shown-only")) and not r.exists(key("user", "u2"))
    assert sorted(json.loads(d)["reason"] for d in out["dead"]) == [
        "field 'item_id' must be absent from an impression (its items go in 'items')",
        "field 'items' must be a list of 1..100 item ids",
    ]
