"""The ``impression`` record without services: its contract, the SDK's sender, and who else must not mistake it
for an action (the trainer's event log, the importer)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobs.producer import EventProducer
from model_export.data.event_log import MemoryEventLog
from streamrec.events import (
    EVENT_TYPES,
    IMPRESSION,
    MAX_ID_CHARS,
    MAX_IMPRESSION_ITEMS,
    Event,
    InvalidRecordError,
    make_impression,
    parse_event,
    validate_event,
)
from streamrec.importer import check_event

NOW = 1_700_000_000_000


def shown(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"user_id": "u1", "type": IMPRESSION, "items": ["i1", "i2"], "ts": NOW - 1}
    obj.update(over)
    return obj


def reason_of(obj: dict[str, Any]) -> str:
    with pytest.raises(InvalidRecordError) as info:
        parse_event(json.dumps(obj).encode(), now_ms=NOW)
    return info.value.reason


def test_an_impression_is_a_control_record_not_an_event_type() -> None:
    assert IMPRESSION == "impression" and IMPRESSION not in EVENT_TYPES  # event types carry interest weights
    assert MAX_IMPRESSION_ITEMS == 100


def test_a_full_impression_parses_and_round_trips() -> None:
    obj = shown(model_version="v0003", arm="exp-1:b", scenario="web", event_id="e-9", context={"page": 2}, rank=1)
    ev = parse_event(json.dumps(obj).encode(), now_ms=NOW)
    assert (ev.user_id, ev.item_id, ev.type, ev.items) == ("u1", "", IMPRESSION, ("i1", "i2"))
    assert (ev.model_version, ev.arm, ev.scenario, ev.event_id) == ("v0003", "exp-1:b", "web", "e-9")
    assert ev.extra == {"rank": 1}  # unknown fields are kept, the impression's own are not extra
    assert ev.to_dict() == obj  # no item_id on the wire
    assert parse_event(ev.to_json(), now_ms=NOW) == ev
    assert validate_event(ev.to_dict(), NOW) == ev


def test_a_minimal_impression_leaves_the_optional_fields_out() -> None:
    ev = validate_event(shown(model_version=None, arm=None), NOW)
    assert ev.model_version is None and ev.arm is None
    assert ev.to_dict() == shown()


def test_limits_are_inclusive() -> None:
    items = [f"i{n}" for n in range(MAX_IMPRESSION_ITEMS)]
    assert len(validate_event(shown(items=items), NOW).items) == MAX_IMPRESSION_ITEMS
    assert validate_event(shown(items=["x" * MAX_ID_CHARS]), NOW).items == ("x" * MAX_ID_CHARS,)
    assert validate_event(shown(arm="a" * MAX_ID_CHARS), NOW).arm == "a" * MAX_ID_CHARS
    assert validate_event(shown(items=["a", "a"]), NOW).items == ("a", "a")  # kept as sent; the job counts once


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"items": []}, "field 'items' must be a list of 1..100 item ids"),
        ({"items": [f"i{n}" for n in range(101)]}, "field 'items' must be a list of 1..100 item ids"),
        ({"items": "i1"}, "field 'items' must be a list of 1..100 item ids"),
        ({"items": None}, "field 'items' must be a list of 1..100 item ids"),
        ({"items": ["i1", ""]}, "field 'items[1]' must not be empty"),
        ({"items": ["i1", " \u3000"]}, "field 'items[1]' must not be empty"),
        ({"items": [7]}, "field 'items[0]' must be a string, got int"),
        ({"items": ["a\x00b"]}, "field 'items[0]' contains control characters"),
        ({"items": ["x" * 257]}, "field 'items[0]' is longer than 256 characters"),
        ({"item_id": "i1"}, "field 'item_id' must be absent from an impression (its items go in 'items')"),
        ({"model_version": ""}, "field 'model_version' must be a non-empty string of <= 256 characters"),
        ({"model_version": 3}, "field 'model_version' must be a non-empty string of <= 256 characters"),
        ({"arm": "a" * 257}, "field 'arm' must be a non-empty string of <= 256 characters"),
        ({"user_id": ""}, "field 'user_id' must not be empty"),
        ({"ts": -1}, "field 'ts' -1 is negative or more than a day in the future"),
        ({"scenario": ""}, "field 'scenario' must be a non-empty string of <= 64"),
        ({"event_id": ""}, "field 'event_id' must not be empty"),
    ],
)
def test_invalid_impressions_are_refused_with_the_field(over: dict[str, Any], reason: str) -> None:
    assert reason_of(shown(**over)) == reason


def test_the_fields_are_checked_in_one_order() -> None:
    # The JVM decoder checks in the same order (tests/unit/test_event_rules_agree.py): the first fault is named.
    assert reason_of(shown(user_id="", items=[])).startswith("field 'user_id'")
    assert reason_of(shown(items=[], ts=-1)).startswith("field 'items'")
    assert reason_of(shown(item_id="i", items=[])).startswith("field 'item_id'")
    assert reason_of(shown(arm="", ts=-1)).startswith("field 'arm'")
    assert "'impression'" in reason_of({"user_id": "u1", "item_id": "i1", "type": "teleport", "ts": 1})


def test_impression_fields_on_an_action_are_unknown_fields() -> None:
    obj = {"user_id": "u1", "item_id": "i1", "type": "click", "ts": 5, "items": [1], "arm": ""}
    ev = validate_event(obj, NOW)
    assert ev.items == () and ev.arm is None and ev.extra == {"items": [1], "arm": ""}
    assert ev.to_dict() == obj


def test_make_impression_builds_the_validated_record() -> None:
    ev = make_impression("u1", ("a", "b"), 5, arm="exp:a", now_ms=NOW)
    assert ev == Event("u1", "", IMPRESSION, 5, items=("a", "b"), arm="exp:a")
    assert json.loads(ev.to_json()) == {"user_id": "u1", "type": "impression", "items": ["a", "b"], "ts": 5,
                                        "arm": "exp:a"}
    with pytest.raises(InvalidRecordError, match="'items'"):
        make_impression("u1", "ab", 5)  # a string is no list of ids


class Sent:
    """What a KafkaProducer was asked to send."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def send(self, topic: str, **kw: Any) -> Any:  # noqa: ANN401 - the future
        self.records.append({"topic": topic, **kw})
        return self

    def get(self, timeout: float) -> None:
        self.records[-1]["waited"] = timeout


