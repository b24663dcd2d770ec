"""The writer stage: collect updated user states per shard, score them in one batch, write Redis in one round trip.

Keyed by shard (a hash of the user id), it buffers states in ListState, so a crash between a checkpoint and a
flush loses nothing: the restored buffer and its timer flush again. Redis writes are overwrites derived from
the state, so a replay after recovery converges to the same values (``user:{id}.events`` counts each event once).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor

from jobs.errors import JobError
from serving.store import UserView, connect, encode_recommendations, key

if TYPE_CHECKING:
    from jobs.interest import UserState
    from streamrec.config import Settings

log = logging.getLogger(__name__)

# Fires at end of a bounded input (the final watermark), so tests and replays of files flush everything.
END_OF_INPUT = 2**63 - 2
REDIS_ATTEMPTS = 6
TOP_INTERESTS = 10
REDIS_FIRST_BACKOFF_S = 0.2


def shard_of(user_id: str, shards: int) -> int:
    """Stable shard of a user (crc32, not Python's per-process salted hash)."""
    return zlib.crc32(user_id.encode()) % shards


class RedisUnavailableError(JobError):
    """Redis stayed unreachable through every retry."""

    def __init__(self, attempts: int, cause: Exception) -> None:
        super().__init__(
            f"Redis write failed {attempts} times ({cause}); the job restarts from its last checkpoint "
            f"and retries: check that Redis at the configured redis.url is up"
        )


class ServingModel:
    """The promoted model of the registry, re-checked every ``check_every_s``: a promotion hot-swaps it.

    A version that fails verification (checksum, contract) is refused with an error log, and the model
    already in service keeps serving.
    """

    def __init__(self, registry_dir: str, check_every_s: float) -> None:
        self.registry_dir = registry_dir
        self.check_every_s = check_every_s
        self.scorer: Any = None
        self.version: str | None = None
        self._checked = 0.0
        self._refused: set[str] = set()

    def get(self) -> Any:
        """The current Scorer (None while no version is promoted)."""
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._refresh()
        return self.scorer

    def _refresh(self) -> None:
        from model_export.errors import ModelExportError
        from model_export.registry import Registry
        from serving.scorer import Scorer

        try:
            registry = Registry(self.registry_dir)
            version = registry.current()
        except (ModelExportError, OSError, ValueError) as exc:
            log.error(
                "model registry %s unreadable, %s keeps serving: %s", self.registry_dir, self.version, exc
            )
            return
        if version is None or version == self.version or version in self._refused:
            return
        try:
            scorer = Scorer(registry.path(version))
        except (ModelExportError, OSError, ValueError) as exc:
            self._refused.add(version)
            log.error("model %s refused, %s keeps serving: %s", version, self.version, exc)
            return
        log.info("model %s now serving (was %s, provider %s)", version, self.version, scorer.provider)
        self.scorer, self.version = scorer, version


class RecommendationWriter(KeyedProcessFunction):
    """Per shard: buffer user states, and every ``flush_interval_ms`` score and write them in one batch."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.job.flush_interval_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY())
        )
        r = self.settings.redis
        self.redis = connect(r.url, r.username, r.password.get_secret_value() if r.password else None)
        # Shards whose timers are set: saves a timer registration per element (a JVM call each).
        self.armed: set[int] = set()
        self.model = ServingModel(
            str(self.settings.path(self.settings.models.registry_dir)),
            self.settings.job.model_check_interval_s,
        )

    def close(self) -> None:
        self.redis.close()

    def process_element(self, state: UserState, ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        self.pending.add(state)
        shard = ctx.get_current_key()
        if shard not in self.armed:
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.interval)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self.armed.add(shard)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[bytes]:
        self.armed.discard(ctx.get_current_key())
        states = list(self.pending.get() or ())
        if not states:
            return
        latest: dict[str, UserState] = {}
        for s in states:
            if s.user_id not in latest or s.events >= latest[s.user_id].events:
                latest[s.user_id] = s
        yield from self.write(list(latest.values()))
        self.pending.clear()

    def write(self, states: list[UserState]) -> Iterator[bytes]:
        """Score the batch, write every user's keys in one pipeline, and yield the audit records."""
        now_ms = int(time.time() * 1000)
        recs: list[list[tuple[str, float]]] = [[] for _ in states]
        version = ""
        scorer = self.model.get()
        if scorer is not None:
            version = self.model.version or scorer.version
            recs = scorer.score(
                [s.recent_items() for s in states], self.settings.job.top_k, exclude=[s.seen for s in states]
            )
        ops: list[RedisOp] = []
        audit = []
        for s, items in zip(states, recs, strict=True):
            view = UserView(s.user_id, s.events, s.last_ts, s.recent_items(), s.top_interests(TOP_INTERESTS))
            ops.append(("hset", (key("user", s.user_id),), {"mapping": view.to_hash()}))
            if items:
                ops.append(
                    ("set", (key("rec", s.user_id), encode_recommendations(items, version, now_ms)), {})
                )
            record = {
                "user_id": s.user_id,
                "events": s.events,
                "items": [i for i, _ in items],
                "scores": [round(float(x), 6) for _, x in items],
                "model_version": version,
                "ts": now_ms,
            }
            audit.append(json.dumps(record, separators=(",", ":")).encode())
        execute_with_retry(self.redis, ops)
        yield from audit


RedisOp = tuple[str, tuple[Any, ...], dict[str, Any]]


def execute_with_retry(client: Any, ops: list[RedisOp]) -> None:
    """Run ops in one pipelined round trip; bounded retries with backoff (the pipeline is rebuilt per attempt)."""
    import redis

    delay = REDIS_FIRST_BACKOFF_S
    for attempt in range(1, REDIS_ATTEMPTS + 1):
        try:
            pipe = client.pipeline(transaction=False)
            for method, args, kwargs in ops:
                getattr(pipe, method)(*args, **kwargs)
            pipe.execute()
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if attempt == REDIS_ATTEMPTS:
                raise RedisUnavailableError(attempt, exc) from exc
            time.sleep(delay)
            delay *= 2
