"""The event contract: what flows on the ``events`` and ``items`` topics, for everyone who reads or writes them.

The stream (``jobs``) parses and dead-letters with it, the producer SDK (``jobs.producer``) refuses invalid
records with it, the HTTP API (``serving.api``) checks its path ids with its id rule, and the trainer
(``model_export``) keeps only the events it accepts. It imports nothing else of ours.

An event is one JSON object (key = user id): ``user_id`` (str), ``item_id`` (str),
``type`` (view|click|cart|purchase|rating|skip), ``ts`` (epoch ms, event time), optional ``value`` (number),
``scenario`` (str; :data:`DEFAULT_SCENARIO` when absent), ``context`` (object), ``event_id`` (str, the id
rule: the stream applies a record with an id it has seen within ``job.dedup_ttl_ms`` only once). Unknown fields
are kept. The limits are data, in ``event_rules.json``, which the stream's JVM decoder reads too. A record
that fails validation becomes a dead-letter record (see :func:`dead_letter`) on ``events.dlq`` holding the
original bytes and the reason.

Two control records share the topic. ``{"user_id": ..., "type": "forget", "ts": <epoch ms>}`` (no ``item_id``) is
the user's right to be forgotten. Keyed by the user id like the user's events, it is ordered after them; the job
then clears the user's state and Redis keys, and the trainer's event log drops every earlier event of the user.
``{"user_id": ..., "type": "impression", "items": [item ids], "ts": <epoch ms>}`` (no ``item_id``; optional
``scenario``, ``model_version``, ``arm``, ``event_id``, ``context``) says which list a front-end showed the user,
one record per list shown (1..:data:`MAX_IMPRESSION_ITEMS` items, each passing the id rule). It is not an action:
it carries no interest weight (so it is not in :data:`EVENT_TYPES`), the trainer does not learn from it, and the
job only counts, per user, how often each item was shown without an action since.

The id rule (:func:`id_problem`), one for the stream and the HTTP API: a user or item id is a string of
1..:data:`MAX_ID_CHARS` characters, not blank, without C0 or C1 control characters (nor DEL), that UTF-8 can
encode (no lone surrogates).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The rules as data, read here and by the stream's JVM decoder (jobs/jvm EventContract.java): one rule set.
RULES_FILE = Path(__file__).with_name("event_rules.json")
_RULES: dict[str, Any] = json.loads(RULES_FILE.read_text())
EVENT_TYPES = frozenset(_RULES["event_types"])
# The control record of a user's right to be forgotten (not an action: ``item_id`` is not required).
FORGET: str = _RULES["forget"]
# The control record of a list shown to a user (not an action: ``items`` instead of ``item_id``, no interest weight).
IMPRESSION: str = _RULES["impression"]
# A list longer than any front-end shows is a producer bug, and it would make one record cost the job O(list).
MAX_IMPRESSION_ITEMS: int = _RULES["max_impression_items"]
# The scenario of events that carry none: the stream's interest facets and the trainer's sequences alike.
DEFAULT_SCENARIO: str = _RULES["default_scenario"]
MAX_ID_CHARS: int = _RULES["max_id_chars"]
MAX_SCENARIO_CHARS: int = _RULES["max_scenario_chars"]
MAX_RECORD_BYTES: int = _RULES["max_record_bytes"]
# Event time may run ahead of the wall clock by clock skew, not by days: such a ts would poison decay.
MAX_FUTURE_MS: int = _RULES["max_future_ms"]
_KNOWN = frozenset(_RULES["known_fields"])
# Fields an impression owns; on any other record they are unknown fields, kept as they came.
_IMPRESSION_FIELDS = frozenset(_RULES["impression_fields"])
# Containers open at once (JSON nesting): deeper records are refused before Python's recursion limit is near.
MAX_NESTING: int = _RULES["max_nesting"]
# C0 controls, DEL and C1 controls (U+0085 NEL among them): they break logs, terminals and Redis tooling, and
# are never part of a real id.
_CONTROL_CHARS = re.compile("[" + "".join(f"\\x{a:02x}-\\x{b:02x}" for a, b in _RULES["control_ranges"]) + "]")
# What str.strip() takes for whitespace: an id or title of these alone is blank.
_BLANK = frozenset(chr(c) for c in _RULES["whitespace_chars"])
MAX_TITLE_CHARS: int = _RULES["max_title_chars"]
# The id rule in words, for error messages and the API's documentation.
ID_RULE = f"1..{MAX_ID_CHARS} characters, not blank, no control characters"


class InvalidRecordError(Exception):
    """A record that fails the contract: the stream dead-letters it with this reason, the SDK refuses it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid user or item id, or None when it is one: the stream's and the API's rule.

    Returns:
        A reason without the field's name, e.g. ``"contains control characters"``; None for a valid id.
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"is longer than {MAX_ID_CHARS} characters"
    if _CONTROL_CHARS.search(value):
        return "contains control characters"
    if all(c in _BLANK for c in value):  # whitespace only
        return "must not be empty"
    if not _encodes(value):
        return "is not valid Unicode (lone surrogate)"
    return None


