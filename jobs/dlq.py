"""Operator tools for the dead-letter topic (``kafka.dlq_topic``): read the dead letters back, and replay them.

Two kinds of record share the topic:

- the JVM decoder's (events), written by ``jobs/jvm/.../DeadLetterSink.java``: the original key as the Kafka
  key, the original headers followed by Kafka Connect-style ``__connect.errors.*`` context headers, and a JSON
  envelope ``{"reason", "topic", "partition", "offset", "timestamp", "key_b64", "key", "original_b64",
  "original", "failed_at"}`` as the value;
- the Python path's (items), :func:`streamrec.events.dead_letter`: the envelope's ``reason``, ``topic``,
  ``original_b64``, ``original`` and ``failed_at`` only, no key and no headers.

A record that is not an envelope (a Kafka Connect dead letter, whose value is the original itself) is read with
its context from the headers alone, so that listing never fails on a foreign record.

    from jobs.dlq import read_dead_letters, replay
    letters = read_dead_letters(settings, since_ms=None, reason="field 'ts'", limit=100)
    report = replay(settings, letters, fix={"ts": 1700000000000}, dry_run=True)

Plain kafka-python: no PyFlink here, so the CLI starts in a second.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.errors import JobError
from streamrec.config import Settings, kafka_client_options

log = logging.getLogger(__name__)

# The context headers of DeadLetterSink.java (the names Kafka Connect's dead-letter queues use).
CONNECT_PREFIX = "__connect.errors."
# The header a replayed record carries: where on the dead-letter topic it came from.
REPLAYED_FROM = "streamrec.replayed-from"

# The topics' keys (docs/architecture.md): a dead letter without its key is re-sent keyed by this field of its
# value, so that a user's events and an item's upserts keep sharing one partition (and thus their order).
KEY_FIELDS = {"events_topic": "user_id", "items_topic": "item_id"}

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


class NotFixableError(ValueError):
    """A ``fix`` was asked for a record whose original is not a JSON object."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, decoded: where it is, why it failed, and the original record.

    ``topic``, ``partition`` and ``offset`` are the source record's (``None`` when the dead letter does not
    say); ``headers`` are the original record's, without the ``__connect.errors.*`` context headers;
    ``timestamp`` is the original record's timestamp and ``failed_at`` when it was dead-lettered (epoch ms,
    ``None`` when unknown).
    """

    dlq_partition: int
    dlq_offset: int
    reason: str
    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    original: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    failed_at: int | None = None
    timestamp: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as text where UTF-8 (``key``, ``original``, header ``value``) and always as base64."""
        out: dict[str, Any] = {
            "dlq_partition": self.dlq_partition,
            "dlq_offset": self.dlq_offset,
            "failed_at": self.failed_at,
            "reason": self.reason,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
        }
        out.update(_bytes_fields("key", self.key))
        out.update(_bytes_fields("original", self.original))
        out["headers"] = [{"key": k, **_bytes_fields("value", v)} for k, v in self.headers]
        return out


def _bytes_fields(name: str, raw: bytes | None) -> dict[str, Any]:
    """``{name: text (None when not UTF-8), name_b64: base64}``, or ``{name: None}`` for no bytes at all."""
    if raw is None:
        return {name: None}
    return {name: _utf8_or_none(raw), f"{name}_b64": base64.b64encode(raw).decode()}


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class ReplayedRecord:
    """A record :func:`replay` sent (or, under ``dry_run``, would send) back to its source topic."""

    dead_letter: str  # "<dlq topic>/<dlq partition>/<dlq offset>"
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int | None
    fixed: bool


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """A dead letter :func:`replay` did not send, and why."""

    dead_letter: str
    reason: str


@dataclass
class ReplayReport:
    """What :func:`replay` did: the records sent (would-be sent under ``dry_run``), skipped, and failed to send."""

    dry_run: bool
    replayed: list[ReplayedRecord] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)  # not sent on purpose (no topic, not fixable)
    failed: list[SkippedRecord] = field(default_factory=list)  # Kafka did not acknowledge them

    @property
    def sent(self) -> int:
        """Records actually sent: 0 under ``dry_run``."""
        return 0 if self.dry_run else len(self.replayed)


