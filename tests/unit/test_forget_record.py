"""The right to be forgotten without services: the `forget` record's schema, the job's tombstone, training data."""

from __future__ import annotations

import json

import pytest

from model_export.data.datasets import build_sequences, build_timelines, drop_forgotten
from model_export.data.event_log import MemoryEventLog
from streamrec.events import FORGET, InvalidRecordError, parse_event, validate_event

NOW = 1_800_000_000_000


def view(user: str, item: str, ts: int) -> dict:
    return {"user_id": user, "item_id": item, "type": "view", "ts": ts}


def forget(user: str, ts: int) -> dict:
    return {"user_id": user, "type": "forget", "ts": ts}


def test_a_forget_record_needs_no_item_and_round_trips() -> None:
    ev = parse_event(json.dumps(forget("u1", 5)).encode(), now_ms=NOW)
    assert (ev.user_id, ev.type, ev.ts, ev.item_id) == ("u1", FORGET, 5, "")
    assert ev.to_dict() == {"user_id": "u1", "type": "forget", "ts": 5}
    assert parse_event(ev.to_json(), now_ms=NOW) == ev
    # An item id, when a producer sends one anyway, is validated and kept.
    assert validate_event({**forget("u1", 5), "item_id": "i1"}, NOW).item_id == "i1"


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"type": "forget", "ts": 5}, "'user_id'"),
        ({"user_id": "", "type": "forget", "ts": 5}, "'user_id'"),
        ({"user_id": "u\x00", "type": "forget", "ts": 5}, "'user_id'"),
        ({"user_id": "u1", "type": "forget"}, "'ts'"),
        ({"user_id": "u1", "type": "forget", "ts": -1}, "'ts'"),
        ({"user_id": "u1", "type": "forget", "ts": NOW * 2}, "'ts'"),
        ({"user_id": "u1", "type": "forget", "ts": 5, "item_id": ""}, "'item_id'"),
        ({"user_id": "u1", "type": "Forget", "ts": 5}, "'item_id'"),  # not a forget record: an action
        ({"user_id": "u1", "type": "Forget", "ts": 5, "item_id": "i"}, "'type'"),
        ({"user_id": "u1", "type": "view", "ts": 5}, "'item_id'"),  # actions still need their item
    ],
)
def test_invalid_forget_records_are_refused_with_the_field(obj: dict, fragment: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        validate_event(obj, NOW)
    assert fragment in info.value.reason


def test_drop_forgotten_removes_everything_up_to_the_latest_forget_record_of_the_user() -> None:
    log = [
        view("a", "1", 10),
        view("b", "x", 11),
        forget("a", 20),
        view("a", "2", 30),  # after the first forget ...
        view("a", "3", 15),  # (late: its time is before the forget's)
        forget("a", 40),  # ... but before this one
        view("b", "y", 12),
        view("a", "4", 50),
    ]
    assert drop_forgotten(log) == [view("b", "x", 11), view("b", "y", 12), view("a", "4", 50)]
    assert drop_forgotten([view("b", "x", 1)]) == [view("b", "x", 1)]


def test_an_event_arriving_after_the_forget_with_an_older_time_is_dropped_too() -> None:
    # Replays carry historical times: "at or before" holds by arrival and by event time alike.
    assert drop_forgotten([forget("a", 100), view("a", "old", 99), view("a", "new", 101)]) == [view("a", "new", 101)]


def test_timelines_and_sequences_leave_out_forgotten_events() -> None:
    log = [view("a", "1", 10), view("a", "2", 11), view("b", "x", 12), forget("a", 20), view("a", "3", 30)]
    assert build_timelines(log) == {"b": [(12, "x")], "a": [(30, "3")]}
    assert build_sequences(log) == {"b": ["x"], "a": ["3"]}


def test_the_memory_event_log_honours_forget_records() -> None:
    log = MemoryEventLog([view("a", "1", 10), view("b", "x", 12), forget("a", 20), view("a", "3", 30)])
    assert log.events() == [view("b", "x", 12), view("a", "3", 30)]
    assert log.end() == 4  # the forget record is a record of the log
