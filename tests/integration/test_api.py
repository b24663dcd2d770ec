"""The HTTP API against a real redis-server: reads, fallbacks, bad parameters, Redis down and back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from infra.process import free_port
from infra.redis_server import RedisServer
from serving.api import create_app
from serving.store import MODEL_CURRENT, POPULAR, UserView, encode_recommendations, item_hash, key
from streamrec.config import RedisConfig, Settings

pytestmark = pytest.mark.integration


def on_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[TestClient]:
    # The session Redis, on db 15 flushed here: `popular` and `model:current` are global keys.
    url = on_db(redis_url, 15)
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.set(MODEL_CURRENT, "v7")
    r.set(
        key("rec", "u1"), encode_recommendations([("i1", 0.9), ("i2", 0.5), ("gone", 0.1)], "v7", 1_700_000)
    )
    r.set(
        POPULAR, encode_recommendations([(f"i{n}", 1.0 - n / 200) for n in range(1, 151)], "pop1", 1_600_000)
    )
    r.set(key("rec", "Zoë 🎬"), encode_recommendations([("Face/Off (1997)", 0.7)], "v7", 1))
    r.hset(key("user", "u1"), mapping=UserView("u1", 3, 1_700_000, ["i9", "i8"]).to_hash())
    for n in range(1, 151):
        r.hset(key("item", f"i{n}"), mapping=item_hash({"title": f"Title {n}", "categories": ["Drama"]}))
    r.hset(key("item", "Face/Off (1997)"), mapping=item_hash({"title": "Face/Off"}))
    with TestClient(create_app(Settings(redis=RedisConfig(url=url)))) as c:
        yield c
    r.flushdb()
    r.close()


# A list written without the policy stage's fields (an older job, or `popular`): they read as null.
NO_REASON = {"reason": None, "because": None, "team": None}


def recs(client: TestClient, user: str, **params: object):  # noqa: ANN201
    return client.get(f"/v1/users/{quote(user, safe='')}/recommendations", params=params)


def test_personal_recommendations_join_titles(client: TestClient) -> None:
    r = recs(client, "u1")
    assert r.status_code == 200
    assert r.json() == {
        "user_id": "u1",
        "items": [
            {"item_id": "i1", "title": "Title 1", "score": 0.9, **NO_REASON},
            {"item_id": "i2", "title": "Title 2", "score": 0.5, **NO_REASON},
            {"item_id": "gone", "title": None, "score": 0.1, **NO_REASON},  # not in the catalog: null title
        ],
        "source": "personal",
        "model_version": "v7",
        "computed_at": 1_700_000,
        "arm": None,
        "teams": None,
    }
    assert [i["item_id"] for i in recs(client, "u1", k=1).json()["items"]] == ["i1"]


def test_unknown_user_gets_popular(client: TestClient) -> None:
    body = recs(client, "nobody", k=100).json()
    assert body["source"] == "popular" and body["model_version"] == "pop1" and body["user_id"] == "nobody"
    assert len(body["items"]) == 100
    assert body["items"][0] == {"item_id": "i1", "title": "Title 1", "score": 0.995, **NO_REASON}
    assert len(recs(client, "nobody").json()["items"]) == 10


@pytest.mark.parametrize("k", ["0", "101", "abc", "-1", "1.5"])
def test_bad_k_is_a_clear_422(client: TestClient, k: str) -> None:
    r = recs(client, "u1", k=k)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("k: ")


def test_unicode_and_slashes_in_ids(client: TestClient) -> None:
    body = recs(client, "Zoë 🎬").json()
    assert body["user_id"] == "Zoë 🎬" and body["source"] == "personal"
    assert body["items"] == [{"item_id": "Face/Off (1997)", "title": "Face/Off", "score": 0.7, **NO_REASON}]
    r = client.get(f"/v1/items/{quote('Face/Off (1997)', safe='')}")
    assert r.status_code == 200 and r.json()["title"] == "Face/Off"


@pytest.mark.parametrize("user", ["x" * 257, "a\x00b", "tab\there", "\x85"])
def test_bad_user_id_is_a_clear_422(client: TestClient, user: str) -> None:
    for path in (f"/v1/users/{quote(user, safe='')}/recommendations", f"/v1/users/{quote(user, safe='')}"):
        r = client.get(path)
        assert r.status_code == 422, path
        assert r.json() == {"detail": "user_id: " + r.json()["detail"].removeprefix("user_id: ")}
        assert "256" in r.json()["detail"] or "control" in r.json()["detail"]


def test_longest_user_id_is_fine(client: TestClient) -> None:
    assert recs(client, "x" * 256).status_code == 200


def test_user_view(client: TestClient) -> None:
    r = client.get("/v1/users/u1")
    assert r.status_code == 200
    assert r.json() == {"user_id": "u1", "events": 3, "last_ts": 1_700_000, "recent": ["i9", "i8"], "interests": {},
                        "impressions": 0}
    r = client.get("/v1/users/nobody")
    assert r.status_code == 404 and "nobody" in r.json()["detail"]


def test_item(client: TestClient) -> None:
    r = client.get("/v1/items/i3")
    assert r.status_code == 200
    assert r.json() == {"item_id": "i3", "title": "Title 3", "categories": ["Drama"], "text": None}
    r = client.get("/v1/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_healthz_and_openapi(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "redis": "ok", "model_version": "v7"}
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "streamrec API"
    assert {"/healthz", "/v1/items/{item_id}", "/v1/users/{user_id}/recommendations"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_empty_store_answers_empty_popular(redis_url: str) -> None:
    r = redis.Redis.from_url(on_db(redis_url, 14))
    r.flushdb()
    with TestClient(create_app(Settings(), redis_client=r)) as c:
        assert recs(c, "u1").json() == {
            "user_id": "u1",
            "items": [],
            "source": "popular",
            "model_version": None,
            "computed_at": None,
            "arm": None,
            "teams": None,
        }
        assert c.get("/healthz").json()["model_version"] is None
    r.close()


def test_redis_down_is_503_then_recovers(tmp_path: Path) -> None:
    # Its own Redis: the shared one must not go down under the other tests.
    server = RedisServer(home=tmp_path, port=free_port())
    pid: int | None = server.start()
    try:
        server.client().set(key("rec", "u1"), encode_recommendations([("i1", 0.9)], "v7", 1))
        server.client().set(MODEL_CURRENT, "v7")
        with TestClient(create_app(Settings(redis=RedisConfig(url=server.url)))) as client:
            assert client.get("/healthz").status_code == 200  # the pool now holds a live connection
            RedisServer.stop(pid)
            pid = None
            for path in ("/healthz", "/v1/users/u1/recommendations", "/v1/users/u1", "/v1/items/i1"):
                r = client.get(path)
                assert r.status_code == 503, path
                body = r.json()
                assert body["status"] == "unavailable" and "Redis is unreachable" in body["detail"], body
            # Same port and data dir (append-only file): the API reconnects by itself.
            pid = server.start()
            r = client.get("/healthz")
            assert r.status_code == 200 and r.json()["model_version"] == "v7"
            assert recs(client, "u1").json()["source"] == "personal"
    finally:
        RedisServer.stop(pid)


def test_reasons_arm_read_time_exclusion_and_experiments(redis_url: str, tmp_path: Path) -> None:
    """The policy's fields in words; an item marked unavailable leaves the answer at once; per-arm figures."""
    from serving.experiments import EXPERIMENT_METRICS
    from serving.store import encode_list

    url = on_db(redis_url, 14)
    r = redis.Redis.from_url(url)
    r.flushdb()
    entries = [
        {"item_id": "a", "score": 0.9, "reason": {"kind": "history", "item_id": "h"}, "team": 0},
        {"item_id": "b", "score": 0.8, "reason": {"kind": "rule", "rule": "drama-week"}, "team": 1},
        {"item_id": "c", "score": None, "reason": {"kind": "pin"}, "team": 0},
    ]
    r.set(key("rec", "u"), encode_list(entries, "v3", 5, arm="il:interleaved", teams=["old", "new"], scenario="web"))
    for item, title in (("a", "Alpha"), ("b", "Beta"), ("c", "Gamma"), ("h", "Heat (1995)")):
        r.hset(key("item", item), mapping=item_hash({"title": title, "attributes": {"available": True}}))
    r.hset(EXPERIMENT_METRICS, mapping={
        '["ab", "control", "web", "actions"]': 100, '["ab", "control", "web", "hits@10"]': 40,
        '["ab", "treat", "web", "actions"]': 100, '["ab", "treat", "web", "hits@10"]': 60,
        '["ab", "treat", "web", "impressions"]': 600,
    })
    policy = tmp_path / "policy.yaml"
    policy.write_text("scenarios:\n  web:\n    exclude: [{attribute: available, equals: false}]\n"
                      "experiments: [{name: ab, arms: {control: {}, treat: {}}}]\n")
    settings = Settings(redis=RedisConfig(url=url), policy={"file": str(policy)})
    with TestClient(create_app(settings)) as c:
        body = recs(c, "u").json()
        assert body["arm"] == "il:interleaved" and body["teams"] == ["old", "new"]
        assert [(i["item_id"], i["reason"], i["because"], i["team"], i["score"]) for i in body["items"]] == [
            ("a", "because you watched Heat (1995)", "h", 0, 0.9),
            ("b", "promoted: drama-week", None, 1, 0.8),
            ("c", "featured", None, 0, None),
        ]
        # Marked unavailable (an items upsert reached item:{id}): gone from the answer before the list is rewritten.
        r.hset(key("item", "b"), mapping=item_hash({"title": "Beta", "attributes": {"available": False}}))
        assert [i["item_id"] for i in recs(c, "u", k=2).json()["items"]] == ["a", "c"]
        report = c.get("/v1/experiments").json()["experiments"]["ab"]
        treat = report["arms"]["treat"]
        assert treat["hit_rate@10"]["value"] == 0.6 and treat["ctr"]["value"] == 0.1
        assert treat["vs_control"]["control"] == "control"
        assert 0 < treat["vs_control"]["hit_rate@10_p"] < 0.01
    r.flushdb()
    r.close()
