"""The catalog stage: ``items`` upserts -> validated -> ``item:{id}`` hashes in Redis, and on to the interest job.

:class:`CatalogWriter` is the Python half of the job's catalog path (:mod:`jobs.interest`): the JVM decodes and
validates each upsert (dead letters there) and hands this stage one batch of valid records per flush, written
to Redis in one round trip and passed on to the writer (new item ids and texts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from pyflink.datastream import ProcessFunction, RuntimeContext

from jobs.redis_io import StreamRedis
from serving.store import CATALOG as CATALOG_SET
from serving.store import RedisOp, item_hash, key
from streamrec.config import Settings
from streamrec.events import item_text, validate_item


class CatalogWriter(ProcessFunction):
    """Per batch of valid ``items`` upserts (from the JVM): ``item:{id}`` and ``catalog`` in one round trip.

    In: ``{"records": [...]}``; out: ``{"items": [{"item_id", "text", "categories", "attributes", "ts"}...]}``
    for the writer (the text for items the model has not seen, the rest for the business rules).
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
            out.append({"item_id": item.item_id, "text": item_text(item.to_dict()),
                        "categories": list(item.categories), "attributes": item.attributes, "ts": item.ts})
        self.redis.execute(ops)
        self.items.inc(len(records))
        yield json.dumps({"items": out}, ensure_ascii=False).encode()