def parse_since(text: str, now_ms: int | None = None) -> int:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``, ``1w``, ``1h30m``) or an ISO time.

    An ISO timestamp without a zone is UTC (the zone ``list`` prints times in).

    Returns:
        epoch ms.

    Raises:
        ValueError: neither a duration nor an ISO timestamp.
    """
    s = text.strip()
    if s and _DURATION.sub("", s).strip() == "":
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION.findall(s))
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        msg = f"--since {text!r}: expected a duration such as 10m, 2h, 1d or an ISO timestamp"
        raise ValueError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def apply_fix(original: bytes, fix: Mapping[str, Any]) -> bytes:
    """The original record with the top-level fields of ``fix`` set (a value of ``None`` removes the field).

    Raises:
        NotFixableError: the original is not a UTF-8 JSON object.
    """
    try:
        obj = json.loads(original)
    except (UnicodeDecodeError, ValueError):
        raise NotFixableError("the original is not JSON") from None
    if not isinstance(obj, dict):
        msg = f"the original is a JSON {_JSON_KINDS.get(type(obj), 'value')}, not an object"
        raise NotFixableError(msg)
    for name, value in fix.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    # The producer SDK's encoding (jobs.producer): compact, non-ASCII kept as UTF-8.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def decode_dead_letter(
    dlq_partition: int,
    dlq_offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    timestamp: int | None = None,
) -> DeadLetterRecord:
    """A dead-letter Kafka record (either kind, see the module's doc) as a :class:`DeadLetterRecord`.

    ``timestamp`` is the dead-letter record's own Kafka timestamp; only a Kafka Connect-style record (no
    envelope) carries the original's there.
    """
    # kafka-python sends header values as bytes only: a null header value is kept as empty bytes.
    pairs = [(k, v if v is not None else b"") for k, v in headers]
    context = {k[len(CONNECT_PREFIX) :]: v.decode(errors="replace") for k, v in pairs if k.startswith(CONNECT_PREFIX)}
    original_headers = tuple((k, v) for k, v in pairs if not k.startswith(CONNECT_PREFIX))
    env = _envelope(value)
    if env is None:  # not ours: the value is the original itself (Kafka Connect's layout), the context in headers
        return DeadLetterRecord(
            dlq_partition=dlq_partition,
            dlq_offset=dlq_offset,
            reason=context.get("exception.message") or "(not a streamrec dead letter: no envelope)",
            topic=context.get("topic") or None,
            partition=_int(context.get("partition")),
            offset=_int(context.get("offset")),
            key=key,
            original=value or b"",
            headers=original_headers,
            failed_at=None,
            timestamp=timestamp if context else None,
        )
    # The header has the whole reason; the envelope's is cut at job.dlq_reason_max_chars.
    reason = context.get("exception.message") or _str(env.get("reason")) or ""
    return DeadLetterRecord(
        dlq_partition=dlq_partition,
        dlq_offset=dlq_offset,
        reason=reason,
        topic=_str(env.get("topic")) or context.get("topic") or None,
        partition=_int(env.get("partition"), context.get("partition")),
        offset=_int(env.get("offset"), context.get("offset")),
        # The Kafka key is the original key (DeadLetterSink); the envelope's copy is for readers of the value only.
        key=key if key is not None else _b64(env.get("key_b64"), env.get("key")),
        original=_b64(env.get("original_b64"), env.get("original")) or b"",
        headers=original_headers,
        failed_at=_int(env.get("failed_at")),
        timestamp=_int(env.get("timestamp")),
    )


def _envelope(value: bytes | None) -> dict[str, Any] | None:
    """The JSON envelope of a streamrec dead letter, or None when the value is not one."""
    if value is None:
        return None
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(obj, dict) and ("original_b64" in obj or "original" in obj) and "reason" in obj:
        return obj
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(*values: Any) -> int | None:
    """The first of ``values`` that is an integer (or a header's decimal text)."""
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            return int(v)
    return None


def _b64(b64: Any, text: Any) -> bytes | None:
    """The bytes of an envelope field: its base64 form, else its text form (UTF-8), else None."""
    if isinstance(b64, str):
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            pass
    return text.encode() if isinstance(text, str) else None


def read_dead_letters(
    settings: Settings,
    since_ms: int | None = None,
    reason: str | None = None,
    limit: int | None = None,
    timeout_s: float = 60.0,
) -> list[DeadLetterRecord]:
    """Every dead letter on ``settings.kafka.dlq_topic`` up to its end at the call, oldest failure first.

    Reads all partitions from the beginning without a consumer group (nothing committed, nothing to clean up).

    Args:
        settings: the configuration (bootstrap, dlq topic, security options).
        since_ms: keep records with ``failed_at >= since_ms`` (a record whose failure time is unknown is dropped).
        reason: keep records whose reason contains this (case-insensitive).
        limit: keep the first ``limit`` records (oldest first) after the filters.
        timeout_s: give up if the end is not reached in this time.

    Returns:
        the records, sorted by ``(failed_at, dlq partition, dlq offset)``; empty when the topic does not exist.

    Raises:
        JobError: the end of the topic was not reached within ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition

    k = settings.kafka
    wanted = reason.casefold() if reason else None
    out: list[DeadLetterRecord] = []
    consumer = KafkaConsumer(
        bootstrap_servers=k.bootstrap, enable_auto_commit=False, group_id=None, **kafka_client_options(k)
    )
    try:
        parts = [TopicPartition(k.dlq_topic, p) for p in sorted(consumer.partitions_for_topic(k.dlq_topic) or ())]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        # The end offsets now: records dead-lettered while we read are for the next call, so the read ends.
        end = consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                msg = f"could not read {k.dlq_topic} to its end from {k.bootstrap} within {timeout_s:.0f}s"
                raise JobError(msg)
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                for rec in records:
                    if rec.offset >= end[tp]:
                        continue
                    letter = decode_dead_letter(
                        tp.partition, rec.offset, rec.key, rec.value, rec.headers or (), rec.timestamp
                    )
                    if since_ms is not None and (letter.failed_at is None or letter.failed_at < since_ms):
                        continue
                    if wanted is not None and wanted not in letter.reason.casefold():
                        continue
                    out.append(letter)
    finally:
        consumer.close()
    out.sort(key=lambda r: (r.failed_at if r.failed_at is not None else -1, r.dlq_partition, r.dlq_offset))
    log.debug("read %d dead letters from %s", len(out), k.dlq_topic)
    return out[:limit] if limit is not None else out


def plan_replay(
    settings: Settings, records: Iterable[DeadLetterRecord], fix: Mapping[str, Any] | None = None
) -> ReplayReport:
    """What :func:`replay` would send for ``records`` (and which it would skip), without touching Kafka."""
    report = ReplayReport(dry_run=True)
    key_fields = {getattr(settings.kafka, name): f for name, f in KEY_FIELDS.items()}
    for r in records:
        where = f"{settings.kafka.dlq_topic}/{r.dlq_partition}/{r.dlq_offset}"
        if not r.topic:
            report.skipped.append(SkippedRecord(where, "the dead letter does not name its source topic"))
            continue
        value = r.original
        if fix:
            try:
                value = apply_fix(r.original, fix)
            except NotFixableError as exc:
                report.skipped.append(SkippedRecord(where, f"cannot fix: {exc}"))
                continue
        key = r.key if r.key is not None else _key_from_value(value, key_fields.get(r.topic))
        # A record dead-lettered again after a replay carries the earlier replay's header: keep only the newest.
        headers = tuple((h, v) for h, v in r.headers if h != REPLAYED_FROM) + ((REPLAYED_FROM, where.encode()),)
        report.replayed.append(ReplayedRecord(where, r.topic, key, value, headers, r.timestamp, bool(fix)))
    return report


def _key_from_value(value: bytes, key_field: str | None) -> bytes | None:
    """The topic's key field of a JSON object record (e.g. ``user_id`` on ``events``), or None."""
    if key_field is None:
        return None
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    key = obj.get(key_field) if isinstance(obj, dict) else None
    return key.encode() if isinstance(key, str) and key else None


def replay(
    settings: Settings,
    records: Iterable[DeadLetterRecord],
    fix: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    timeout_s: float = 60.0,
) -> ReplayReport:
    """Re-send dead letters to their source topics, with their key, headers and timestamp, optionally fixed.

    Each record carries its original headers plus ``streamrec.replayed-from: <dlq topic>/<partition>/<offset>``.
    With ``fix``, the original is parsed as a JSON object and the given top-level fields set (``None``: removed);
    a record that is not a JSON object is skipped, as is one that does not name its source topic. A record
    without a key is keyed by its topic's key field (``user_id``, ``item_id``) when it has one.

    Args:
        settings: the configuration (bootstrap, security options, topic names).
        records: what :func:`read_dead_letters` returned, sent in this order.
        fix: top-level fields to set in every record.
        dry_run: plan only: nothing is sent (``report.sent == 0``, ``report.replayed`` lists what would be).
        timeout_s: how long to wait for Kafka to acknowledge every record.

    Returns:
        the report; every record in ``report.replayed`` is acknowledged by Kafka unless ``dry_run``, and the
        ones Kafka did not take are in ``report.failed``. The producer is flushed and closed before it returns.
    """
    report = plan_replay(settings, records, fix)
    report.dry_run = dry_run
    if dry_run or not report.replayed:
        return report
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    k = settings.kafka
    producer = KafkaProducer(bootstrap_servers=k.bootstrap, acks="all", linger_ms=5, **kafka_client_options(k))
    planned, report.replayed = report.replayed, []
    try:
        futures = [
            producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers), timestamp_ms=r.timestamp)
            for r in planned
        ]
        deadline = time.monotonic() + timeout_s
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError:
            pass  # the futures below say which records did not make it
        # Each record's own outcome: after a partial failure the operator must know which ones were sent.
        for r, f in zip(planned, futures, strict=True):
            try:
                f.get(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaError as exc:
                report.failed.append(SkippedRecord(r.dead_letter, f"not sent to {r.topic}: {exc}"))
            else:
                report.replayed.append(r)
    finally:
        producer.close()
    log.info(
        "replayed %d dead letters, skipped %d, failed %d", len(report.replayed), len(report.skipped), len(report.failed)
    )
    return report
