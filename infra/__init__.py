"""The platform: fetch jars with Maven, start and stop Kafka, Redis and Flink on this machine."""

from infra.flink_cluster import FlinkCluster
from infra.kafka_broker import KafkaBroker
from infra.process import ServiceError
from infra.redis_server import RedisServer

__all__ = ["FlinkCluster", "KafkaBroker", "RedisServer", "ServiceError"]