def producer() -> tuple[EventProducer, Sent]:
    p = EventProducer.__new__(EventProducer)  # no broker: the Kafka client is replaced
    p.events_topic, p.items_topic = "events", "items"
    sent = Sent()
    p._producer = sent  # type: ignore[assignment]
    return p, sent


def test_send_impression_validates_then_sends_keyed_by_the_user() -> None:
    p, sent = producer()
    ev = p.send_impression("u1", ["i1", "i2"], ts=NOW - 1, model_version="v1", arm="exp:b", scenario="app")
    (record,) = sent.records
    assert record["topic"] == "events" and record["key"] == b"u1" and record["timestamp_ms"] == NOW - 1
    assert json.loads(record["value"]) == shown(model_version="v1", arm="exp:b", scenario="app")
    assert ev.items == ("i1", "i2") and "waited" not in record  # like send: no wait unless asked
    p.send_impression("u1", ("i3",), timeout_s=5.0)
    assert sent.records[-1]["waited"] == 5.0 and json.loads(sent.records[-1]["value"])["ts"] > NOW
    for bad in ([], ["ok", ""], [f"i{n}" for n in range(101)]):
        with pytest.raises(InvalidRecordError):
            p.send_impression("u1", bad)
    with pytest.raises(InvalidRecordError, match="'user_id'"):
        p.send_impression("u\x00", ["i1"])
    assert len(sent.records) == 2  # nothing invalid was sent


def test_the_trainer_and_the_importer_do_not_take_impressions_for_actions() -> None:
    log = MemoryEventLog([shown(), {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 5}])
    assert [e["type"] for e in log.events()] == ["view"]
    with pytest.raises(InvalidRecordError, match="not imported"):
        check_event(shown())
