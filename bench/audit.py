"""The writer's audit topic read back in a background thread: what the benchmarks know of Redis writes."""

from __future__ import annotations

import threading
import time
from collections import defaultdict


class AuditLog:
    """Background consumer of the writer's audit topic: per user, ``(written_at, events)`` of every record.

    ``keep_records=False`` keeps only each user's highest event count (enough to count applied events; a
    million users' records would not fit the benchmark's budget).
    """

    def __init__(self, bootstrap: str, topic: str, keep_records: bool = True) -> None:
        self.bootstrap, self.topic, self.keep_records = bootstrap, topic, keep_records
        self.records: dict[str, list[tuple[int, int]]] = defaultdict(list)
        # The records of recommendation writes only (``scored``; a record without the flag wrote both).
        self.scored: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.high: dict[str, int] = defaultdict(int)  # user -> most events seen in one record
        self.consumed = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                     fetch_max_wait_ms=50, max_poll_records=10_000)
            parts = None
            while not parts and not self._stop.is_set():
                parts = consumer.partitions_for_topic(self.topic)
                time.sleep(0.1)
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(parts or ())])
            consumer.seek_to_beginning()
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=100).values():
                    for msg in batch:
                        for rec in self.rows(msg.value):
                            user, events = rec["user_id"], int(rec["events"])
                            if self.keep_records:
                                self.records[user].append((int(rec["written_at"]), events))
                                if rec.get("scored", True):
                                    self.scored[user].append((int(rec["written_at"]), events))
                            if events > self.high[user]:
                                self.high[user] = events
                            self.consumed += 1
            consumer.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced by applied()
            self.error = exc

    @staticmethod
    def rows(value: bytes) -> list[dict]:
        """A record of the audit topic (one per Redis round trip of the writer) as rows per user."""
        from jobs.batch_writer import audit_rows

        return audit_rows(value)

    def applied(self, sent: dict[str, int]) -> int:
        """How many of these users' events (user -> events sent) Redis has seen so far."""
        if self.error is not None:
            raise self.error
        return sum(min(self.high.get(u, 0), n) for u, n in sent.items())

    def wait(self, sent: dict[str, int], timeout: float) -> bool:
        """Wait until every event sent is in Redis (True), or the timeout (False)."""
        total = sum(sent.values())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.applied(sent) >= total:
                return True
            time.sleep(0.25)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
