"""Hostile input end to end: every HTTP API parameter fuzzed, and a mix of bad records through the real job.

The API (against a real redis-server) answers any path, id, ``k`` or header with a 2xx or 4xx and a JSON body,
never a 500. The job, fed valid, invalid, duplicate and out-of-order events with unknown users and items,
accounts for every record: ``sent == applied (user:{id}.events) + dead-lettered (events.dlq, with a reason)``,
and keeps running.
"""

from __future__ import annotations

import base64
import json
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer

from infra.process import free_port
from infra.redis_server import RedisServer
from jobs import launcher
from serving.api import create_app
from serving.store import MODEL_CURRENT, POPULAR, UserView, connect, encode_recommendations, item_hash, key
from streamrec.config import Settings
from streamrec.events import MAX_RECORD_BYTES, InvalidRecordError, parse_event, parse_item

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
TOKEN = "fuzz-token"

# --- the HTTP API ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # Its own Redis: the fuzzer writes nothing, but the fixture's keys must not meet other tests' flushes.
    server = RedisServer(home=tmp_path_factory.mktemp("redis-fuzz"), port=free_port())
    pid = server.start()
    r = server.client()
    r.set(MODEL_CURRENT, "v1")
    r.set(POPULAR, encode_recommendations([("i1", 0.5), ("i\u202e2", 0.4)], "pop", 1))
    for user in ("u1", "Zoë 🎬", "a/b", "\u202eevil", "x" * 256):
        r.set(key("rec", user), encode_recommendations([("i1", 0.9), ("Face/Off (1997)", 0.1)], "v1", 2))
        r.hset(key("user", user), mapping=UserView(user, 3, 4, ["i1"], {"scenario:web": 1.5}).to_hash())
    r.hset(key("item", "i1"), mapping=item_hash({"title": "Heat", "categories": ["Drama"], "text": "nul \x00 inside"}))
    settings = Settings.model_validate({"redis": {"url": server.url}, "api": {"token": TOKEN}})
    # DELETE's forget sender stands in for the Kafka producer `streamrec serve` wires (not under test here).
    with TestClient(create_app(settings, forget=lambda user: {"user_id": user, "ts": 1})) as client:
        yield client
    RedisServer.stop(pid)


def segment(raw: bytes) -> str:
    """One path segment carrying arbitrary bytes (percent-encoded, so the server decodes them itself)."""
    return quote_from_bytes(raw, safe="")


