"""Hostile input for the ``events`` and ``items`` parsers (hypothesis), and their dead-letter envelopes.

The contract under fuzzing: ``parse_event`` / ``parse_item`` return a valid record or raise
``InvalidRecordError``, never anything else (any other exception would fail the job's task over and over on the
same record). A valid record survives its own wire form (UTF-8 JSON) unchanged. A rejected one makes a
dead-letter envelope that is strict JSON and gives back the original bytes exactly.

Inputs: truncated and bit-flipped JSON, wrong types, huge strings, Unicode edge cases (lone and paired
surrogates, NUL, RTL marks, BOM, emoji, noncharacters), negative and far-future timestamps, NaN/Infinity and
out-of-range numbers, deep nesting, non-object JSON, UTF-16 and other non-UTF-8 bytes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamrec.events import (
    EVENT_TYPES,
    FORGET,
    IMPRESSION,
    MAX_FUTURE_MS,
    MAX_IMPRESSION_ITEMS,
    MAX_RECORD_BYTES,
    Event,
    InvalidRecordError,
    Item,
    dead_letter,
    parse_event,
    parse_item,
)

NOW = 1_700_000_000_000
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Characters that break naive code: NUL and controls, RTL/LTR marks and overrides, BOM, zero-width joiner,
# line/paragraph separators, noncharacters, combining marks, emoji (astral, and joined sequences), lone surrogates.
EDGE_CHARS = "\x00\x01\x1f\x7f\x85\u200b\u200d\u200e\u200f\u202a\u202e\u2028\u2029\ufeff\ufffd\uffff\u0301"
EDGE_CHARS += "🎬👩‍💻\ud800\udfff"
edge_text = st.text(alphabet=st.sampled_from(EDGE_CHARS) | st.characters(), max_size=40)
# Any code point, lone surrogates included (JSON can escape them; UTF-8 cannot encode them).
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=[]), max_size=40)
huge_text = st.integers(0, MAX_RECORD_BYTES + 10).map(lambda n: "x" * n)
numbers = (
    st.integers()
    | st.integers(-(2**80), 2**80)
    | st.integers(-5, NOW + 2 * MAX_FUTURE_MS)
    | st.floats()
    | st.sampled_from([0, -1, 2**63, -(2**63), 10**400, NOW + MAX_FUTURE_MS, NOW + MAX_FUTURE_MS + 1])
)
# The values that broke parsers (ours included): each one is drawn often, in every field.
NASTY: list[Any] = [None, True, False, 0, -1, 0.5, 2**63, -(2**63), 10**400, -(10**400), 1e308]
NASTY += [float("nan"), float("inf"), float("-inf"), "NaN", "view", "1700000000000"]
NASTY += ["", " ", "\t", "\x00", "a\x00b", "\ud800", "a\udfffb", "\ud83c\udfac", "\u202eevil", "\ufeff", "\uffff"]
NASTY += ["x" * 257, "x" * (MAX_RECORD_BYTES + 1), [], {}, [1], ["\ud800"], [""], {"a": "\ud800"}, {"\udfff": 1}]
NASTY += [[[[[[[[[[[[]]]]]]]]]]]]
nasty = st.sampled_from(NASTY)
scalars = st.none() | st.booleans() | numbers | edge_text | any_text | nasty
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4), max_leaves=12
)
# Field values: sometimes plausible, mostly wrong.
field_values = {
    "user_id": nasty | st.just("u1") | edge_text | any_text | huge_text | json_values,
    "item_id": nasty | st.just("i1") | edge_text | any_text | huge_text | json_values,
    "type": nasty | st.sampled_from(sorted(EVENT_TYPES | {FORGET, IMPRESSION})) | edge_text | json_values,
    "ts": nasty | st.integers(0, NOW) | numbers | json_values,
    "value": nasty | numbers | json_values,
    "scenario": nasty | st.just("web") | edge_text | any_text | json_values,
    "context": nasty | st.dictionaries(any_text, json_values, max_size=3) | json_values,
    "title": nasty | st.just("Heat") | edge_text | any_text | huge_text | json_values,
    "text": nasty | edge_text | any_text | huge_text | json_values,
    "categories": nasty | st.lists(edge_text | any_text, max_size=4) | json_values,
    "attributes": nasty | st.dictionaries(any_text, json_values, max_size=3) | json_values,
    # An impression's: lists of plausible and hostile ids, around the length limit, and anything else.
    "items": nasty
    | st.lists(st.just("i1") | edge_text | any_text | nasty, max_size=4)
    | st.integers(MAX_IMPRESSION_ITEMS - 1, MAX_IMPRESSION_ITEMS + 1).map(lambda n: [f"i{k}" for k in range(n)])
    | json_values,
    "model_version": nasty | st.just("v0001") | edge_text | any_text | st.sampled_from(["x" * 256, "x" * 257]),
    "arm": nasty | st.just("exp-1:b") | edge_text | any_text | json_values,
    "event_id": nasty | st.just("e1") | edge_text | any_text,
}
EVENT_FIELDS = ("user_id", "item_id", "type", "ts", "value", "scenario", "context")
ITEM_FIELDS = ("item_id", "title", "ts", "text", "categories", "attributes")
IMPRESSION_FIELDS = ("user_id", "items", "type", "ts", "scenario", "model_version", "arm", "event_id", "item_id")


VALID = {
    EVENT_FIELDS: {"user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW - 1},
    ITEM_FIELDS: {"item_id": "i1", "title": "Heat", "ts": 1},
    IMPRESSION_FIELDS: {"user_id": "u1", "type": IMPRESSION, "items": ["i1", "i2"], "ts": NOW - 1},
}


@st.composite
def one_or_two_fields_off(draw: st.DrawFn, names: tuple[str, ...]) -> dict[str, Any]:
    """A valid record with one or two fields (or an unknown extra one) replaced by hostile values."""
    obj = dict(VALID[names])
    for name in draw(st.lists(st.sampled_from([*names, "extra"]), min_size=1, max_size=2, unique=True)):
        obj[name] = draw(field_values.get(name, json_values))
    return obj


def objects(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    required = {n: field_values[n] for n in names[:2]}
    optional = {n: field_values[n] for n in names[2:]} | {"extra": json_values, "🎬": any_text}
    return one_or_two_fields_off(names) | st.fixed_dictionaries(required, optional=optional)


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as bytes, the way a foreign producer might write it (escaped, raw UTF-8, CESU-8, UTF-16)."""
    value = draw(values)
    how = draw(st.sampled_from(["ascii", "utf8", "surrogatepass", "utf16", "latin1"]))
    if how == "ascii":
        return json.dumps(value).encode()  # lone surrogates become \\udXXX escapes
    text = json.dumps(value, ensure_ascii=False)
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")
    if how == "latin1":
        return text.encode("latin-1", "replace")
    return text.encode("utf-8", "surrogatepass" if how == "surrogatepass" else "replace")


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1" + b"0" * 400, b"1" * 5000]


