"""The dead-letter tools' pure parts: --since, --set fixes, decoding both envelope kinds, the replay plan."""

from __future__ import annotations

import argparse
import base64
import json
from datetime import UTC, datetime

import pytest

from jobs.dlq import (
    CONNECT_PREFIX,
    REPLAYED_FROM,
    DeadLetterRecord,
    NotFixableError,
    apply_fix,
    decode_dead_letter,
    parse_since,
    plan_replay,
)
from streamrec.cli import _set_option, _since_option, build_parser
from streamrec.config import Settings
from streamrec.events import dead_letter

NOW = 1_700_000_000_000


def jvm_value(original: bytes, key: bytes | None, reason: str = "field 'ts': must not be negative") -> bytes:
    """The value DeadLetter.java writes (its field order and fields)."""
    env: dict = {"reason": reason, "topic": "events", "partition": 1, "offset": 42, "timestamp": 1_600_000_000_000}
    if key is not None:
        env["key_b64"] = base64.b64encode(key).decode()
        try:
            env["key"] = key.decode()
        except UnicodeDecodeError:
            pass
    env["original_b64"] = base64.b64encode(original).decode()
    env["failed_at"] = NOW
    try:
        env["original"] = original.decode()
    except UnicodeDecodeError:
        pass
    return json.dumps(env).encode()


def connect_headers(reason: str = "field 'ts': must not be negative") -> list[tuple[str, bytes]]:
    return [
        (CONNECT_PREFIX + "topic", b"events"),
        (CONNECT_PREFIX + "partition", b"1"),
        (CONNECT_PREFIX + "offset", b"42"),
        (CONNECT_PREFIX + "exception.message", reason.encode()),
        (CONNECT_PREFIX + "stage", b"VALUE_CONVERTER"),
    ]


# --since


@pytest.mark.parametrize(
    ("text", "back_ms"),
    [("10m", 600_000), ("2h", 7_200_000), ("1d", 86_400_000), ("90s", 90_000), ("1w", 604_800_000),
     ("1h30m", 5_400_000), (" 1h 30m ", 5_400_000), ("0m", 0)],
)
def test_since_durations_count_back_from_now(text, back_ms):
    assert parse_since(text, now_ms=NOW) == NOW - back_ms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # no zone: UTC, the zone `list` prints
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_since_iso_timestamps(text, expected):
    assert parse_since(text, now_ms=NOW) == int(expected.timestamp() * 1000)


@pytest.mark.parametrize("text", ["", "10", "5x", "m10", "yesterday", "10m ago", "-1h"])
def test_since_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="duration such as 10m"):
        parse_since(text, now_ms=NOW)


def test_since_option_is_a_usage_error():
    with pytest.raises(argparse.ArgumentTypeError, match="5x"):
        _since_option("5x")
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["dlq", "list", "--since", "5x"])
    assert exit_info.value.code == 2


# --set and the fix


def test_set_option_reads_json_values():
    assert _set_option("ts=1700000000000") == ("ts", 1_700_000_000_000)
    assert _set_option('type="click"') == ("type", "click")
    assert _set_option("context={\"a\": [1]}") == ("context", {"a": [1]})
    assert _set_option("value=null") == ("value", None)
    assert _set_option('note="a=b"') == ("note", "a=b")  # the first "=" splits
    for bad in ("ts", "=1", "type=click"):
        with pytest.raises(argparse.ArgumentTypeError):
            _set_option(bad)


def test_replay_parser_collects_repeated_sets():
    args = build_parser().parse_args(["dlq", "replay", "--set", "ts=5", "--set", "value=null", "--dry-run"])
    assert args.set == [("ts", 5), ("value", None)] and args.dry_run and args.dlq_cmd == "replay"