ids = (
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.sampled_from([b"", b"u1", b"a/b", b"%", b"%zz", b"..", b"/", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"x" * 257,
                       "Zoë 🎬".encode(), "\u202eevil".encode(), b"x" * 20_000, b"u1/recommendations"])
).map(segment)
k_values = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=30),
    st.sampled_from(["0", "1", "100", "101", "1e2", "1.0", " 5", "NaN", "inf", "-0", "0x10", "١٠"]),
)
headers = st.dictionaries(
    st.sampled_from(["Authorization", "Accept", "Content-Type", "X-Forwarded-For"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
    | st.sampled_from([f"Bearer {TOKEN}", "Bearer ", "Basic Zm9v", f"bearer {TOKEN}"]),
    max_size=2,
)
requests = st.tuples(
    st.sampled_from(
        [
            ("GET", "/v1/users/{id}/recommendations"),
            ("GET", "/v1/users/{id}"),
            ("GET", "/v1/items/{id}"),
            ("DELETE", "/v1/users/{id}"),
            ("GET", "/v1/metrics/online"),
            ("GET", "/healthz"),
            ("GET", "/v1/{id}"),
            ("POST", "/v1/users/{id}/recommendations"),
        ]
    ),
    ids,
    k_values,
    headers,
)


@FUZZ
@given(requests)
def test_every_api_parameter_gets_a_2xx_or_4xx_with_json(api: TestClient, request: tuple) -> None:
    (method, template), ident, k, hdrs = request
    resp = api.request(method, template.replace("{id}", ident), params={} if k is None else {"k": k}, headers=hdrs)
    assert resp.status_code < 500, (method, template, ident, k, resp.status_code, resp.text[:300])
    body = resp.json()  # every answer is JSON
    if resp.status_code >= 400:
        assert isinstance(body["detail"], str) and body["detail"], body
    elif template.endswith("/recommendations"):  # a 200 means k parsed as 1..100 (lax: "1.0" is 1)
        try:
            bound = 10 if k is None else int(float(k))
        except ValueError:
            bound = 100
        assert len(body["items"]) <= bound


# --- a hostile mix through the real job -----------------------------------------------------------------------

NOW = int(time.time() * 1000)
USERS = ["u1", "Zoë 🎬", "👩‍💻", "\u202eevil", "مرحبا", "a/b", "x" * 256, "\ufeffbom", "e\u0301", "u\u2028v"]


def valid_events(rng: random.Random, n: int) -> list[dict]:
    # Out of order: event times jump back and forth by up to a day, some at the epoch itself.
    return [
        {
            "user_id": rng.choice(USERS),
            "item_id": rng.choice(["i1", "i2", "unknown-item", "Face/Off (1997)", "🎬"]),
            "type": rng.choice(["view", "click", "cart", "purchase", "rating", "skip"]),
            "ts": rng.choice([0, 1, NOW - rng.randrange(86_400_000), NOW - 5 * 365 * 86_400_000]),
            **({"value": rng.uniform(-5, 5)} if rng.random() < 0.3 else {}),
            **({"scenario": rng.choice(["web", "app", "\u202e"])} if rng.random() < 0.5 else {}),
            **({"context": {"nested": [1, {"a": None}], "s": "\x00"}} if rng.random() < 0.2 else {}),
            **({"unknown_field": "kept"} if rng.random() < 0.2 else {}),
        }
        for _ in range(n)
    ]


def encode(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


BAD_EVENTS = [
    b"",
    b"{",
    b"null",
    b"[1, 2]",
    b'"a string"',
    b"\xff\xfe\x00garbage",
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":1,"value":NaN}',
    b'{"user_id":"u1","item_id":"i1","type":"rating","ts":1,"value":1e400}',
    b'{"user_id":"u1","item_id":"i1","type":"rating","ts":1,"value":1' + b"0" * 400 + b"}",
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":' + b"9" * 5000 + b"}",
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":-1}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":' + str(NOW + 3 * 86_400_000).encode() + b"}",
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":"1700000000000"}',
    b'{"user_id":"\\ud800","item_id":"i1","type":"view","ts":1}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":1,"scenario":"\\udfff"}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":1,"x":"\xed\xa0\x80"}',
    b'{"user_id":"a\\u0000b","item_id":"i1","type":"view","ts":1}',
    b'{"user_id":"","item_id":"i1","type":"view","ts":1}',
    b'{"user_id":"u1","item_id":"i1","type":"teleport","ts":1}',
    b'{"user_id":["u1"],"item_id":"i1","type":"view","ts":1}',
    b"[" * 50_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":1,"pad":"' + b"x" * MAX_RECORD_BYTES + b'"}',
    '{"user_id":"u1","item_id":"i1","type":"view","ts":1}'.encode("utf-16"),
    b'\xef\xbb\xbf{"user_id":"u1","item_id":"i1","type":"view","ts":1}',
]
GOOD_ITEMS = [
    {"item_id": "i1", "title": "Heat", "categories": ["Crime"], "ts": 1},
    {"item_id": "🎬", "title": "\u202eTitle", "text": "\x00 nul inside", "attributes": {"a": [1, None]}},
    {"item_id": "Face/Off (1997)", "title": "Face/Off", "categories": ["Action", "مرحبا"]},
]
BAD_ITEMS = [
    b'{"item_id":"i9"}',
    b'{"item_id":"i9","title":"  "}',
    b'{"item_id":"i9","title":"t","categories":"Drama"}',
    b'{"item_id":"i9","title":"t","text":"' + b"x" * 10_001 + b'"}',
    b'{"item_id":"i9","title":"t","attributes":{"a":"\\ud800"}}',
    b"\x80\x81",
    b"[]",
]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """Damage a record as a broken producer or a flaky wire might: truncate, flip or insert bytes."""
    data = bytearray(raw)
    op = rng.choice(["truncate", "flip", "insert"])
    i = rng.randrange(len(data))
    if op == "truncate":
        del data[i:]
    elif op == "flip":
        data[i] ^= rng.randrange(1, 256)
    else:
        data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return bytes(data)


def consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 90) -> list[dict]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=1000, group_id=None
    )
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(out) < expect:
        out.extend(json.loads(m.value) for m in consumer)
    consumer.close()
    return out


