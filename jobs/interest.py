"""The user-interest job: ``events`` -> validate -> key by user -> interest state -> batched writer -> Redis.

Run it (the embedded MiniCluster, with the settings of ``streamrec.config``)::

    .venv/bin/python -m jobs.interest [--config config.yaml]

or through the CLI: ``streamrec job start [--cluster http://host:8081]``.

Cost model (PyFlink): every record and every state access crosses between the JVM and Python, so the
per-user function does one ValueState read and one write per event (the whole state is one pickled
object), and all slow work (scoring, Redis) happens in :mod:`jobs.writer`, batched per flush.
"""

from __future__ import annotations

import argparse
import bisect
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
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
from jobs.errors import InvalidRecordError
from jobs.events import FORGET, Event, Item, dead_letter, parse_event
from jobs.kafka_io import DLQ_TAG, KAFKA_BYTES
from streamrec.config import JobConfig, Settings

# How much one action says about interest; a rating's weight is its value relative to the scale's middle.
TYPE_WEIGHT = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "skip": -1.0}
RATING_MIDPOINT = 2.5
MS_PER_HOUR = 3_600_000
JOB_NAME = "streamrec-interest"
DEFAULT_SCENARIO = "default"  # of events without one (model_export.data.datasets.DEFAULT_SCENARIO)


@dataclass(slots=True)
class UserState:
    """A user's interest state, stored as one pickled value (one state access per event)."""

    user_id: str
    events: int = 0
    last_ts: int = 0
    # (ts, item_id, scenario), in event-time order, the last `recent_items` only.
    recent: list[tuple[int, str, str]] = field(default_factory=list)
    # Every item the user interacted with (insertion-ordered, capped): never recommended back.
    seen: dict[str, None] = field(default_factory=dict)
    # Time-decayed interest per facet ("scenario:web", "category:Drama"), valid at `interests_ts`.
    interests: dict[str, float] = field(default_factory=dict)
    interests_ts: int = 0
    # (item_id, scenario) of the event just applied (None for a skip): the writer scores it against the
    # recommendations the user had then (the online hit rate).
    last_action: tuple[str, str] | None = None

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # A slots object pickles as (None, {field: value}); a state pickled before a field was added
        # (an older checkpoint or savepoint) gets that field's default.
        values = state[1]
        for f in fields(self):
            if f.name in values:
                value = values[f.name]
            else:
                value = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(self, f.name, value)
        # Entries before the scenario was kept were (ts, item_id).
        self.recent = [e if len(e) == 3 else (e[0], e[1], DEFAULT_SCENARIO) for e in self.recent]

    def recent_items(self) -> list[str]:
        """Item ids, oldest first."""
        return [e[1] for e in self.recent]

    def recent_times(self) -> list[int]:
        """Event times of :meth:`recent_items` (epoch ms)."""
        return [e[0] for e in self.recent]

    def recent_scenarios(self) -> list[str]:
        """Scenarios of :meth:`recent_items`."""
        return [e[2] for e in self.recent]

    def top_interests(self, n: int) -> dict[str, float]:
        """The n strongest facets (by magnitude: a negative weight is a dislike), strongest first."""
        return dict(sorted(self.interests.items(), key=lambda kv: -abs(kv[1]))[:n])


def forgotten(user_id: str) -> UserState:
    """The tombstone the job emits for a ``forget`` record: ``events == 0``, which no applied event leaves."""
    return UserState(user_id)


def is_forgotten(state: UserState) -> bool:
    """Whether ``state`` is the tombstone of a forgotten user (see :func:`forgotten`)."""
    return state.events == 0


def event_weight(ev: Event) -> float:
    """The interest signal of one event."""
    if ev.type == "rating":
        return (ev.value if ev.value is not None else RATING_MIDPOINT) - RATING_MIDPOINT
    return TYPE_WEIGHT[ev.type]


def apply_event(state: UserState, ev: Event, cfg: JobConfig, facets: tuple[str, ...] = ()) -> None:
    """Apply one event to the state, in place. Out-of-order events land at their event-time position."""
    state.events += 1
    state.last_ts = max(state.last_ts, ev.ts)
    state.last_action = None if ev.type == "skip" else (ev.item_id, ev.scenario or DEFAULT_SCENARIO)
    if ev.type != "skip":
        entry = (ev.ts, ev.item_id, ev.scenario or DEFAULT_SCENARIO)
        if not state.recent or ev.ts >= state.recent[-1][0]:
            state.recent.append(entry)
        else:
            bisect.insort_right(state.recent, entry, key=lambda e: e[0])
        del state.recent[: max(0, len(state.recent) - cfg.recent_items)]
        state.seen.pop(ev.item_id, None)
        state.seen[ev.item_id] = None
        overflow = len(state.seen) - cfg.max_seen_items
        for old in list(state.seen)[: max(0, overflow)]:
            del state.seen[old]
    half_life_ms = cfg.interest_half_life_hours * MS_PER_HOUR
    weight = event_weight(ev)
    if ev.ts >= state.interests_ts:
        decay = 0.5 ** ((ev.ts - state.interests_ts) / half_life_ms)
        state.interests = {k: v * decay for k, v in state.interests.items() if abs(v * decay) > 1e-6}
        state.interests_ts = ev.ts
    else:  # a late event counts as much as it would have decayed to by now
        weight *= 0.5 ** ((state.interests_ts - ev.ts) / half_life_ms)
    for facet in (f"scenario:{ev.scenario or DEFAULT_SCENARIO}", *facets):
        state.interests[facet] = state.interests.get(facet, 0.0) + weight


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
    from jobs.writer import RecommendationWriter, shard_of

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
    # Run the imported module's main, not this __main__ copy's: state objects must pickle as
    # jobs.interest.UserState, which the workers can import (`flink run -py jobs/interest.py`).
    from jobs.interest import main as imported_main

    imported_main()
