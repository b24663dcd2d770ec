"""The earlier all-Python interest job (``job.design: python``), kept only to measure it beside :mod:`jobs.interest`.

``events`` -> validate -> key by user -> interest state -> batched writer -> Redis, every stage in Python.

Cost model (PyFlink): every record and every state access crosses between the JVM and Python, so the
per-user function does one ValueState read and one write per event (the whole state is one pickled
object), and all slow work (scoring, Redis) happens in :mod:`jobs.writer`, batched per flush.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    DataStream,
    KeyedBroadcastProcessFunction,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ValueStateDescriptor

from jobs.catalog import CATALOG, CATALOG_IDS, PublishItems
from jobs.kafka_io import DLQ_TAG, KAFKA_BYTES
from jobs.state import UserState, apply_event, forgotten
from jobs.writer import RecommendationWriter, shard_of
from streamrec.config import JobConfig, Settings
from streamrec.events import FORGET, Event, InvalidRecordError, Item, dead_letter, parse_event

JOB_NAME = "streamrec-interest"


class ParseEvents(ProcessFunction):
    """Bytes from Kafka -> Event; a bad record goes to the dead-letter side output with its reason."""

    def __init__(self, source_topic: str, max_reason_chars: int) -> None:
        self.source_topic = source_topic
        self.max_reason_chars = max_reason_chars

    def process_element(self, value: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        try:
            yield parse_event(bytes(value))
        except InvalidRecordError as exc:
            yield DLQ_TAG, dead_letter(bytes(value), exc.reason, self.source_topic, self.max_reason_chars)


class EventTime(TimestampAssigner):
    """Event time is the event's own ``ts``."""

    def extract_timestamp(self, value: Event, record_timestamp: int) -> int:
        return value.ts


class UserInterest(KeyedBroadcastProcessFunction):
    """Keyed by user: apply each event to the user's state and emit the updated state downstream.

    The catalog arrives as broadcast state, so interests decay per category as well as per scenario. A Python
    dict mirrors it: one broadcast-state read per item per subtask lifetime, not one per event.
    """

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY()))
        self.facets: dict[str, tuple[str, ...]] = {}

    def _facets(self, item_id: str, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> tuple[str, ...]:
        facets = self.facets.get(item_id)
        if facets is None:  # first sight since (re)start: the restored broadcast state knows it
            categories = ctx.get_broadcast_state(CATALOG).get(item_id) or ()
            facets = self.facets[item_id] = tuple(f"category:{c}" for c in categories)
        return facets

    def process_element(self, ev: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[UserState]:
        if ev.type == FORGET:
            # The right to be forgotten: all of the user's keyed state goes (a later event starts afresh), and
            # the tombstone tells the writer to delete the user's Redis keys.
            self.state.clear()
            yield forgotten(ev.user_id)
            return
        state = self.state.value() or UserState(ev.user_id)
        apply_event(state, ev, self.cfg, self._facets(ev.item_id, ctx))
        self.state.update(state)
        yield state

    def process_broadcast_element(self, item: Item, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        ctx.get_broadcast_state(CATALOG).put(item.item_id, list(item.categories))
        self.facets[item.item_id] = tuple(f"category:{c}" for c in item.categories)


def watermarks(cfg: JobConfig) -> WatermarkStrategy:
    """Bounded out-of-orderness on the event's ``ts``; idle partitions do not hold time back."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.watermark_out_of_orderness_ms))
    return strategy.with_timestamp_assigner(EventTime()).with_idleness(Duration.of_millis(cfg.watermark_idleness_ms))


@dataclass
class InterestJob:
    """The streams :func:`build_interest_job` made, for sinks to attach to."""

    states: DataStream
    dead_letters: DataStream
    writes: DataStream


def build_interest_job(
    env: StreamExecutionEnvironment, source: DataStream, settings: Settings, items: DataStream
) -> InterestJob:
    """Wire the job on ``source`` (raw ``events`` record bytes) and ``items`` (raw catalog upserts).

    ``writes`` carries one JSON record (bytes) per user written to Redis (the audit stream), and
    ``dead_letters`` the dead-letter records of both inputs; :func:`main` sends both to Kafka, tests collect them.
    """
    cfg = settings.job
    parsed = (
        source.process(ParseEvents(settings.kafka.events_topic, cfg.dlq_reason_max_chars))
        .name("parse events")
        .uid("parse-events")
    )
    catalog = items.process(PublishItems(settings)).name("catalog -> Redis").uid("catalog")
    dead = parsed.get_side_output(DLQ_TAG).union(catalog.get_side_output(DLQ_TAG))
    timed = parsed.assign_timestamps_and_watermarks(watermarks(cfg)).name("event time")
    states = (
        timed.key_by(lambda e: e.user_id, key_type=Types.STRING())
        .connect(catalog.broadcast(CATALOG))
        .process(UserInterest(cfg))
        .name("user interest")
        .uid("user-interest")
    )
    writes = (
        states.key_by(lambda s: shard_of(s.user_id, cfg.writer_shards), key_type=Types.INT())
        .connect(catalog.broadcast(CATALOG_IDS))
        .process(RecommendationWriter(settings), output_type=KAFKA_BYTES)
        .name("score + write Redis")
        .uid("writer")
    )
    return InterestJob(states=states, dead_letters=dead, writes=writes)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, wire real Kafka, run the job until cancelled."""
    from jobs.kafka_io import kafka_sink, kafka_source, make_env
    from streamrec.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: $STREAMREC_CONFIG, then built-in defaults)")
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    env = make_env(settings)
    # Stable uids: a restart from a checkpoint (or an upgrade from a savepoint) maps state by them.
    source = env.from_source(kafka_source(settings), WatermarkStrategy.no_watermarks(), "kafka: events").uid(
        "kafka-events"
    )
    items = env.from_source(
        kafka_source(settings, settings.kafka.items_topic), WatermarkStrategy.no_watermarks(), "kafka: items"
    ).uid("kafka-items")
    job = build_interest_job(env, source, settings, items)
    job.dead_letters.sink_to(kafka_sink(settings, settings.kafka.dlq_topic)).name("kafka: events.dlq").uid("kafka-dlq")
    job.writes.sink_to(kafka_sink(settings, settings.kafka.recommendations_topic)).name("kafka: recommendations").uid(
        "kafka-recommendations"
    )
    client = env.execute_async(JOB_NAME)
    # `streamrec job start` waits for this line; under `flink run -d` the client returns here.
    print(f"{JOB_NAME} submitted as job {client.get_job_id()}", flush=True)
    if settings.flink.cluster is None:
        client.get_job_execution_result().result()


if __name__ == "__main__":
    from jobs.interest_python import main as imported_main

    imported_main()
