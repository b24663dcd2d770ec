"""The stream's Redis client: pipelined round trips with bounded exponential backoff, and their Flink metrics.

While Redis is away, a writer shard (or the catalog) retries each round trip with exponential backoff
(``job.redis_backoff_initial_ms``, doubling up to ``job.redis_backoff_max_ms``); the stream behind it waits
(backpressure, nothing is dropped). After ``job.redis_retry_timeout_s`` without an answer the task fails, and
Flink restarts the job from its last checkpoint: the writes are overwrites derived from the state, so the
replay converges to the same values.

Metrics, per operator subtask (Flink counters, reset when a task restarts), e.g. in the REST API as
``/jobs/<job>/vertices/<vertex>/metrics?get=0.score + write Redis.redis_retries``:

| metric | what |
| --- | --- |
| ``redis_retries`` | round trips that failed and were retried |
| ``redis_failures`` | round trips given up after ``job.redis_retry_timeout_s`` (the task then fails) |
| ``redis_outage_ms`` | milliseconds spent in failed attempts and backoff |
"""

from __future__ import annotations

from typing import Any

from serving.store import (
    RedisOp,
    RedisUnavailableError,
    RetryPolicy,
    connect,
    execute_packed_with_retry,
    execute_with_retry,
)
from streamrec.config import Settings, secret_value

METRICS = ("redis_retries", "redis_failures", "redis_outage_ms")


class StreamRedis:
    """A ``redis.Redis`` for one operator, with the job's retry policy and the metrics above."""

    def __init__(self, settings: Settings, runtime_context: Any) -> None:  # noqa: ANN401 - a RuntimeContext
        r, j = settings.redis, settings.job
        self.client = connect(r.url, r.username, secret_value(r.password))
        self.policy = RetryPolicy(
            initial_s=j.redis_backoff_initial_ms / 1000,
            max_s=j.redis_backoff_max_ms / 1000,
            give_up_s=j.redis_retry_timeout_s,
        )
        # Counters only: a Python gauge is read by a JVM metrics thread, which thread mode cannot call back on.
        group = runtime_context.get_metrics_group()
        self.retries, self.failures, self.outage_ms = (group.counter(name) for name in METRICS)

    def _retried(self, lost_s: float) -> None:
        self.retries.inc()
        self.outage_ms.inc(int(lost_s * 1000))

    def execute(self, ops: list[RedisOp]) -> list[Any]:
        """Run ops in one pipelined round trip, retried as configured; the replies, one per op."""
        try:
            return execute_with_retry(self.client, ops, self.policy, on_retry=self._retried)
        except RedisUnavailableError:
            self.failures.inc()
            raise

    def execute_packed(self, packed: bytes, replies: int) -> list[Any]:
        """Send RESP-packed commands in one round trip, retried as configured; the replies."""
        try:
            return execute_packed_with_retry(self.client, packed, replies, self.policy, on_retry=self._retried)
        except RedisUnavailableError:
            self.failures.inc()
            raise

    def close(self) -> None:
        self.client.close()