@dataclass(frozen=True, slots=True)
class Event:
    """One validated ``events`` record: a user action, or a ``forget`` or ``impression`` control record.

    Control records have ``item_id == ""``; an impression's items are in ``items`` (empty for everything else).
    """

    user_id: str
    item_id: str
    type: str
    ts: int
    value: float | None = None
    scenario: str | None = None
    context: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The producer's id of this event: a redelivered or duplicated record with the same id is applied once.
    event_id: str | None = None
    # An impression's items, in the order shown; the model version and A/B arm that produced the list.
    items: tuple[str, ...] = ()
    model_version: str | None = None
    arm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire form (unknown fields included)."""
        out: dict[str, Any] = {**self.extra, "user_id": self.user_id, "item_id": self.item_id}
        if (self.type == FORGET and not self.item_id) or self.type == IMPRESSION:
            del out["item_id"]
        if self.type == IMPRESSION:
            out["items"] = list(self.items)
        out.update(type=self.type, ts=self.ts)
        for name in ("value", "scenario", "context", "event_id", "model_version", "arm"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def to_json(self) -> bytes:
        """UTF-8 JSON bytes, as producers send them."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()


def _id(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    problem = id_problem(value)
    if problem is None and isinstance(value, str):  # no problem means a str; isinstance tells mypy
        return value
    raise InvalidRecordError(f"field '{name}' {problem}")


def _encodes(value: str) -> bool:
    # JSON escapes can produce lone surrogates, which no UTF-8 key, topic or Redis write accepts.
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _encodable(value: str, name: str) -> None:
    if not _encodes(value):
        raise InvalidRecordError(f"field '{name}' is not valid Unicode (lone surrogate)")


def _reject_constant(name: str) -> None:
    raise InvalidRecordError(f"{name} is not valid JSON")


# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): alone, it decodes to a string UTF-8 cannot encode.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _nesting(text: str) -> int:
    """The most JSON containers open at once in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _loads(raw: bytes) -> Any:
    try:
        # Strict UTF-8: json.loads(bytes) would also take UTF-16/32 and UTF-8-encoded surrogates.
        text = raw.decode()
        # Counting brackets is cheap; scanning the strings only when there could be too many.
        if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
            raise InvalidRecordError(f"not JSON: nested deeper than {MAX_NESTING}")
        # NaN/Infinity are Python extensions that strict JSON readers of our outputs would choke on.
        obj = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise InvalidRecordError(f"not JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):  # rare: then check every string (a valid pair is fine)
        try:
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise InvalidRecordError("a string is not valid Unicode (lone surrogate escape)") from exc
        except RecursionError as exc:
            raise InvalidRecordError("not JSON: nested too deeply") from exc
    return obj


def _impression_items(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_IMPRESSION_ITEMS:
        raise InvalidRecordError(f"field 'items' must be a list of 1..{MAX_IMPRESSION_ITEMS} item ids")
    for n, item in enumerate(value):
        problem = id_problem(item)
        if problem is not None:
            raise InvalidRecordError(f"field 'items[{n}]' {problem}")
    return tuple(value)


def _label(obj: dict[str, Any], name: str) -> str | None:
    """An optional short label (an impression's ``model_version``, ``arm``); null is absent, ``""`` refused."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InvalidRecordError(f"field '{name}' must be a non-empty string of <= {MAX_ID_CHARS} characters")
    return value


def validate_event(obj: Any, now_ms: int | None = None) -> Event:
    """Check a decoded JSON value against the schema; raises InvalidRecordError with the reason.

    The checks run in one order, the JVM decoder's too (``EventContract.validate``), so that both give the same
    reason for a record with several faults: user_id, item_id (not for control records), type, an impression's
    items, model_version and arm, then ts, value, scenario, context, event_id.
    """
    if not isinstance(obj, dict):
        raise InvalidRecordError(f"an event must be a JSON object, got {type(obj).__name__}")
    etype = obj.get("type")
    shown = etype == IMPRESSION  # an impression's items are in `items`
    forget = etype == FORGET and "item_id" not in obj  # a forget record needs no item
    user_id, item_id = _id(obj, "user_id"), "" if forget or shown else _id(obj, "item_id")
    if not isinstance(etype, str) or (etype not in EVENT_TYPES and etype not in (FORGET, IMPRESSION)):
        raise InvalidRecordError(
            f"field 'type' must be one of {sorted(EVENT_TYPES)}, {FORGET!r} or {IMPRESSION!r}, got {etype!r:.60}"
        )
    items: tuple[str, ...] = ()
    model_version = arm = None
    if shown:
        if "item_id" in obj:  # a shown list with one item id beside it: which one was meant is unknowable
            raise InvalidRecordError("field 'item_id' must be absent from an impression (its items go in 'items')")
        items = _impression_items(obj.get("items"))
        model_version, arm = _label(obj, "model_version"), _label(obj, "arm")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidRecordError("field 'ts' must be an integer (epoch milliseconds)")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if ts < 0 or ts > now_ms + MAX_FUTURE_MS:
        raise InvalidRecordError(f"field 'ts' {ts} is negative or more than a day in the future")
    value = obj.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRecordError("field 'value' must be a finite number")
        try:
            value = float(value)  # an integer beyond float range overflows
        except OverflowError as exc:
            raise InvalidRecordError("field 'value' must be a finite number") from exc
        if not math.isfinite(value):
            raise InvalidRecordError("field 'value' must be a finite number")
    scenario = obj.get("scenario")
    if scenario is not None:
        if not isinstance(scenario, str) or not scenario or len(scenario) > MAX_SCENARIO_CHARS:
            raise InvalidRecordError(f"field 'scenario' must be a non-empty string of <= {MAX_SCENARIO_CHARS}")
    context = obj.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidRecordError("field 'context' must be a JSON object")
    event_id = _id(obj, "event_id") if "event_id" in obj else None
    extra = {k: v for k, v in obj.items() if k not in _KNOWN and not (shown and k in _IMPRESSION_FIELDS)}
    return Event(user_id, item_id, etype, ts, value, scenario, context, extra, event_id, items, model_version, arm)


def make_impression(
    user_id: str,
    items: Sequence[str],
    ts: int,
    *,
    model_version: str | None = None,
    arm: str | None = None,
    scenario: str | None = None,
    now_ms: int | None = None,
) -> Event:
    """A validated impression record (the SDK's and the HTTP API's one way to build it); raises InvalidRecordError.

    ``None`` arguments are left out of the record, as an absent field. ``items`` may be any list or tuple (a
    string is no list of ids: it is refused).
    """
    listed = list(items) if isinstance(items, list | tuple) else items
    obj: dict[str, Any] = {"user_id": user_id, "type": IMPRESSION, "items": listed, "ts": ts}
    for name, value in (("model_version", model_version), ("arm", arm), ("scenario", scenario)):
        if value is not None:
            obj[name] = value
    return validate_event(obj, now_ms)


def parse_event(raw: bytes, now_ms: int | None = None) -> Event:
    """Decode and validate one ``events`` record; raises InvalidRecordError with the reason."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecordError(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    obj = _loads(raw)
    return validate_event(obj, now_ms)


def dead_letter(raw: bytes, reason: str, source_topic: str, max_reason_chars: int = 500) -> bytes:
    """The ``events.dlq`` record: the original bytes (base64, and as text when UTF-8) with the reason."""
    envelope: dict[str, Any] = {
        "reason": reason[:max_reason_chars],
        "topic": source_topic,
        "original_b64": base64.b64encode(raw).decode(),
        "failed_at": int(time.time() * 1000),
    }
    try:
        envelope["original"] = raw.decode()
    except UnicodeDecodeError:
        pass
    return json.dumps(envelope, ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog upsert from the ``items`` topic."""

    item_id: str
    title: str
    ts: int
    text: str | None = None
    categories: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"item_id": self.item_id, "title": self.title, "ts": self.ts}
        out.update(categories=list(self.categories), attributes=self.attributes)
        if self.text is not None:
            out["text"] = self.text
        return out


MAX_TEXT_CHARS: int = _RULES["max_text_chars"]


def validate_item(obj: Any) -> Item:
    """Check a decoded ``items`` record; raises InvalidRecordError with the reason."""
    if not isinstance(obj, dict):
        raise InvalidRecordError(f"an item must be a JSON object, got {type(obj).__name__}")
    item_id = _id(obj, "item_id")
    title = obj.get("title")
    if not isinstance(title, str) or all(c in _BLANK for c in title) or len(title) > MAX_TITLE_CHARS:
        raise InvalidRecordError(f"field 'title' must be a non-empty string of <= {MAX_TITLE_CHARS} characters")
    _encodable(title, "title")
    ts = obj.get("ts", 0)
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise InvalidRecordError("field 'ts' must be a non-negative integer (epoch milliseconds)")
    text = obj.get("text")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
        raise InvalidRecordError(f"field 'text' must be a string of <= {MAX_TEXT_CHARS} characters")
    if text is not None:
        _encodable(text, "text")
    cats = obj.get("categories") or []
    if not isinstance(cats, list) or not all(isinstance(c, str) and c for c in cats):
        raise InvalidRecordError("field 'categories' must be a list of non-empty strings")
    attrs = obj.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise InvalidRecordError("field 'attributes' must be a JSON object")
    return Item(item_id, title, ts, text, tuple(cats), attrs)


def parse_item(raw: bytes) -> Item:
    """Decode and validate one ``items`` record."""
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecordError(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    obj = _loads(raw)
    return validate_item(obj)


def item_text(item: Mapping[str, Any]) -> str:
    """The text that describes an ``items`` topic record to the encoder (empty if it has none).

    ``"<title> (<year>) — <categories>"``, then the record's free ``text`` when it adds something
    (the data sets' own ``text`` is exactly that head, so it is not repeated). The year comes from
    ``attributes.year`` (or a top-level ``year``), the categories from ``categories`` (or ``genres``).
    The trainer embeds these texts, and so does the stream for items the model has not seen.

    Args:
        item: An ``items`` record: ``title``, optional ``text``, ``categories``, ``attributes``.

    Returns:
        The text; ``""`` for a record with neither title nor text.
    """
    title = str(item.get("title") or "").strip()
    attributes = item.get("attributes")
    attributes = attributes if isinstance(attributes, Mapping) else {}
    year = attributes.get("year", item.get("year"))
    label = f"{title} ({year})" if title and year is not None and f"({year})" not in title else title
    cats = [str(c) for c in (item.get("categories") or item.get("genres") or []) if c]
    head = f"{label} — {', '.join(cats)}" if label and cats else label or ", ".join(cats)
    text = str(item.get("text") or "").strip()
    if not text or text == head:
        return head
    if head and head in text:
        return text
    return f"{head}. {text}" if head else text