def test_hostile_mix_through_the_job(make_settings, reliability_report):
    settings, config = make_settings(flink={"parallelism": 2})
    rng = random.Random(6)
    good = valid_events(rng, 300)
    events: list[bytes] = [encode(e) for e in good]
    events += [encode(e) for e in rng.sample(good, 40)]  # duplicates: the same record sent again
    events += BAD_EVENTS
    events += [mutate(rng, encode(e)) for e in rng.sample(good, 120)]  # may or may not still be valid
    rng.shuffle(events)
    items = [encode(i) for i in GOOD_ITEMS] + BAD_ITEMS

    # What the parser says about each record (the job must agree, record by record).
    applied_want: Counter = Counter()
    dead_want: Counter = Counter()
    for raw in events:
        try:
            applied_want[parse_event(raw).user_id] += 1
        except InvalidRecordError:
            dead_want[raw] += 1
    item_dead = Counter(raw for raw in items if not _valid_item(raw))
    assert sum(dead_want.values()) >= len(BAD_EVENTS) and len(item_dead) == len(BAD_ITEMS)

    r = connect(settings.redis.url)
    r.flushdb()
    launcher.start(settings, str(config), say=lambda *_: None)
    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, max_request_size=2**20)
        for raw in items:
            producer.send(settings.kafka.items_topic, value=raw)
        for raw in events:
            producer.send(settings.kafka.events_topic, value=raw)
        producer.flush()
        producer.close()
        started = time.monotonic()

        def applied() -> dict[str, int]:
            return {u: int(r.hget(key("user", u), "events") or 0) for u in applied_want}

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and applied() != dict(applied_want):
            time.sleep(0.5)
        assert applied() == dict(applied_want)
        expected_dlq = sum(dead_want.values()) + sum(item_dead.values())
        dlq = consume(settings.kafka.bootstrap, settings.kafka.dlq_topic, expected_dlq)
        elapsed = time.monotonic() - started
        time.sleep(1)
        assert len(dlq) == expected_dlq
        k = settings.kafka
        assert all(d["reason"] and d["topic"] in (k.events_topic, k.items_topic) for d in dlq)
        got_dead = Counter(base64.b64decode(d["original_b64"]) for d in dlq if d["topic"] == k.events_topic)
        assert got_dead == dead_want  # exactly the invalid records, byte for byte
        got_item_dead = Counter(base64.b64decode(d["original_b64"]) for d in dlq if d["topic"] == k.items_topic)
        assert got_item_dead == item_dead
        # Conservation: every record sent is either applied to a user's state or dead-lettered.
        sent, n_applied, n_dead = len(events), sum(applied().values()), sum(got_dead.values())
        assert sent == n_applied + n_dead
        for item in GOOD_ITEMS:
            assert r.hget(key("item", item["item_id"]), "title").decode() == item["title"]
        assert launcher.status(settings)["running"]
        assert _failures(launcher.status(settings)) == []  # no task ever failed on a record
        reliability_report(
            "hostile mix (valid, invalid, duplicate, out-of-order, mutated; parallelism 2)",
            sent=sent,
            applied=n_applied,
            dead_lettered=n_dead,
            items_sent=len(items),
            items_dead_lettered=sum(got_item_dead.values()),
            duplicates_sent=40,
            all_applied_or_dead_lettered_s=round(elapsed, 1),
        )
    finally:
        launcher.stop(settings, say=lambda *_: None)


def _valid_item(raw: bytes) -> bool:
    try:
        parse_item(raw)
    except InvalidRecordError:
        return False
    return True


def _failures(job: dict) -> list[str]:
    url = f"{job['rest_url']}/jobs/{job['job_id']}/exceptions"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return [e["exceptionName"] for e in json.loads(resp.read())["exceptionHistory"]["entries"]]

