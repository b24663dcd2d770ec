"""The user-interest job: per-event work on the JVM, Python once per batch of users.

    events (Kafka) -> decode + validate (JVM; dead letters with their Kafka context -> events.dlq)
                   -> key by user -> interest state, flushed once per interval per user (JVM)
                   -> key by writer shard -> one batch per shard and flush (JVM)
                   -> Redis + scorer, once per batch (Python: :mod:`jobs.batch_writer`)
                   -> audit records -> recommendations (JVM splits the batch's lines)
    items (Kafka)  -> decode + validate (JVM; dead letters as above) -> broadcast to the interest state (JVM)
                   -> one batch per flush (JVM) -> item:{id} + catalog set (Python, :mod:`jobs.catalog`)
                   -> broadcast to the Python writer (new ids and texts)

The JVM operators are the Maven project ``jobs/jvm`` (built into the jars cache by ``make setup``); this module
wires them with py4j. Run it (the embedded MiniCluster, with the settings of ``streamrec.config``)::

    .venv/bin/python -m jobs.interest [--config config.yaml]

or through the CLI: ``streamrec job start [--cluster http://host:8081]``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.state import MapStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import to_jarray

from jobs.batch_writer import BatchWriter
from jobs.catalog import CatalogWriter
from jobs.kafka_io import KAFKA_BYTES
from jobs.state import RATING_MIDPOINT, TYPE_WEIGHT
from serving.store import INTEREST_DECIMALS, key
from streamrec.config import Settings
from streamrec.events import DEFAULT_SCENARIO, FORGET, IMPRESSION

JOB_NAME = "streamrec-interest"
# The strongest interests user:{id} shows.
TOP_INTERESTS = 10
# The writer's broadcast input (catalog batches): it keeps no broadcast state, Flink's API wants a descriptor.
CATALOG_BATCHES = MapStateDescriptor("catalog-batches", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# How long after its first user record a shard's batch leaves (the users' flush timers fire together).
BATCH_DELAY_MS = 20
# Empty batches keep coming (one per shard and flush) this long after the last user record, so that the writer
# drains its backlog of users to score when the events stop.
TICK_FOR_MS = 60_000
# Network buffers leave at least this often: a low-rate stream is not held back 100 ms per exchange.
BUFFER_TIMEOUT_MS = 5


def _ops() -> Any:  # noqa: ANN401 - the py4j package of our JVM operators
    return get_gateway().jvm.io.streamrec.jobs


def job_params(settings: Settings, bounded: bool, tick_for_ms: int = TICK_FOR_MS) -> Any:  # noqa: ANN401
    """The JVM operators' parameters (a py4j JobParams) from the config: the JVM side has no defaults of its own.

    ``tick_for_ms``: how long empty batches keep coming after the last record (0 for the catalog's batches).
    """
    j = settings.job
    params = {
        "recentItems": j.recent_items,
        "maxSeenItems": j.max_seen_items,
        "maxShownItems": j.max_shown_items,
        "halfLifeHours": j.interest_half_life_hours,
        "flushIntervalMs": j.flush_interval_ms,
        "shards": j.writer_shards,
        "dedupTtlMs": j.dedup_ttl_ms,
        "dedupMaxIds": j.dedup_max_ids,
        "topInterests": TOP_INTERESTS,
        "batchDelayMs": BATCH_DELAY_MS,
        "tickForMs": tick_for_ms,
        "flushAtEndOfInput": bounded,
        "forgetType": FORGET,
        "impressionType": IMPRESSION,
        "defaultScenario": DEFAULT_SCENARIO,
        "ratingMidpoint": RATING_MIDPOINT,
        "typeWeights": TYPE_WEIGHT,
        "userKeyPrefix": key("user", ""),
        "recKeyPrefix": key("rec", ""),
        "interestDecimals": INTEREST_DECIMALS,
    }
    return _ops().JobParams.fromJson(json.dumps(params))


@dataclass
class InterestJob:
    """The streams :func:`build_interest_job` made, for sinks to attach to."""

    dead_letters: DataStream  # envelope bytes of both inputs' dead letters (tests collect these)
    dead_letter_records: Any  # the same as JVM DeadLetters, for the Kafka sink that keeps key, headers and context
    writes: DataStream  # the audit records (JSON bytes): one per Redis round trip of the writer (audit_rows)
    # The writer's input: one batch per shard and flush, `{"shard", "final", "records": [user records]}`, a
    # newline, then the users' Redis commands (RESP). Tests read the user records (UserInterest.encode) here.
    batches: DataStream


def build_interest_job(
    env: StreamExecutionEnvironment, source: DataStream, settings: Settings, items: DataStream
) -> InterestJob:
    """Wire the job on ``source`` (``events``) and ``items`` (catalog upserts).

    Each is either raw record bytes (the test doubles of :mod:`jobs.testing`: bounded, so the end of input
    flushes everything) or the records :func:`kafka_records` decodes on the JVM.
    """
    ops, cfg, k = _ops(), settings.job, settings.kafka
    env.get_config().enable_object_reuse()  # chained JVM operators hand records on without copies
    env.set_buffer_timeout(BUFFER_TIMEOUT_MS)
    j_events, bounded = _decoded(source, k.events_topic, items=False)
    j_items, _ = _decoded(items, k.items_topic, items=True)
    params = job_params(settings, bounded)
    parsed = j_events.process(ops.Decode.split(), ops.Decode.eventType()).name("validate events").uid("validate-events")
    valid_items = j_items.process(ops.Decode.splitItems(), ops.Decode.bytesType()).name("validate items")
    valid_items = valid_items.uid("validate-items")
    dead = parsed.getSideOutput(ops.Decode.DEAD_LETTERS).union(
        to_jarray(get_gateway().jvm.org.apache.flink.streaming.api.datastream.DataStream,
                  [valid_items.getSideOutput(ops.Decode.DEAD_LETTERS)])
    )
    item_batches = (
        valid_items.map(ops.Decode.asRecord(), ops.Decode.userRecordType())
        .keyBy(ops.Decode.byShard())
        .process(ops.Batcher(job_params(settings, bounded, tick_for_ms=0)), ops.Decode.bytesType())
        .name("batch items")
        .uid("item-batcher")
    )
    catalog = DataStream(item_batches).process(CatalogWriter(settings), output_type=KAFKA_BYTES)
    catalog = catalog.name("catalog -> Redis").uid("catalog")
    catalog_facets = valid_items.broadcast(
        to_jarray(get_gateway().jvm.org.apache.flink.api.common.state.MapStateDescriptor, [ops.UserInterest.CATALOG])
    )
    users = (
        parsed.keyBy(ops.Decode.byUser())
        .connect(catalog_facets)
        .process(ops.UserInterest(params), ops.Decode.userRecordType())
        .name("user interest")
        .uid("user-interest")
    )
    batches = (
        users.keyBy(ops.Decode.byShard())
        .process(ops.Batcher(params), ops.Decode.bytesType())
        .name("batch per shard")
        .uid("batcher")
    )
    writer_input = DataStream(batches)
    audit = (
        writer_input.connect(catalog.broadcast(CATALOG_BATCHES))
        .process(BatchWriter(settings), output_type=KAFKA_BYTES)
        .name("score + write Redis")
        .uid("writer")
    )
    writes = DataStream(
        audit._j_data_stream.flatMap(ops.SplitLines(), ops.Decode.bytesType()).name("audit records").uid("audit")
    )
    envelopes = DataStream(
        dead.map(ops.Decode.envelope(cfg.dlq_reason_max_chars), ops.Decode.bytesType()).name("dead letters")
    )
    return InterestJob(dead_letters=envelopes, dead_letter_records=dead, writes=writes, batches=writer_input)


def _decoded(stream: DataStream, topic: str, items: bool) -> tuple[Any, bool]:
    """(the JVM stream of decoded records, whether the input is bounded raw bytes)."""
    j_stream = stream._j_data_stream
    if j_stream.getType().getTypeClass().getName() == "io.streamrec.jobs.Parsed":
        return j_stream, False
    name = "items" if items else "events"
    decoded = j_stream.map(_ops().Decode.fromBytes(topic, items), _ops().Decode.parsedType())
    return decoded.name(f"decode {name}").uid(f"decode-{name}"), True


def kafka_records(env: StreamExecutionEnvironment, settings: Settings, items: bool = False) -> DataStream:
    """The ``events`` (or ``items``) topic, decoded and validated on the JVM.

    Each record keeps its key, partition, offset, timestamp and headers (what a dead letter carries).
    """
    from jobs.kafka_io import kafka_source

    topic = settings.kafka.items_topic if items else settings.kafka.events_topic
    builder = kafka_source(settings, topic, build=False)
    builder._j_builder.setDeserializer(_ops().Decode.kafkaDeserializer(items))
    name = "items" if items else "events"
    j_stream = env._j_stream_execution_environment.fromSource(
        builder._j_builder.build(), WatermarkStrategy.no_watermarks()._j_watermark_strategy, f"kafka: {name}"
    )
    return DataStream(j_stream.uid(f"kafka-{name}"))


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, wire real Kafka, run the job until cancelled."""
    from jobs.kafka_io import dead_letter_sink, kafka_sink, make_env
    from streamrec.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: $STREAMREC_CONFIG, then built-in defaults)")
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    env = make_env(settings)
    # Stable uids: a restart from a checkpoint (or an upgrade from a savepoint) maps state by them.
    job = build_interest_job(env, kafka_records(env, settings), settings, kafka_records(env, settings, items=True))
    job.dead_letter_records.sinkTo(dead_letter_sink(settings)).name("kafka: events.dlq").uid("kafka-dlq")
    job.writes.sink_to(kafka_sink(settings, settings.kafka.recommendations_topic)).name("kafka: recommendations").uid(
        "kafka-recommendations"
    )
    client = env.execute_async(JOB_NAME)
    # `streamrec job start` waits for this line; under `flink run -d` the client returns here.
    print(f"{JOB_NAME} submitted as job {client.get_job_id()}", flush=True)
    if settings.flink.cluster is None:
        client.get_job_execution_result().result()


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the job's functions must pickle as
    # jobs.interest objects, which the workers can import (`flink run -py jobs/interest.py`).
    from jobs.interest import main as imported_main

    imported_main()
