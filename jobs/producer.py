"""The producer SDK: validated events and catalog items into Kafka, and replays of data sets in event-time order.

from jobs.producer import EventProducer
with EventProducer("127.0.0.1:9092") as p:
p.send({"user_id": "42", "item_id": "7", "type": "click", "ts": 1700000000000})
p.send_impression("42", ["7", "9", "12"], model_version="v0003", arm="exp-1:b")  # the list the user was shown
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streamrec.events import FORGET, Event, make_impression, validate_event, validate_item


class EventProducer:
    """kafka-python producer that refuses invalid records before they reach the topic."""

    def __init__(
        self, bootstrap: str, events_topic: str = "events", items_topic: str = "items", **client_config: Any
    ) -> None:
        from kafka import KafkaProducer

        self.events_topic, self.items_topic = events_topic, items_topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks="all", **client_config
        )

    def send(self, event: Mapping[str, Any] | Event) -> Event:
        """Validate and send one event (key = user id, record timestamp = event time); returns it."""
        ev = event if isinstance(event, Event) else validate_event(dict(event))
        self._producer.send(self.events_topic, key=ev.user_id.encode(), value=ev.to_json(), timestamp_ms=ev.ts)
        return ev

    def forget(self, user_id: str, ts: int | None = None, timeout_s: float = 30.0) -> Event:
        """Ask the stream to forget a user: a ``forget`` record, returned once Kafka has acknowledged it.

        Keyed by the user id like the user's events, it lands on their partition after them, so the job
        applies it after everything the user did before (``ts`` default: now, epoch ms).

        Raises:
            kafka.errors.KafkaError: Kafka did not take the record within ``timeout_s``.
        """
        ev = validate_event({"user_id": user_id, "type": FORGET, "ts": int(time.time() * 1000) if ts is None else ts})
        future = self._producer.send(self.events_topic, key=ev.user_id.encode(), value=ev.to_json(), timestamp_ms=ev.ts)
        future.get(timeout=timeout_s)
        return ev

    def send_impression(
        self,
        user_id: str,
        items: Sequence[str],
        *,
        ts: int | None = None,
        model_version: str | None = None,
        arm: str | None = None,
        scenario: str | None = None,
        timeout_s: float | None = None,
    ) -> Event:
        """Validate and send one impression: the list ``items`` (in the order shown) a front-end showed the user.

        Keyed by the user id like the user's events (``ts`` default: now, epoch ms); ``model_version`` and ``arm``
        name the model and the A/B arm that produced the list. The job counts each item as shown until the user
        acts on it. Returns the record sent: at once, like :meth:`send`, or with ``timeout_s`` once Kafka has
        acknowledged it (what the HTTP API waits for, so that a Kafka outage is its 503).

        Raises:
            InvalidRecordError: the record breaks the contract (a bad id, no items or more than
                ``MAX_IMPRESSION_ITEMS``, a bad label); nothing is sent.
            kafka.errors.KafkaError: with ``timeout_s``, Kafka did not take the record in time.
        """
        ev = make_impression(
            user_id, items, int(time.time() * 1000) if ts is None else ts,
            model_version=model_version, arm=arm, scenario=scenario,
        )
        future = self._producer.send(self.events_topic, key=ev.user_id.encode(), value=ev.to_json(), timestamp_ms=ev.ts)
        if timeout_s is not None:
            future.get(timeout=timeout_s)
        return ev

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Send bytes unvalidated (for tests of the dead-letter path and for foreign producers)."""
        self._producer.send(self.events_topic, key=key, value=value)

    def send_item(self, item: Mapping[str, Any]) -> None:
        """Validate and send one catalog upsert (key = item id)."""
        it = validate_item(dict(item))
        payload = json.dumps(it.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
        self._producer.send(self.items_topic, key=it.item_id.encode(), value=payload)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay(
    producer: EventProducer,
    events: Iterable[Mapping[str, Any]],
    rate: float | None = None,
    limit: int | None = None,
    progress: bool = True,
    total: int | None = None,
) -> int:
    """Send events in the given (event-time) order, at ``rate`` events/s or as fast as possible; returns the count."""
    from tqdm import tqdm

    sent = 0
    start = time.monotonic()
    total = min(total, limit) if total and limit else (limit or total)
    with tqdm(total=total, unit="ev", disable=not progress, desc="replay") as bar:
        for event in events:
            if limit is not None and sent >= limit:
                break
            producer.send(event)
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            if sent % 1000 == 0:
                bar.update(1000)
        bar.update(sent % 1000)
    producer.flush()
    return sent
