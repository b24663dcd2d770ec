"""Redis ACL least privilege against a real redis-server: the stream's writer user, the API's read-only user."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from infra.process import free_port
from infra.redis_server import AclUser, AclUserError, RedisServer
from serving.api import create_app
from serving.store import (
    API_ACL_RULES,
    JOB_ACL_RULES,
    MODEL_CURRENT,
    MODEL_HISTORY,
    ONLINE_METRICS,
    POPULAR,
    UserView,
    announce_model,
    decode_item,
    encode_recommendations,
    execute_with_retry,
    item_hash,
    key,
    online_metric_ops,
    write_popular,
)
from streamrec.config import Settings

pytestmark = pytest.mark.integration

ADMIN, JOB, API = "admin-pw-3f9a", "job pw 7c1e", "api-pw-b25d"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(
        home=tmp_path_factory.mktemp("redis-acl"),
        port=free_port(),
        password=ADMIN,
        users=[AclUser("streamrec-job", JOB, JOB_ACL_RULES), AclUser("streamrec-api", API, API_ACL_RULES)],
    )
    pid = srv.start()
    srv.pid = pid  # type: ignore[attr-defined]
    yield srv
    RedisServer.stop(pid)


def client(server: RedisServer, user: str | None, password: str, db: int = 0) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, db=db, username=user, password=password, socket_timeout=5)


def refused(call) -> bool:  # noqa: ANN001
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_the_job_user_can_do_what_the_stream_does_and_nothing_else(server: RedisServer) -> None:
    job = client(server, "streamrec-job", JOB, db=3)  # SELECT on connect, as a configured /3 URL does
    item = key("item", "i1")
    # the catalog stage: replace an item's hash
    execute_with_retry(job, [("delete", (item,), {}), ("hset", (item,), {"mapping": item_hash({"title": "T"})})])
    # the writer: read the lists shown, write views and lists, count hits, delete a forgotten user's keys
    rec = encode_recommendations([("i1", 0.5)], "v1", 1)
    ops = [
        ("get", (key("rec", "u1"),), {}),
        ("hset", (key("user", "u1"),), {"mapping": UserView("u1", 1, 5, ["i1"]).to_hash()}),
        ("set", (key("rec", "u1"), rec), {}),
        ("set", (key("rec", "u2"), rec), {}),
        *online_metric_ops({("v1", "web", "actions"): 2}),
        ("delete", (key("rec", "u2"), key("user", "u2")), {}),
        ("hgetall", (item,), {}),  # the text of an item the serving model does not know, after a restart
    ]
    assert decode_item(execute_with_retry(job, ops)[-1]) == {"title": "T"}
    # the trainer's and CLI's announcements: model:current + model:history in a MULTI/EXEC, popular
    announce_model(job, "v1")
    announce_model(job, "v2")
    write_popular(job, [("i1", 1.0)], "v2", 1)
    assert job.get(MODEL_CURRENT) == b"v2"
    admin = client(server, None, ADMIN, db=3)
    assert admin.get(key("rec", "u1")) == rec.encode() and admin.get(POPULAR) is not None
    assert admin.llen(MODEL_HISTORY) == 1 and admin.hget(ONLINE_METRICS, '["v1", "web", "actions"]') == b"2"
    assert admin.hget(item, "title") == b"T"

    admin.set("other:secret", "x")
    for what, call in {
        "FLUSHALL": job.flushall,
        "FLUSHDB": job.flushdb,
        "CONFIG GET": lambda: job.config_get("*"),
        "KEYS": lambda: job.keys("*"),
        "SCAN": lambda: job.scan(0),
        "ACL LIST": job.acl_list,
        "EVAL": lambda: job.eval("return 1", 0),
        "GET outside the layout": lambda: job.get("other:secret"),
        "SET outside the layout": lambda: job.set("other:mine", "x"),
        "DEL outside the layout": lambda: job.delete("other:secret"),
        "RENAME": lambda: job.rename(key("rec", "u1"), key("rec", "u9")),
    }.items():
        assert refused(call), what
    assert admin.get("other:secret") == b"x" and admin.dbsize() > 0  # nothing was flushed


def test_the_api_user_reads_and_cannot_write(server: RedisServer) -> None:
    admin = client(server, None, ADMIN)
    admin.set(key("rec", "u1"), encode_recommendations([("i1", 0.5)], "v1", 1))
    admin.hset(key("user", "u1"), mapping=UserView("u1", 1, 5, ["i1"]).to_hash())
    api = client(server, "streamrec-api", API)
    assert api.ping() and api.get(key("rec", "u1")) and api.hgetall(key("user", "u1"))
    assert api.hmget(key("item", "nope"), ["title"]) == [None]
    for what, call in {
        "SET": lambda: api.set(key("rec", "u1"), "x"),
        "DEL": lambda: api.delete(key("rec", "u1")),
        "HSET": lambda: api.hset(key("user", "u1"), "events", "9"),
        "UNLINK": lambda: api.unlink(key("user", "u1")),
        "EXPIRE": lambda: api.expire(key("rec", "u1"), 1),
        "FLUSHDB": api.flushdb,
        "KEYS": lambda: api.keys("*"),
        "CONFIG GET": lambda: api.config_get("*"),
        "GET outside the layout": lambda: api.get("other:secret"),
    }.items():
        assert refused(call), what
    assert admin.hget(key("user", "u1"), "events") == b"1"


def test_wrong_or_missing_passwords_are_refused(server: RedisServer) -> None:
    with pytest.raises(redis.AuthenticationError):
        client(server, "streamrec-job", "wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        client(server, None, "wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        client(server, "streamrec-api", JOB).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5).get(key("rec", "u1"))


def test_no_password_on_the_command_line_or_in_a_readable_file(server: RedisServer) -> None:
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode()  # type: ignore[attr-defined]
    for file in ("redis.conf", "users.acl"):
        assert stat.S_IMODE(os.stat(server.home / file).st_mode) == 0o600, file
    acl = (server.home / "users.acl").read_text()
    for secret in (ADMIN, JOB, API):
        assert secret not in cmdline and secret not in acl  # the ACL file holds SHA-256 hashes
        assert secret not in (server.home / "redis.log").read_text()


def test_the_api_works_fully_with_the_read_only_user(server: RedisServer) -> None:
    admin = client(server, None, ADMIN, db=5)
    admin.flushdb()
    admin.set(MODEL_CURRENT, "v7")
    admin.set(key("rec", "u1"), encode_recommendations([("i1", 0.9), ("i2", 0.5)], "v7", 1_700))
    admin.set(POPULAR, encode_recommendations([("i2", 1.0)], "pop", 1_600))
    admin.hset(key("user", "u1"), mapping=UserView("u1", 3, 1_700, ["i9"]).to_hash())
    admin.hset(key("item", "i1"), mapping=item_hash({"title": "One", "categories": ["Drama"]}))
    admin.hset(ONLINE_METRICS, mapping={'["v7", "web", "actions"]': 4, '["v7", "web", "hits@10"]': 1})
    settings = Settings.model_validate(
        {
            "redis": {"url": f"redis://127.0.0.1:{server.port}/5", "username": "streamrec-job", "password": JOB},
            "api": {"redis_username": "streamrec-api", "redis_password": API},
        }
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/healthz").json() == {"status": "ok", "redis": "ok", "model_version": "v7"}
        body = c.get("/v1/users/u1/recommendations").json()
        assert body["source"] == "personal" and [i["title"] for i in body["items"]] == ["One", None]
        assert c.get("/v1/users/nobody/recommendations").json()["source"] == "popular"
        assert c.get("/v1/users/u1").json()["events"] == 3
        assert c.get("/v1/users/nobody").status_code == 404
        assert c.get("/v1/items/i1").json()["title"] == "One"
        assert c.get("/v1/metrics/online").json()["versions"]["v7"]["web"]["hit_rate@10"] == 0.25
        # The API's connection really is the read-only user's.
        assert refused(lambda: c.app.state.redis.set(key("rec", "u1"), "x"))  # type: ignore[attr-defined]


def test_acl_users_need_an_admin_password_and_a_password_each(tmp_path: Path) -> None:
    with pytest.raises(AclUserError, match="stack.redis_password"):
        RedisServer(home=tmp_path, port=free_port(), users=[AclUser("u", "p", JOB_ACL_RULES)]).start()
    with pytest.raises(AclUserError, match="no password"):
        RedisServer(home=tmp_path, port=free_port(), password="a", users=[AclUser("u", "", JOB_ACL_RULES)]).start()
