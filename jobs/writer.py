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
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from pyflink.common import Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor

from jobs.catalog import CATALOG_IDS, CATALOG_IDS_KEY
from jobs.redis_io import StreamRedis
from jobs.state import is_forgotten
from serving.model_watcher import ServingModel
from serving.store import (
    RedisOp,
    UserView,
    decode_item,
    decode_recommendations,
    encode_recommendations,
    key,
    online_hits,
    online_metric_ops,
)
from streamrec.events import item_text

if TYPE_CHECKING:
    from jobs.state import UserState
    from streamrec.config import Settings
    from streamrec.events import Item

log = logging.getLogger(__name__)

# Fires at end of a bounded input (the final watermark), so tests and replays of files flush everything.
END_OF_INPUT = 2**63 - 2
TOP_INTERESTS = 10


def shard_of(user_id: str, shards: int) -> int:
    """Stable shard of a user (crc32, not Python's per-process salted hash)."""
    return zlib.crc32(user_id.encode()) % shards


class RecommendationWriter(KeyedBroadcastProcessFunction):
    """Per shard: buffer user states, and every ``flush_interval_ms`` score and write them in one batch.

    The catalog arrives as broadcast state: once it is not empty, only items that passed the ``items`` topic
    (and so have a title in ``item:{id}``) are recommended.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.job.flush_interval_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_list_state(ListStateDescriptor("pending", Types.PICKLED_BYTE_ARRAY()))
        # Retries Redis with bounded backoff and counts it (metrics redis_retries, redis_failures, redis_outage_ms).
        self.redis = StreamRedis(self.settings, runtime_context)
        # Shards whose timers are set: saves a timer registration per element (a JVM call each).
        self.armed: set[int] = set()
        self.catalog: set[str] | None = None  # None: not yet read back from the (restored) broadcast state
        self.restricted: tuple[int, int] | None = None  # (scorer id, catalog size) applied to the scorer
        # Texts of items that arrived on `items` in this process: a text model embeds the ones it does not know.
        self.item_texts: dict[str, str] = {}
        self.model = ServingModel(
            str(self.settings.path(self.settings.models.registry_dir)),
            self.settings.job.model_check_interval_s,
            self.settings.job.scorer_threads,
        )

    def close(self) -> None:
        self.redis.close()

    def _load_catalog(self, ctx: Any) -> set[str]:
        if self.catalog is None:
            self.catalog = set(ctx.get_broadcast_state(CATALOG_IDS).get(CATALOG_IDS_KEY) or ())
        return self.catalog

    def process_broadcast_element(self, item: Item, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        catalog = self._load_catalog(ctx)
        self.item_texts[item.item_id] = item_text(item.to_dict())
        if item.item_id not in catalog:
            catalog.add(item.item_id)
            ctx.get_broadcast_state(CATALOG_IDS).put(CATALOG_IDS_KEY, catalog)

    def _embed_new_items(self, scorer: Any, catalog: set[str]) -> None:
        """Give catalog items the model has never seen a row from their text (a text model only).

        Texts come from the ``items`` records of this process, else (after a restart) from ``item:{id}``.
        """
        if not scorer.embeds_text:
            return
        unknown = sorted(i for i in catalog if not scorer.knows(i))
        missing = [i for i in unknown if i not in self.item_texts]
        if missing:
            hashes = self.redis.execute([("hgetall", (key("item", i),), {}) for i in missing])
            for item_id, raw in zip(missing, hashes, strict=True):
                record = decode_item(raw)
                self.item_texts[item_id] = item_text(record) if record else ""
        t0 = time.perf_counter()
        added = scorer.add_items({i: self.item_texts[i] for i in unknown})
        if added:
            log.info("model %s: %d new items embedded from their text in %.2fs", scorer.version, added,
                     time.perf_counter() - t0)

    def process_element(self, state: UserState, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[bytes]:
        self.pending.add(state)
        shard = ctx.get_current_key()
        if shard not in self.armed:
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.interval)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self.armed.add(shard)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Iterator[bytes]:
        self.armed.discard(ctx.get_current_key())
        self._load_catalog(ctx)
        states = list(self.pending.get() or ())
        if not states:
            return
        latest: dict[str, UserState] = {}
        actions: dict[str, list[tuple[str, str]]] = {}
        forgotten: set[str] = set()
        for s in states:  # one state per event applied, in order
            if is_forgotten(s):  # a forget record: nothing the user did before it is written
                latest.pop(s.user_id, None)
                forgotten.add(s.user_id)
                continue
            if s.user_id not in latest or s.events >= latest[s.user_id].events:
                latest[s.user_id] = s
            action = s.last_action
            if action is not None:
                actions.setdefault(s.user_id, []).append(action)
        actions = {u: a for u, a in actions.items() if u not in forgotten}  # no hit-rate count either
        yield from self.write(list(latest.values()), actions, forgotten)
        self.pending.clear()

    def write(
        self,
        states: list[UserState],
        actions: dict[str, list[tuple[str, str]]] | None = None,
        forgotten: Collection[str] = (),
    ) -> Iterator[bytes]:
        """Score the batch, write every user's keys in one pipeline, and yield the audit records.

        The keys of ``forgotten`` users (``rec:``, ``user:``) are deleted first in the same pipeline, so that
        a user who acted again after the forget record gets fresh keys; nothing else is written or audited
        for the forget itself.

        ``actions`` (user -> ``(item_id, scenario)`` of the events since the last write) are first checked
        against the recommendations the users had while acting: the online hit rate in ``metrics:online``.
        Like the other writes it is at-least-once: a flush replayed after a crash counts again.
        """
        now_ms = int(time.time() * 1000)
        hit_ops: list[RedisOp] = []
        if actions:
            users = list(actions)
            shown = self.redis.execute([("get", (key("rec", u),), {}) for u in users])
            hits = online_hits(actions, dict(zip(users, map(decode_recommendations, shown), strict=True)))
            hit_ops = online_metric_ops(hits)
        recs: list[list[tuple[str, float]]] = [[] for _ in states]
        version = ""
        scorer = self.model.get()
        if scorer is not None and self.catalog and self.restricted != (id(scorer), len(self.catalog)):
            self._embed_new_items(scorer, self.catalog)
            scorer.restrict_to(self.catalog)
            self.restricted = (id(scorer), len(self.catalog))
        if scorer is not None:
            version = self.model.version or scorer.version
            recs = scorer.score(
                [s.recent_items() for s in states],
                self.settings.job.top_k,
                exclude=[s.seen for s in states],
                times=[s.recent_times() for s in states],
                scenarios=[s.recent_scenarios() for s in states],
            )
        ops: list[RedisOp] = [("delete", (key("rec", u), key("user", u)), {}) for u in sorted(forgotten)]
        for s, items in zip(states, recs, strict=True):
            view = UserView(s.user_id, s.events, s.last_ts, s.recent_items(), s.top_interests(TOP_INTERESTS))
            ops.append(("hset", (key("user", s.user_id),), {"mapping": view.to_hash()}))
            if items:
                ops.append(("set", (key("rec", s.user_id), encode_recommendations(items, version, now_ms)), {}))
        self.redis.execute(ops + hit_ops)
        # `written_at`: when Redis acknowledged the batch (the freshness benchmark measures send -> written_at).
        written_ms = int(time.time() * 1000)
        for s, items in zip(states, recs, strict=True):
            record = {
                "user_id": s.user_id,
                "events": s.events,
                "items": [i for i, _ in items],
                "scores": [round(float(x), 6) for _, x in items],
                "model_version": version,
                "ts": now_ms,
                "written_at": written_ms,
            }
            yield json.dumps(record, separators=(",", ":")).encode()
