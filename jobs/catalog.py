"""The catalog stage: ``items`` upserts -> validated -> ``item:{id}`` hashes in Redis, and on to the interest job.

Valid items flow on (the interest job broadcasts them to learn each item's categories); bad records go to the
dead-letter side output.
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
from serving.store import item_hash, key
from streamrec.config import Settings
from streamrec.events import InvalidRecordError, dead_letter, item_text, parse_item

# item id -> categories, broadcast to the interest stage (checkpointed with it).
CATALOG = MapStateDescriptor("catalog", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
# The writer's view: every catalog id as ONE value, because thread mode cannot iterate broadcast state
# (its keys()/items() fail on the Java object); one get() restores the set after a restart.
CATALOG_IDS = MapStateDescriptor("catalog-ids", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
CATALOG_IDS_KEY = "ids"


class PublishItems(ProcessFunction):
    """Write each valid item's display fields and pass the item on; dead letters to the side output.

    With ``records``, what passes on is the JSON bytes the JVM stages read (``item_id``, ``categories``, ``text``)
    instead of the :class:`~streamrec.events.Item`.
    """

    def __init__(self, settings: Settings, records: bool = False) -> None:
        self.settings = settings
        self.records = records

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
        if self.records:
            record = {"item_id": item.item_id, "categories": list(item.categories), "text": item_text(item.to_dict())}
            yield json.dumps(record, ensure_ascii=False).encode()
        else:
            yield item
