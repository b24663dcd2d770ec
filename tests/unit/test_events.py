"""The ``events`` / ``items`` schema: parsing, validation reasons, dead-letter envelopes, wire round trips."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.events import (
    EVENT_TYPES,
    MAX_FUTURE_MS,
    MAX_ID_CHARS,
    MAX_RECORD_BYTES,
    MAX_SCENARIO_CHARS,
    Event,
    InvalidRecordError,
    Item,
    dead_letter,
    parse_event,
    parse_item,
    validate_event,
    validate_item,
)

NOW = 1_700_000_000_000  # a fixed wall clock (epoch ms) so future-ts checks are deterministic
# No example database: the unit ring must not leave a .hypothesis/ folder in the work tree.
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def text(**kw: Any) -> st.SearchStrategy[str]:
    """Text that UTF-8 can encode (no lone surrogates)."""
    return st.text(alphabet=st.characters(exclude_categories=["Cs"]), **kw)


def minimal(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW - 1000}
    obj.update(over)
    return obj


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def reason_of(obj_or_bytes: Any) -> str:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else raw(obj_or_bytes)
    with pytest.raises(InvalidRecordError) as info:
        parse_event(data, now_ms=NOW)
    assert str(info.value) == info.value.reason
    return info.value.reason


# --- valid events -----------------------------------------------------------------------------------------


def test_minimal_event() -> None:
    ev = parse_event(raw(minimal()), now_ms=NOW)
    assert ev == Event("u1", "i1", "view", NOW - 1000)
    assert ev.value is None and ev.scenario is None and ev.context is None and ev.extra == {}
    assert json.loads(ev.to_json()) == minimal()


def test_full_event_and_int_value_becomes_float() -> None:
    obj = minimal(type="rating", value=4, scenario="web", context={"device": "ios", "n": [1, 2]})
    ev = parse_event(raw(obj), now_ms=NOW)
    assert (ev.type, ev.value, ev.scenario, ev.context) == ("rating", 4.0, "web", {"device": "ios", "n": [1, 2]})
    assert isinstance(ev.value, float)
    assert json.loads(ev.to_json()) == {**obj, "value": 4.0}


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES))
def test_every_event_type_is_accepted(etype: str) -> None:
    assert parse_event(raw(minimal(type=etype)), now_ms=NOW).type == etype


def test_unknown_fields_are_kept_and_reemitted() -> None:
    obj = minimal(session="s-9", experiment={"arm": "b"}, rank=3)
    ev = parse_event(raw(obj), now_ms=NOW)
    assert ev.extra == {"session": "s-9", "experiment": {"arm": "b"}, "rank": 3}
    assert ev.to_dict() == obj
    assert parse_event(ev.to_json(), now_ms=NOW) == ev


def test_known_fields_win_over_extra_on_output() -> None:
    # An Event built by hand with a clashing extra key must still emit its own user/item/type/ts.
    ev = Event("u1", "i1", "view", 5, extra={"user_id": "other", "ts": 0, "k": 1})
    assert ev.to_dict() == {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 5, "k": 1}


def test_to_json_is_compact_utf8() -> None:
    ev = Event("ü", "é", "click", 7, scenario="web")
    data = ev.to_json()
    assert isinstance(data, bytes)
    assert "ü".encode() in data and b"\\u" not in data and b", " not in data
    assert parse_event(data, now_ms=NOW) == ev


def test_boundary_values_are_accepted() -> None:
    assert parse_event(raw(minimal(ts=0)), now_ms=NOW).ts == 0
    assert parse_event(raw(minimal(ts=NOW + MAX_FUTURE_MS)), now_ms=NOW).ts == NOW + MAX_FUTURE_MS
    long_id = "x" * MAX_ID_CHARS
    assert parse_event(raw(minimal(user_id=long_id)), now_ms=NOW).user_id == long_id
    scen = "s" * MAX_SCENARIO_CHARS
    assert parse_event(raw(minimal(scenario=scen)), now_ms=NOW).scenario == scen
    assert parse_event(raw(minimal(value=-1.5)), now_ms=NOW).value == -1.5
    assert parse_event(raw(minimal(context={})), now_ms=NOW).context == {}


def test_validate_event_uses_wall_clock_when_now_not_given() -> None:
    far_future = 10**15  # year ~33658
    with pytest.raises(InvalidRecordError, match="'ts'"):
        validate_event(minimal(ts=far_future))
    assert validate_event(minimal(ts=1)).ts == 1


# --- invalid events: the reason names the field -------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (minimal(user_id=None), "'user_id'"),
        (minimal(user_id=12), "'user_id'"),
        (minimal(item_id=["i"]), "'item_id'"),
        ({"item_id": "i1", "type": "view", "ts": 1}, "'user_id'"),
        (minimal(user_id=""), "'user_id'"),
        (minimal(user_id="   \t "), "'user_id'"),
        (minimal(item_id="x" * (MAX_ID_CHARS + 1)), "'item_id'"),
        (minimal(user_id="a\nb"), "'user_id'"),
        (minimal(item_id="a\x00b"), "'item_id'"),
        (minimal(item_id="\x1f"), "'item_id'"),
        (minimal(type="like"), "'type'"),
        (minimal(type="VIEW"), "'type'"),
        (minimal(type=None), "'type'"),
        (minimal(ts="1700000000000"), "'ts'"),
        (minimal(ts=1.0), "'ts'"),
        (minimal(ts=True), "'ts'"),
        (minimal(ts=False), "'ts'"),
        (minimal(ts=None), "'ts'"),
        (minimal(ts=-1), "'ts'"),
        (minimal(ts=NOW + MAX_FUTURE_MS + 1), "'ts'"),
        (minimal(value="3"), "'value'"),
        (minimal(value=True), "'value'"),
        (minimal(value=[1]), "'value'"),
        (minimal(scenario=""), "'scenario'"),
        (minimal(scenario=5), "'scenario'"),
        (minimal(scenario="s" * (MAX_SCENARIO_CHARS + 1)), "'scenario'"),
        (minimal(context=[1]), "'context'"),
        (minimal(context="k=v"), "'context'"),
        (minimal(context=3), "'context'"),
    ],
)
def test_invalid_field_reason_names_it(obj: dict[str, Any], field: str) -> None:
    assert field in reason_of(obj)


def test_reason_for_ts_mentions_the_future_and_the_value() -> None:
    bad = NOW + MAX_FUTURE_MS + 1
    reason = reason_of(minimal(ts=bad))
    assert str(bad) in reason and "future" in reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_value_is_rejected(literal: bytes) -> None:
    data = b'{"user_id":"u","item_id":"i","type":"rating","ts":1,"value":' + literal + b"}"
    reason = reason_of(data)
    # NaN/Infinity are refused by the JSON reader itself (anywhere in a record); 1e400 parses to inf.
    assert "'value'" in reason or f"{literal.decode().lstrip('-')} is not valid JSON" in reason


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b'{"user_id":"\xff\xfe","item_id":"i","type":"view","ts":1}', "UTF-8"),
        (b"\xc3\x28", "UTF-8"),
        (b'{"user_id":"u","item_id":"i","type":"vi', "JSON"),
        (b"", "JSON"),
        (b"{'user_id': 'u'}", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b"42", "JSON object"),
        (b"null", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b"true", "JSON object"),
    ],
)
def test_undecodable_or_non_object_records(data: bytes, needle: str) -> None:
    assert needle in reason_of(data)


def test_wrong_top_level_type_names_the_type() -> None:
    assert "list" in reason_of(b"[]")
    assert "NoneType" in reason_of(b"null")


def test_deep_nesting_inside_the_size_limit_is_a_reason_not_a_crash() -> None:
    data = b"[" * 60_000  # under MAX_RECORD_BYTES, deep enough to hit the recursion limit
    assert len(data) <= MAX_RECORD_BYTES
    assert "JSON" in reason_of(data)
    nested_obj = b'{"a":' * 12_000
    assert len(nested_obj) <= MAX_RECORD_BYTES
    assert "JSON" in reason_of(nested_obj)


def test_deep_nesting_over_the_size_limit_is_rejected_for_size() -> None:
    assert "exceeds" in reason_of(b"[" * 100_000)


def test_oversize_record_is_rejected_before_decoding() -> None:
    padding = "x" * MAX_RECORD_BYTES
    data = raw(minimal(pad=padding))
    reason = reason_of(data)
    assert str(len(data)) in reason and str(MAX_RECORD_BYTES) in reason
    # exactly at the limit is fine
    obj = minimal(pad="")
    obj["pad"] = "x" * (MAX_RECORD_BYTES - len(raw(obj)))
    assert len(raw(obj)) == MAX_RECORD_BYTES
    assert parse_event(raw(obj), now_ms=NOW).extra["pad"]


def test_huge_integer_literal_is_an_invalid_record() -> None:
    reason_of(b'{"user_id":"u","item_id":"i","type":"view","ts":' + b"1" * 5000 + b"}")


@pytest.mark.parametrize("bad_type", [[], {}, ["view"]])
def test_unhashable_type_is_an_invalid_record(bad_type: Any) -> None:
    assert "'type'" in reason_of(minimal(type=bad_type))


def test_lone_surrogate_id_is_rejected() -> None:
    # JSON allows "\ud800"; the event passes, then to_json()/shard_of()/Redis keys raise UnicodeEncodeError.
    reason_of(b'{"user_id":"\\ud800","item_id":"i","type":"view","ts":1}')


# --- dead letters -------------------------------------------------------------------------------------------


def test_dead_letter_keeps_utf8_original() -> None:
    data = b'{"user_id": "\xc3\xbc", "ts": "x"}'
    env = json.loads(dead_letter(data, "field 'ts' must be an integer", "events"))
    assert env["reason"] == "field 'ts' must be an integer"
    assert env["topic"] == "events"
    assert base64.b64decode(env["original_b64"]) == data
    assert env["original"] == data.decode()
    assert isinstance(env["failed_at"], int) and env["failed_at"] > NOW


@pytest.mark.parametrize("data", [b"\xff\xfe\x00garbage", b"\x80", bytes(range(256))])
def test_dead_letter_of_non_utf8_has_only_base64(data: bytes) -> None:
    env = json.loads(dead_letter(data, "not UTF-8", "events"))
    assert "original" not in env
    assert base64.b64decode(env["original_b64"]) == data


def test_dead_letter_truncates_the_reason() -> None:
    env = json.loads(dead_letter(b"{}", "r" * 1000, "events", max_reason_chars=40))
    assert env["reason"] == "r" * 40
    env = json.loads(dead_letter(b"{}", "r" * 1000, "events"))
    assert env["reason"] == "r" * 500


def test_dead_letter_of_a_real_rejection_round_trips() -> None:
    data = b"[" * 60_000
    with pytest.raises(InvalidRecordError) as info:
        parse_event(data, now_ms=NOW)
    env = json.loads(dead_letter(data, info.value.reason, "events", 100))
    assert len(env["reason"]) <= 100 and env["reason"].startswith("not JSON")
    assert base64.b64decode(env["original_b64"]) == data and env["original"] == data.decode()


@FAST
@given(st.binary(max_size=256), text(max_size=300))
def test_dead_letter_is_json_and_lossless_for_any_bytes(data: bytes, reason: str) -> None:
    env = json.loads(dead_letter(data, reason, "t", max_reason_chars=200))
    assert base64.b64decode(env["original_b64"]) == data
    assert env["reason"] == reason[:200]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        assert "original" not in env
    else:
        assert env["original"] == text


# --- items --------------------------------------------------------------------------------------------------


def test_minimal_and_full_item() -> None:
    assert parse_item(b'{"item_id":"i1","title":"Heat"}') == Item("i1", "Heat", 0)
    obj = {"item_id": "i2", "title": "Up", "ts": 5, "text": "a film", "categories": ["A", "B"], "attributes": {"y": 1}}
    item = parse_item(raw(obj))
    assert item == Item("i2", "Up", 5, "a film", ("A", "B"), {"y": 1})
    assert item.to_dict() == obj
    assert parse_item(raw(item.to_dict())) == item


def test_item_to_dict_omits_missing_text() -> None:
    assert "text" not in Item("i", "t", 1).to_dict()


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"title": "t"}, "'item_id'"),
        ({"item_id": "", "title": "t"}, "'item_id'"),
        ({"item_id": "i"}, "'title'"),
        ({"item_id": "i", "title": "  "}, "'title'"),
        ({"item_id": "i", "title": 3}, "'title'"),
        ({"item_id": "i", "title": "t" * 1025}, "'title'"),
        ({"item_id": "i", "title": "t", "ts": -1}, "'ts'"),
        ({"item_id": "i", "title": "t", "ts": True}, "'ts'"),
        ({"item_id": "i", "title": "t", "ts": "5"}, "'ts'"),
        ({"item_id": "i", "title": "t", "text": 5}, "'text'"),
        ({"item_id": "i", "title": "t", "text": "x" * 10_001}, "'text'"),
        ({"item_id": "i", "title": "t", "categories": "Drama"}, "'categories'"),
        ({"item_id": "i", "title": "t", "categories": ["A", ""]}, "'categories'"),
        ({"item_id": "i", "title": "t", "categories": [1]}, "'categories'"),
        ({"item_id": "i", "title": "t", "attributes": [1]}, "'attributes'"),
    ],
)
def test_invalid_item_reason_names_the_field(obj: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        validate_item(obj)
    assert field in info.value.reason
    with pytest.raises(InvalidRecordError):
        parse_item(raw(obj))


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"\xff", "UTF-8"), (b"{", "JSON"), (b"[]", "JSON object"), (b"[" * 60_000, "JSON"), (b" " * 70_000, "exceeds")],
)
def test_undecodable_items(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        parse_item(data)
    assert needle in info.value.reason


# --- properties ---------------------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_raise_invalid_record(data: bytes) -> None:
    try:
        ev = parse_event(data, now_ms=NOW)
    except InvalidRecordError as exc:
        assert exc.reason
    else:
        assert isinstance(ev, Event)


finite = st.floats(allow_nan=False, allow_infinity=False)
scalar = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | text(max_size=10)
json_value = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
any_field = st.none() | st.integers() | st.floats() | text(max_size=4) | json_value
any_type = any_field | st.sampled_from(sorted(EVENT_TYPES))
event_like = st.fixed_dictionaries(
    {},
    optional={
        "user_id": any_field | st.just("u"),
        "item_id": any_field | st.just("i"),
        "type": any_type,
        "ts": any_field | st.integers(-5, NOW + 2 * MAX_FUTURE_MS),
        "value": any_field,
        "scenario": any_field,
        "context": any_field,
    },
)


@FAST
@given(st.one_of(json_value, event_like).map(lambda v: json.dumps(v).encode()))
def test_any_json_value_parses_or_raises_invalid_record(data: bytes) -> None:
    try:
        assert isinstance(parse_event(data, now_ms=NOW), Event)
    except InvalidRecordError as exc:
        assert exc.reason


# Valid ids (the id rule): no control characters (category Cc: C0, DEL, C1), no lone surrogates, not blank.
ident = st.text(
    alphabet=st.characters(min_codepoint=32, exclude_categories=["Cs", "Cc"]), min_size=1, max_size=MAX_ID_CHARS
).filter(lambda s: s.strip() != "")

KNOWN = {"user_id", "item_id", "type", "ts", "value", "scenario", "context"}


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    value = draw(st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-1000, 1000).map(float))
    return Event(
        user_id=draw(ident),
        item_id=draw(ident),
        type=draw(st.sampled_from(sorted(EVENT_TYPES))),
        ts=draw(st.integers(0, NOW + MAX_FUTURE_MS)),
        value=value,
        scenario=draw(st.none() | text(min_size=1, max_size=MAX_SCENARIO_CHARS)),
        context=draw(st.none() | st.dictionaries(text(max_size=5), json_value, max_size=3)),
        extra=draw(st.dictionaries(text(max_size=6).filter(lambda k: k not in KNOWN), json_value, max_size=3)),
    )


@FAST
@given(valid_events())
def test_valid_events_round_trip_through_json(ev: Event) -> None:
    assert parse_event(ev.to_json(), now_ms=NOW) == ev
    assert validate_event(ev.to_dict(), now_ms=NOW) == ev