def test_fix_sets_and_removes_top_level_fields():
    original = json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "ts": -5, "value": 1.5}).encode()
    fixed = json.loads(apply_fix(original, {"ts": 1_700_000_000_000, "value": None, "scenario": "web"}))
    assert fixed == {"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1_700_000_000_000, "scenario": "web"}


def test_fix_keeps_non_ascii_text_as_utf8():
    original = json.dumps({"user_id": "ü", "ts": 1}, ensure_ascii=False).encode()
    assert apply_fix(original, {"ts": 2}) == '{"user_id":"ü","ts":2}'.encode()


@pytest.mark.parametrize(
    ("original", "kind"),
    [(b"{not json", "not JSON"), (b"\xff\xfe\x00garbage", "not JSON"), (b'["a", "list"]', "array"),
     (b'"text"', "string"), (b"7", "number"), (b"null", "null"), (b"", "not JSON")],
)
def test_fix_refuses_what_is_not_a_json_object(original, kind):
    with pytest.raises(NotFixableError, match=kind):
        apply_fix(original, {"ts": 1})


# decoding both kinds of dead letter


def test_decode_the_jvm_dead_letter():
    original = b'{"user_id":"u1","item_id":"i1","type":"view","ts":-5}'
    headers = [("trace-id", b"abc"), ("bin", b"\x00\xff"), *connect_headers("field 'ts': must not be negative")]
    r = decode_dead_letter(0, 7, b"u1", jvm_value(original, b"u1"), headers, timestamp=1_600_000_000_000)
    assert r == DeadLetterRecord(
        dlq_partition=0,
        dlq_offset=7,
        reason="field 'ts': must not be negative",
        topic="events",
        partition=1,
        offset=42,
        key=b"u1",
        original=original,
        headers=(("trace-id", b"abc"), ("bin", b"\x00\xff")),
        failed_at=NOW,
        timestamp=1_600_000_000_000,
    )


def test_decode_prefers_the_whole_reason_of_the_header():
    long_reason = "x" * 600  # the envelope's is cut at job.dlq_reason_max_chars, the header's is not
    value = jvm_value(b"{}", None, reason=long_reason[:500])
    r = decode_dead_letter(0, 0, None, value, connect_headers(long_reason))
    assert r.reason == long_reason


def test_decode_binary_original_and_key_from_base64():
    original, key = b"\xff\xfe\x00garbage", b"\x80key"
    r = decode_dead_letter(1, 3, None, jvm_value(original, key), connect_headers())
    # No Kafka key: the envelope's key_b64 is the original key.
    assert r.original == original and r.key == key


def test_decode_the_python_items_dead_letter():
    raw = b'{"item_id": "i1", "title": ""}'
    r = decode_dead_letter(1, 5, None, dead_letter(raw, "field 'title': must be non-empty", "items"))
    assert (r.topic, r.partition, r.offset, r.key, r.original, r.headers) == ("items", None, None, None, raw, ())
    assert r.reason == "field 'title': must be non-empty"
    assert isinstance(r.failed_at, int) and r.timestamp is None


def test_decode_the_python_dead_letter_of_binary_bytes():
    raw = b"\xff\x00"
    r = decode_dead_letter(0, 0, None, dead_letter(raw, "not UTF-8", "items"))
    assert r.original == raw


def test_decode_a_kafka_connect_style_record_reads_the_headers():
    """Not our envelope: the value is the original (Kafka Connect's layout), the context comes from headers."""
    r = decode_dead_letter(0, 9, b"k", b'{"user_id": "u"}', [("h", b"v"), *connect_headers("boom")], 123)
    assert (r.reason, r.topic, r.partition, r.offset) == ("boom", "events", 1, 42)
    assert (r.key, r.original, r.headers, r.timestamp, r.failed_at) == (b"k", b'{"user_id": "u"}', (("h", b"v"),),
                                                                         123, None)


def test_decode_never_fails_on_a_foreign_record():
    for value in (None, b"", b"\xff", b"[1]", b'{"reason": 5, "original": 7}'):
        r = decode_dead_letter(0, 0, None, value, [("h", None)])
        assert r.topic is None and r.headers == (("h", b""),) and isinstance(r.reason, str)


def test_to_dict_is_json_with_text_and_base64():
    r = DeadLetterRecord(0, 1, "why", "events", 1, 2, b"\xff", b"{}", (("h", b"v"),), NOW, None)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["key"] is None and base64.b64decode(d["key_b64"]) == b"\xff"
    assert d["original"] == "{}" and d["headers"] == [{"key": "h", "value": "v", "value_b64": "dg=="}]
    assert (d["dlq_partition"], d["dlq_offset"], d["failed_at"], d["topic"], d["partition"]) == (0, 1, NOW, "events", 1)


# the replay plan (no Kafka)


def letter(offset: int, original: bytes, topic: str | None = "events", key: bytes | None = b"u1",
           headers: tuple[tuple[str, bytes], ...] = ()) -> DeadLetterRecord:
    return DeadLetterRecord(0, offset, "why", topic, 0, offset, key, original, headers, NOW, 1_600_000_000_000)


def test_plan_keeps_key_headers_timestamp_and_adds_replayed_from():
    settings = Settings()
    plan = plan_replay(settings, [letter(3, b'{"ts": -1}', headers=(("trace", b"t"),))])
    [r] = plan.replayed
    assert (r.topic, r.key, r.value, r.timestamp, r.fixed) == ("events", b"u1", b'{"ts": -1}', 1_600_000_000_000, False)
    assert r.headers == (("trace", b"t"), (REPLAYED_FROM, b"events.dlq/0/3"))
    assert plan.dry_run and plan.sent == 0 and plan.skipped == []


def test_plan_replaces_the_header_of_an_earlier_replay():
    plan = plan_replay(Settings(), [letter(8, b"{}", headers=((REPLAYED_FROM, b"events.dlq/0/1"), ("a", b"b")))])
    assert plan.replayed[0].headers == (("a", b"b"), (REPLAYED_FROM, b"events.dlq/0/8"))


def test_plan_with_a_fix_skips_what_it_cannot_fix():
    letters = [letter(1, b'{"ts": -1, "v": 2}'), letter(2, b"[1]"), letter(3, b"\xff"), letter(4, b"{}", topic=None)]
    plan = plan_replay(Settings(), letters, fix={"ts": 5, "v": None})
    assert [(r.dead_letter, json.loads(r.value), r.fixed) for r in plan.replayed] == [
        ("events.dlq/0/1", {"ts": 5}, True)
    ]
    assert [(s.dead_letter, s.reason.split(":")[0]) for s in plan.skipped] == [
        ("events.dlq/0/2", "cannot fix"),
        ("events.dlq/0/3", "cannot fix"),
        ("events.dlq/0/4", "the dead letter does not name its source topic"),
    ]


def test_plan_keys_a_keyless_record_by_its_topic_key_field():
    letters = [
        letter(1, b'{"item_id": "i9", "title": "t"}', topic="items", key=None),
        letter(2, b'{"user_id": "u7", "ts": 1}', topic="events", key=None),
        letter(3, b'{"user_id": 5}', topic="events", key=None),  # not a string id: left without a key
        letter(4, b"garbage", topic="elsewhere", key=None),
    ]
    assert [r.key for r in plan_replay(Settings(), letters).replayed] == [b"i9", b"u7", None, None]
    # A fix may supply the key field itself.
    assert plan_replay(Settings(), letters[2:3], fix={"user_id": "u5"}).replayed[0].key == b"u5"
