"""The catalog stage: ``items`` upserts -> validated -> ``item:{id}`` hashes in Redis, and on to the interest job.

:class:`CatalogWriter` is the Python half of the JVM job (:mod:`jobs.interest`): the JVM decodes and validates
each upsert (dead letters there) and hands this stage one batch of valid records per flush, written to Redis in
one round trip and passed on to the writer (new item ids and texts). :class:`PublishItems` is the all-Python
job's stage (:mod:`jobs.interest_python`): one record at a time, dead letters to its side output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from jobs.kafka_io import DLQ_TAG
from jobs.redis_io import StreamRedis
from serving.store import CATALOG as CATALOG_SET
from serving.store import RedisOp, item_hash, key
from streamrec.config import Settings
from streamrec.events import InvalidRecordError, dead_letter, item_text, parse_item, validate_item

# item id -> categories, broadcast to the interest stage (checkpointed with it).
CATALOG = MapStateDescriptor("catalog", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# The all-Python job's writer (jobs/writer.py): every catalog id as ONE value, because thread mode cannot iterate
# broadcast state (its keys()/items() fail on the Java object); one get() restores the set after a restart. The
# JVM job's writer only names it for its broadcast input and reads the catalog back from Redis instead.
CATALOG_IDS = MapStateDescriptor("catalog-ids", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
CATALOG_IDS_KEY = "ids"


class PublishItems(ProcessFunction):
    """Write each valid item's display fields and pass the item on; dead letters to the side output."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.redis = StreamRedis(self.settings, runtime_context)  # bounded retries + metrics, as the writer's

    def close(self) -> None:
        self.redis.close()

    def process_element(self, value: bytes, ctx: ProcessFunction.Context) -> Iterator[Any]:
        raw = bytes(value)
        try:
            item = parse_item(raw)
        except InvalidRecordError as exc:
            yield (
                DLQ_TAG,
                dead_letter(raw, exc.reason, self.settings.kafka.items_topic, self.settings.job.dlq_reason_max_chars),
            )
            return
        item_key = key("item", item.item_id)
        # Replace, not merge: an upsert that drops a field must not leave the old value behind.
        self.redis.execute(
            [("delete", (item_key,), {}), ("hset", (item_key,), {"mapping": item_hash(item.to_dict())})],
        )
        yield item


class CatalogWriter(ProcessFunction):
    """Per batch of valid ``items`` upserts (from the JVM): ``item:{id}`` and ``catalog`` in one round trip.

    In: ``{"records": [...]}``; out: ``{"items": [{"item_id", "text"}...]}`` for the writer.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.redis = StreamRedis(self.settings, runtime_context)
        self.items = runtime_context.get_metrics_group().counter("items_written")

    def close(self) -> None:
        self.redis.close()

    def process_element(self, value: bytes, ctx: ProcessFunction.Context) -> Iterator[bytes]:
        records = json.loads(value)["records"]
        if not records:
            return
        ops: list[RedisOp] = []
        out = []
        for obj in records:
            item = validate_item(obj)  # the JVM checked the same rules: this builds the Item
            item_key = key("item", item.item_id)
            # Replace, not merge: an upsert that drops a field must not leave the old value behind.
            ops += [("delete", (item_key,), {}), ("hset", (item_key,), {"mapping": item_hash(item.to_dict())}),
                    ("sadd", (CATALOG_SET, item.item_id), {})]
            out.append({"item_id": item.item_id, "text": item_text(item.to_dict())})
        self.redis.execute(ops)
        self.items.inc(len(records))
        yield json.dumps({"items": out}, ensure_ascii=False).encode()
