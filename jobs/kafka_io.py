"""Kafka sources and sinks of the jobs, and the execution settings every job shares."""

from __future__ import annotations

import os
import sys
from typing import Any

from pyflink.common import Configuration, Types
from pyflink.common.serialization import ByteArraySchema
from pyflink.datastream import OutputTag, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.util.java_utils import add_jars_to_context_class_loader

from infra.flink_cluster import python_path
from infra.jars import flink_connector_jar, job_jar
from streamrec.config import Settings, kafka_client_options

# Records bound for Kafka are raw bytes on the Java side (ByteArraySchema), not pickled Python objects.
KAFKA_BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
# Every stage's invalid records, with their reasons, bound for the dead-letter topic.
DLQ_TAG = OutputTag("dead-letters", KAFKA_BYTES)

# The sink's default transaction timeout (1 h) is above the broker's maximum (15 min): stay below it.
TRANSACTION_TIMEOUT_MS = "600000"


def client_properties(settings: Settings) -> dict[str, str]:
    """Kafka client properties shared by sources and sinks (security included).

    The Java form of :func:`streamrec.config.kafka_client_options`, with the login module shaded into the
    Flink connector.
    """
    options = kafka_client_options(settings.kafka)
    props: dict[str, str] = {"security.protocol": options["security_protocol"]}
    if "sasl_mechanism" in options:
        mechanism = options["sasl_mechanism"]
        user = options["sasl_plain_username"] or ""
        password = options["sasl_plain_password"] or ""
        module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
        props["sasl.mechanism"] = mechanism
        props["sasl.jaas.config"] = (
            f"org.apache.flink.kafka.shaded.org.apache.kafka.common.security.{module} required "
            f'username="{user}" password="{password}";'
        )
    return props


def kafka_source(settings: Settings, topic: str | None = None, build: bool = True) -> Any:  # noqa: ANN401
    """Raw record bytes from ``topic`` (default: events), resuming from the group's committed offsets.

    ``build=False`` returns the builder instead (the JVM decoder then sets its own deserializer).
    """
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap)
        .set_topics(topic or settings.kafka.events_topic)
        .set_group_id(settings.kafka.consumer_group)
        .set_starting_offsets(
            KafkaOffsetsInitializer.earliest()
            if settings.kafka.start_from == "earliest"
            else KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
        )
        .set_value_only_deserializer(ByteArraySchema())
        .set_property("partition.discovery.interval.ms", "10000")
    )
    for name, value in client_properties(settings).items():
        builder = builder.set_property(name, value)
    return builder.build() if build else builder


def dead_letter_sink(settings: Settings) -> Any:  # noqa: ANN401 - a py4j KafkaSink
    """The JVM sink of the events' dead letters: original key and headers, plus the ``__connect.errors.*`` context."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    builder = (
        jvm.org.apache.flink.connector.kafka.sink.KafkaSink.builder()
        .setBootstrapServers(settings.kafka.bootstrap)
        .setRecordSerializer(
            jvm.io.streamrec.jobs.DeadLetterSink(settings.kafka.dlq_topic, settings.job.dlq_reason_max_chars)
        )
        .setDeliveryGuarantee(DeliveryGuarantee.AT_LEAST_ONCE._to_j_delivery_guarantee())
        .setProperty("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        .setProperty("linger.ms", "5")
    )
    for name, value in client_properties(settings).items():
        builder = builder.setProperty(name, value)
    return builder.build()


def kafka_sink(settings: Settings, topic: str) -> KafkaSink:
    """A sink of raw bytes to ``topic``, flushed at every checkpoint (at-least-once)."""
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(ByteArraySchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
        .set_property("linger.ms", "5")
    )
    for name, value in client_properties(settings).items():
        builder = builder.set_property(name, value)
    return builder.build()


def make_env(settings: Settings) -> StreamExecutionEnvironment:
    """An environment with parallelism, Python execution mode, checkpoints and the connector jar set."""
    # Read by the MiniCluster JVM the gateway starts below (and by its embedded interpreters).
    os.environ["PYTHONPATH"] = python_path()
    f = settings.flink
    checkpoints = settings.run_path(f.checkpoint_dir)
    conf = Configuration()
    conf.set_string("python.execution-mode", f.python_execution_mode)
    # Python workers (and thread mode's libpython lookup) must use this interpreter, not `python` on PATH.
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    jars_dir = settings.path(settings.stack.jars_dir)
    jars = [flink_connector_jar(jars_dir).as_uri(), job_jar(jars_dir).as_uri()]
    conf.set_string("pipeline.jars", ";".join(jars))
    conf.set_string("execution.checkpointing.interval", f"{f.checkpoint_interval_ms} ms")
    conf.set_string("execution.checkpointing.dir", checkpoints.as_uri())
    # Kept after a cancel or crash, so that `streamrec job start` can resume from the latest one.
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("restart-strategy.type", f.restart_strategy)
    if f.restore_from:
        conf.set_string("execution.state-recovery.path", f.restore_from)
    conf.set_string("execution.checkpointing.savepoint-dir", settings.run_path(f.savepoint_dir).as_uri())
    if f.rest_port and f.cluster is None:  # the MiniCluster's REST API: stop-with-savepoint, metrics
        conf.set_string("rest.bind-port", str(f.rest_port))
        conf.set_string("rest.port", str(f.rest_port))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # py4j builds the JVM operators in this client: their classes must load here too, not only in the job.
    add_jars_to_context_class_loader(jars)
    env.set_parallelism(f.parallelism)
    return env
