"""Test doubles that ship with the product: an in-memory source of raw records and a collecting sink."""

from __future__ import annotations

from collections.abc import Iterable

from pyflink.common import Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment


def records_source(env: StreamExecutionEnvironment, records: Iterable[bytes]) -> DataStream:
    """A bounded stream of raw record bytes, as the Kafka source would deliver them."""
    # from_collection cannot carry bytes objects: ship them as latin-1 text (a lossless byte <-> char map).
    texts = [bytes(r).decode("latin-1") for r in records]
    # Typed as raw bytes on the JVM (as the Kafka source's records are), so that JVM operators can read them.
    return env.from_collection(texts, type_info=Types.STRING()).map(
        lambda t: t.encode("latin-1"), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())
    )


def collect(**streams: DataStream) -> dict[str, list[bytes]]:
    """Run the job to its end and return what reached each named stream, in arrival order per stream."""
    names = list(streams)
    tagged = [
        stream.map(lambda v, n=n: (n, bytes(v)), output_type=Types.PICKLED_BYTE_ARRAY())
        for n, stream in streams.items()
    ]
    merged = tagged[0].union(*tagged[1:]) if len(tagged) > 1 else tagged[0]
    out: dict[str, list[bytes]] = {n: [] for n in names}
    with merged.execute_and_collect() as results:
        for name, value in results:
            out[name].append(value)
    return out
