"""The Redis layout of :mod:`serving.store`: keys and encodings, without a Redis server."""

from __future__ import annotations

import json

import pytest

from serving.store import (
    MODEL_CURRENT,
    MODEL_HISTORY,
    ONLINE_METRICS,
    POPULAR,
    UserView,
    announce_model,
    decode_item,
    decode_recommendations,
    decode_user,
    encode_recommendations,
    item_hash,
    key,
    online_hits,
    online_metric_ops,
    read_online_metrics,
    write_popular,
)


@pytest.mark.parametrize(
    ("kind", "ident", "expected"),
    [("rec", "u1", "rec:u1"), ("user", "u1", "user:u1"), ("item", "i:9", "item:i:9"), ("user", "ü", "user:ü")],
)
def test_key(kind: str, ident: str, expected: str) -> None:
    assert key(kind, ident) == expected  # type: ignore[arg-type]


def test_fixed_keys_do_not_collide_with_per_id_keys() -> None:
    assert {POPULAR, MODEL_CURRENT, MODEL_HISTORY} == {"popular", "model:current", "model:history"}
    assert len({key("rec", "x"), key("user", "x"), key("item", "x")}) == 3


def test_recommendations_round_trip_keeps_order_and_rounds_scores() -> None:
    items = [("b", 0.91234567891), ("a", 0.5), ("c", -1.0000004), ("d", 3)]
    raw = encode_recommendations(items, "v0002", 1_700_000_000_000)
    assert isinstance(raw, str) and " " not in raw  # compact
    decoded = decode_recommendations(raw)
    assert decoded == {
        "items": [
            {"item_id": "b", "score": 0.912346},
            {"item_id": "a", "score": 0.5},
            {"item_id": "c", "score": -1.0},
            {"item_id": "d", "score": 3.0},
        ],
        "model_version": "v0002",
        "computed_at": 1_700_000_000_000,
    }
    assert all(isinstance(it["score"], float) for it in decoded["items"])


def test_recommendations_accept_generators_numpy_like_scores_and_bytes() -> None:
    class Score:  # stands in for numpy.float32: only float() is needed
        def __float__(self) -> float:
            return 0.25

    raw = encode_recommendations(((f"i{n}", Score()) for n in range(3)), "v1", 5)  # type: ignore[misc]
    decoded = decode_recommendations(raw.encode())
    assert decoded is not None
    assert [it["item_id"] for it in decoded["items"]] == ["i0", "i1", "i2"]
    assert {it["score"] for it in decoded["items"]} == {0.25}


def test_empty_recommendations_and_absent_key() -> None:
    assert decode_recommendations(encode_recommendations([], "v1", 0)) == {
        "items": [],
        "model_version": "v1",
        "computed_at": 0,
    }
    assert decode_recommendations(None) is None


def test_user_view_hash_is_all_strings() -> None:
    h = UserView("u1", 3, 1_700_000_000_123, ("a", "b"), {"category:Drama": 1.23456}).to_hash()
    assert h == {"events": "3", "last_ts": "1700000000123", "recent": '["a", "b"]',
                 "interests": '{"category:Drama": 1.2346}'}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in h.items())


@pytest.mark.parametrize("as_bytes", [False, True])
def test_user_view_round_trip(as_bytes: bool) -> None:
    view = UserView("u1", 12, 1_700_000_000_123, ["i1", "ü-2", "i3"], {"scenario:web": 2.5})
    h = view.to_hash()
    raw = {k.encode(): v.encode() for k, v in h.items()} if as_bytes else h
    assert decode_user(raw) == {"events": 12, "last_ts": 1_700_000_000_123, "recent": ["i1", "ü-2", "i3"],
                                "interests": {"scenario:web": 2.5}}


def test_decode_user_of_absent_hash_is_none() -> None:
    assert decode_user({}) is None


def test_item_hash_full_and_minimal() -> None:
    h = item_hash({"item_id": "i1", "title": "Heat", "categories": ("Crime", "Drama"), "text": "LA", "ts": 3})
    assert h == {"title": "Heat", "categories": '["Crime", "Drama"]', "text": "LA", "ts": "3"}
    assert item_hash({}) == {"title": ""}
    assert item_hash({"title": 7, "text": "", "categories": None}) == {"title": "7"}
    assert item_hash({"title": "t", "categories": []}) == {"title": "t", "categories": "[]"}


