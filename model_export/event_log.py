"""The event log the trainer learns from: the retained ``events`` topic, read back from Kafka to its end."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

# Records the stream refused go to the dead-letter topic; the trainer skips what it cannot use.
_REQUIRED = ("user_id", "item_id", "ts")


def read_events(
    bootstrap: str, topic: str, timeout_s: float = 60.0, **client_config: Any
) -> list[dict[str, Any]]:
    """Every usable event on ``topic`` up to its current end, in (ts, partition, offset) order."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client_config
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        rows: list[tuple[int, int, int, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                for rec in records:
                    ev = _usable(rec.value)
                    if ev is not None:
                        rows.append((ev["ts"], tp.partition, rec.offset, ev))
        rows.sort(key=lambda r: r[:3])
        return [r[3] for r in rows]
    finally:
        consumer.close()


def _usable(raw: bytes) -> dict[str, Any] | None:
    try:
        ev = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(ev, dict) or not all(
        isinstance(ev.get(f), str if f != "ts" else int) for f in _REQUIRED
    ):
        return None
    return None if ev.get("type") == "skip" else ev


def popular_items(
    events: Iterable[Mapping[str, Any]], k: int, window_ms: int | None = None
) -> list[tuple[str, float]]:
    """The k most interacted items, over the last ``window_ms`` of the log when given: the unknown-user fallback."""
    evs = list(events)
    if window_ms is not None and evs:
        horizon = max(e["ts"] for e in evs) - window_ms
        evs = [e for e in evs if e["ts"] >= horizon]
    counts = Counter(e["item_id"] for e in evs)
    total = sum(counts.values()) or 1
    return [(item, n / total) for item, n in counts.most_common(k)]