@st.composite
def mangled(draw: st.DrawFn, names: tuple[str, ...]) -> bytes:
    """A record damaged on the wire: truncated, bytes flipped or inserted, a literal swapped for NaN & co."""
    raw = bytearray(draw(encoded(objects(names))))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "literal", "nest"]))
        if op == "truncate" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif op == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw[i:i] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"\x00", b"\xc0\x80", b"\xed\xa0"]))
        elif op == "literal":
            raw = bytearray(raw.replace(b'"ts":', b'"ts":' + draw(st.sampled_from(NON_FINITE)) + b",\"_\":", 1))
        else:
            depth = draw(st.integers(1, 40_000))
            raw = bytearray(b'{"context":' * depth + bytes(raw) + b"}" * depth)
    return bytes(raw)


def records(names: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    return (
        encoded(objects(names))
        | mangled(names)
        | encoded(json_values)  # not an object at all
        | st.binary(max_size=300)
        | st.integers(1, 60_000).map(lambda n: b"[" * n + b"]" * n)
    )


def strict(constant: str) -> None:
    raise AssertionError(f"{constant} in a dead-letter envelope is not strict JSON")


def check_dead_letter(raw: bytes, reason: str) -> None:
    """The envelope is strict UTF-8 JSON, and gives back the original bytes exactly."""
    envelope = json.loads(dead_letter(raw, reason, "events", max_reason_chars=300).decode(), parse_constant=strict)
    assert base64.b64decode(envelope["original_b64"], validate=True) == raw
    assert envelope["reason"] == reason[:300] and envelope["reason"]
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        assert "original" not in envelope
    else:
        assert envelope["original"] == text


def wire(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()  # strict UTF-8: no surrogates


def check_event(raw: bytes) -> None:
    """A valid event that survives its own wire form, or InvalidRecordError whose dead letter is lossless."""
    try:
        ev = parse_event(raw, now_ms=NOW)
    except InvalidRecordError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        check_dead_letter(raw, exc.reason)
        return
    assert isinstance(ev, Event)
    raw.decode()  # only UTF-8 is accepted
    assert ev.type in EVENT_TYPES | {FORGET, IMPRESSION} and 0 <= ev.ts <= NOW + MAX_FUTURE_MS
    assert ev.user_id.strip() and (ev.item_id.strip() or ev.type in (FORGET, IMPRESSION))
    assert ev.value is None or isinstance(ev.value, float)
    if ev.type == IMPRESSION:  # its items, each an id; no item_id
        assert not ev.item_id and 1 <= len(ev.items) <= MAX_IMPRESSION_ITEMS and all(i.strip() for i in ev.items)
    else:
        assert ev.items == () and ev.model_version is None and ev.arm is None
    # Its wire form is UTF-8 JSON that parses back to the same event.
    assert parse_event(ev.to_json(), now_ms=NOW) == ev


def check_item(raw: bytes) -> None:
    try:
        item = parse_item(raw)
    except InvalidRecordError as exc:
        assert exc.reason
        check_dead_letter(raw, exc.reason)
        return
    assert isinstance(item, Item)
    raw.decode()
    assert item.item_id.strip() and item.title.strip() and item.ts >= 0
    assert parse_item(wire(item.to_dict())) == item


@FUZZ
@given(records(EVENT_FIELDS))
@example(b'{"user_id":"u","item_id":"i","type":"rating","ts":1,"value":1' + b"0" * 400 + b"}")  # found: overflow
@example(b'{"user_id":"u","item_id":"i","type":"view","ts":1,"scenario":"\\ud800"}')  # found: lone surrogate
@example('{"user_id":"u","item_id":"i","type":"view","ts":1}'.encode("utf-16"))  # found: UTF-16 accepted
def test_event_parser_returns_a_valid_event_or_a_reason(raw: bytes) -> None:
    check_event(raw)


@FUZZ
@given(records(IMPRESSION_FIELDS))
@example(b'{"user_id":"u","type":"impression","items":["i","\\ud800"],"ts":1}')
@example(b'{"user_id":"u","type":"impression","items":["i"],"ts":1,"items":[]}')  # a repeated key: the last counts
def test_impression_parser_returns_a_valid_impression_or_a_reason(raw: bytes) -> None:
    check_event(raw)


@FUZZ
@given(records(ITEM_FIELDS))
@example(b'{"item_id":"i","title":"t","attributes":{"a":"\\udfff"}}')  # found: lone surrogate kept
def test_item_parser_returns_a_valid_item_or_a_reason(raw: bytes) -> None:
    check_item(raw)


# One hostile field in an otherwise valid record, field by field: where validation-order bugs hide.
ONE_FIELD = settings(FUZZ, max_examples=100)


@pytest.mark.parametrize("name", [*EVENT_FIELDS, "extra"])
@ONE_FIELD
@given(data=st.data())
def test_one_hostile_field_in_a_valid_event(name: str, data: st.DataObject) -> None:
    obj = {**VALID[EVENT_FIELDS], name: data.draw(field_values.get(name, json_values))}
    check_event(data.draw(encoded(st.just(obj))))


@pytest.mark.parametrize("name", [*ITEM_FIELDS, "extra"])
@ONE_FIELD
@given(data=st.data())
def test_one_hostile_field_in_a_valid_item(name: str, data: st.DataObject) -> None:
    obj = {**VALID[ITEM_FIELDS], name: data.draw(field_values.get(name, json_values))}
    check_item(data.draw(encoded(st.just(obj))))


@pytest.mark.parametrize("name", [*IMPRESSION_FIELDS, "extra"])
@ONE_FIELD
@given(data=st.data())
def test_one_hostile_field_in_a_valid_impression(name: str, data: st.DataObject) -> None:
    obj = {**VALID[IMPRESSION_FIELDS], name: data.draw(field_values.get(name, json_values))}
    check_event(data.draw(encoded(st.just(obj))))


@pytest.mark.parametrize("literal", NON_FINITE)
@pytest.mark.parametrize("field", ["ts", "value"])
def test_non_finite_and_out_of_range_numbers_are_dead_letters(field: str, literal: bytes) -> None:
    raw = b'{"user_id":"u","item_id":"i","type":"rating","ts":1,"' + field.encode() + b'":' + literal + b"}"
    if field == "ts":
        raw = raw.replace(b'"ts":1,', b"", 1)
    with pytest.raises(InvalidRecordError):
        parse_event(raw, now_ms=NOW)


@pytest.mark.parametrize(
    "value",
    ["\u202eevil", "a\u200fb", "👩‍💻", "\ufeffbom", "\uffff", "e\u0301", "🎬" * 256],
)
def test_unicode_ids_that_are_not_control_characters_are_valid(value: str) -> None:
    ev = parse_event(wire({"user_id": value, "item_id": value, "type": "view", "ts": 1}), now_ms=NOW)
    assert ev.user_id == value and parse_event(ev.to_json(), now_ms=NOW) == ev
