"""The event log the trainer learns from: the retained ``events`` and ``items`` topics, read back to their end.

:class:`KafkaEventLog` is what the periodic trainer reads; :class:`MemoryEventLog` is the same
interface over lists (tests, notebooks, offline runs).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from model_export.data.datasets import Dataset, drop_forgotten
from streamrec.events import IMPRESSION, InvalidRecordError, parse_event


def _read_to_end(
    bootstrap: str, topic: str, timeout_s: float, client_config: Mapping[str, Any]
) -> Iterator[tuple[int, int, bytes]]:
    """``(partition, offset, value)`` of every record of ``topic`` up to its end at the time of the call."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client_config
    )
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                for rec in records:
                    if rec.offset < end[tp] and rec.value is not None:
                        yield tp.partition, rec.offset, rec.value
    finally:
        consumer.close()


def read_events(
    bootstrap: str, topic: str, timeout_s: float = 60.0, **client_config: Any
) -> list[dict[str, Any]]:
    """Every usable event on ``topic`` up to its current end, in (ts, partition, offset) order.

    A user's ``forget`` record removes the user's earlier events (:func:`~model_export.data.datasets.drop_forgotten`).
    """
    rows: list[tuple[int, int, int, dict[str, Any]]] = []
    for partition, offset, value in _read_to_end(bootstrap, topic, timeout_s, client_config):
        ev = _event(value)
        if ev is not None:
            rows.append((ev["ts"], partition, offset, ev))
    # rows are in log order per partition, where a user's forget record follows the user's events
    kept = {id(ev) for ev in drop_forgotten(r[3] for r in rows)}
    rows = [r for r in rows if id(r[3]) in kept]
    rows.sort(key=lambda r: r[:3])
    return [r[3] for r in rows]


def read_items(
    bootstrap: str, topic: str, timeout_s: float = 60.0, **client_config: Any
) -> dict[str, dict[str, Any]]:
    """The catalog on the ``items`` topic: the latest record of every item id (upserts).

    Records are keyed by item id, so one item's upserts share a partition and its highest offset
    is its latest; records that are not a JSON object with a string ``item_id`` are skipped.

    Returns:
        ``{item_id: record}``; empty when the topic does not exist.
    """
    latest: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for _partition, offset, value in _read_to_end(bootstrap, topic, timeout_s, client_config):
        try:
            item = json.loads(value)
        except ValueError:
            continue
        if not isinstance(item, dict) or not isinstance(item.get("item_id"), str):
            continue
        ts = item["ts"] if isinstance(item.get("ts"), int) else 0
        # A re-keyed producer could put an item on two partitions: the newest ts wins, then the offset.
        if item["item_id"] not in latest or (ts, offset) >= latest[item["item_id"]][:2]:
            latest[item["item_id"]] = (ts, offset, item)
    return {item_id: rec for item_id, (_, _, rec) in latest.items()}


def read_dataset(
    bootstrap: str, events_topic: str, items_topic: str, timeout_s: float = 60.0, **client_config: Any
) -> Dataset:
    """The retained topics as a :class:`~model_export.data.datasets.Dataset` named ``events-log``.

    The name is the one ``train --from-kafka`` gives the log. Its events are :func:`read_events`' (time order,
    forgotten users dropped), its items the latest record of each item id (:func:`read_items`): what
    ``streamrec eval --from-kafka`` evaluates on.
    """
    events = read_events(bootstrap, events_topic, timeout_s, **client_config)
    items = read_items(bootstrap, items_topic, timeout_s, **client_config)
    return Dataset(name="events-log", events=events, items=list(items.values()))


def _event(raw: bytes) -> dict[str, Any] | None:
    """A record as training reads it (its wire form), or None: refused by the event contract, a skip, an impression.

    The trainer learns from what the stream applies: a record the stream dead-letters is skipped. Forget
    records are kept, for :func:`~model_export.data.datasets.drop_forgotten`, which removes them. An impression
    (a list shown) is no interaction and has no ``item_id``: the sequences never see it.
    """
    try:
        ev = parse_event(raw)
    except InvalidRecordError:
        return None
    return None if ev.type in ("skip", IMPRESSION) else ev.to_dict()


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


class EventLog(Protocol):
    """What the periodic trainer reads: the events, the catalog, and a cheap measure of the log's growth."""

    def events(self) -> list[dict[str, Any]]:
        """Every usable event, in event-time order."""
        ...

    def items(self) -> dict[str, dict[str, Any]]:
        """The latest ``items`` record of every item id."""
        ...

    def end(self) -> int:
        """Records on the events log so far (any kind); grows as records arrive."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class KafkaEventLog:
    """The ``events`` and ``items`` topics of a Kafka cluster.

    Attributes:
        bootstrap: ``host:port`` of a broker.
        events_topic: The retained events topic.
        items_topic: The catalog topic, or None for no item texts.
        client_config: Extra kafka-python client settings (security protocol, SASL).
        timeout_s: Longest a full read of one topic may take.
    """

    bootstrap: str
    events_topic: str
    items_topic: str | None = None
    client_config: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 120.0
    _consumer: Any = field(default=None, init=False, repr=False)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.bootstrap, self.events_topic, self.timeout_s, **self.client_config)

    def items(self) -> dict[str, dict[str, Any]]:
        if self.items_topic is None:
            return {}
        return read_items(self.bootstrap, self.items_topic, self.timeout_s, **self.client_config)

    def end(self) -> int:
        """Sum of the events topic's end offsets: one metadata round trip on a kept connection."""
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, **self.client_config
            )
        found = self._consumer.partitions_for_topic(self.events_topic) or ()
        parts = [TopicPartition(self.events_topic, p) for p in sorted(found)]
        return int(sum(self._consumer.end_offsets(parts).values())) if parts else 0

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class MemoryEventLog:
    """An event log held in memory (the test double of :class:`KafkaEventLog`): :meth:`extend` makes it grow."""

    event_records: list[dict[str, Any]] = field(default_factory=list)
    item_records: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        usable = [dict(e) for e in self.event_records if _event(json.dumps(e).encode()) is not None]
        return sorted(drop_forgotten(usable), key=lambda e: e["ts"])

    def items(self) -> dict[str, dict[str, Any]]:
        return {str(it["item_id"]): dict(it) for it in self.item_records}

    def end(self) -> int:
        return len(self.event_records)

    def close(self) -> None:
        return None

    def extend(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events (as a producer would)."""
        self.event_records.extend(events)