@pytest.mark.parametrize("as_bytes", [False, True])
def test_item_hash_round_trip(as_bytes: bool) -> None:
    h = item_hash({"title": "Amélie", "categories": ["Comedy", "Romance"], "text": "Paris"})
    raw = {k.encode(): v.encode() for k, v in h.items()} if as_bytes else h
    assert decode_item(raw) == {"title": "Amélie", "categories": ["Comedy", "Romance"], "text": "Paris"}
    assert decode_item({}) is None


def test_decode_item_tolerates_plain_text_categories() -> None:
    assert decode_item({b"title": b"t", b"categories": b"Drama"}) == {"title": "t", "categories": ["Drama"]}


class FakeRedis:
    """Just the calls write_popular/announce_model make, on a dict."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, name: str) -> bytes | None:
        value = self.data.get(name)
        return value.encode() if isinstance(value, str) else None

    def set(self, name: str, value: str) -> None:
        self.data[name] = value

    def lpush(self, name: str, value: str) -> None:
        self.data.setdefault(name, []).insert(0, value)  # type: ignore[attr-defined]

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    def execute(self) -> None:
        pass


def test_write_popular_uses_the_recommendations_encoding() -> None:
    client = FakeRedis()
    write_popular(client, [("x", 1.0), ("y", 0.1234567)], "v3", 9)
    assert decode_recommendations(client.data[POPULAR]) == {  # type: ignore[arg-type]
        "items": [{"item_id": "x", "score": 1.0}, {"item_id": "y", "score": 0.123457}],
        "model_version": "v3",
        "computed_at": 9,
    }


def test_announce_model_pushes_the_previous_version_newest_first() -> None:
    client = FakeRedis()
    announce_model(client, "v1", now_ms=10)
    assert client.data == {MODEL_CURRENT: "v1"}
    announce_model(client, "v1", now_ms=15)  # re-announcing the same version records nothing
    assert MODEL_HISTORY not in client.data
    announce_model(client, "v2", now_ms=20)
    announce_model(client, "v3", now_ms=30)
    assert client.data[MODEL_CURRENT] == "v3"
    history = [json.loads(e) for e in client.data[MODEL_HISTORY]]  # type: ignore[attr-defined]
    assert history == [{"version": "v2", "replaced_at": 30}, {"version": "v1", "replaced_at": 20}]


def _shown(items: list[str], version: str = "v0001") -> dict:
    return decode_recommendations(encode_recommendations([(i, 1.0) for i in items], version, 1))  # type: ignore[return-value]


def test_online_hits_counts_actions_on_shown_items_per_version_and_scenario() -> None:
    shown = {"u1": _shown([f"i{n}" for n in range(20)]), "u2": _shown(["x"], "v0002"), "u3": None}
    actions = {
        "u1": [("i3", "web"), ("i15", "web"), ("zz", "app")],  # top-10 hit, top-20 hit, miss
        "u2": [("x", "web")],
        "u3": [("i3", "web")],  # had no recommendations: not counted
    }
    counts = online_hits(actions, shown)
    assert counts == {
        ("v0001", "web", "actions"): 2,
        ("v0001", "web", "hits@10"): 1,
        ("v0001", "web", "hits@20"): 2,
        ("v0001", "app", "actions"): 1,
        ("v0002", "web", "actions"): 1,
        ("v0002", "web", "hits@10"): 1,
        ("v0002", "web", "hits@1"): 1,
    }


class _Hash:
    """The HGETALL / HINCRBY surface of a Redis client, enough for the metrics codec."""

    def __init__(self) -> None:
        self.h: dict[bytes, bytes] = {}

    def hincrby(self, name: str, field: str, n: int) -> None:
        assert name == ONLINE_METRICS
        self.h[field.encode()] = str(int(self.h.get(field.encode(), b"0")) + n).encode()

    def hgetall(self, name: str) -> dict[bytes, bytes]:
        return dict(self.h)


def test_online_metrics_round_trip_sums_scenarios_under_all() -> None:
    store = _Hash()
    counts = online_hits(
        {"u1": [("i1", "web"), ("i9", "web"), ("i1", "app|odd")]}, {"u1": _shown(["i1", "i2"])}
    )
    for method, args, _ in online_metric_ops(counts) + online_metric_ops(counts):  # two flushes
        getattr(store, method)(*args)
    store.h[b"not json"] = b"3"  # a stray field is ignored
    got = read_online_metrics(store)
    assert got["v0001"]["web"] == {"actions": 4, "hits@10": 2, "hits@2": 2, "hit_rate@10": 0.5, "hit_rate@2": 0.5}
    assert got["v0001"]["app|odd"]["hit_rate@10"] == 1.0
    assert got["v0001"]["all"]["actions"] == 6 and got["v0001"]["all"]["hits@10"] == 4
