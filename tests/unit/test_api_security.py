"""The HTTP API's write protection (Bearer token, secure by default) and DELETE /v1/users/{id}, without services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from infra.process import free_port
from serving.api import create_app, redis_credentials
from streamrec.config import Settings

TOKEN = "s3cret-token"


class Sent:
    """Collects the forget records the API asks for (the real one is jobs.producer.EventProducer.forget)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.users: list[str] = []
        self.fail = fail

    def __call__(self, user_id: str) -> Mapping[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.users.append(user_id)
        return {"user_id": user_id, "type": "forget", "ts": 1_700_000_000_000}


def app_client(token: str | None, forget: Any = None) -> TestClient:  # noqa: ANN401
    settings = Settings.model_validate({"api": {"token": token}})
    # Nothing listens there: reads answer 503, and the DELETE path never touches Redis.
    store = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    return TestClient(create_app(settings, redis_client=store, forget=forget))


def delete(client: TestClient, user: str, token: str | None = None, scheme: str = "Bearer"):  # noqa: ANN201
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.delete(f"/v1/users/{quote(user, safe='')}", headers=headers)


def test_without_a_configured_token_writes_are_disabled() -> None:
    sent = Sent()
    client = app_client(None, sent)
    for token in (None, "anything", ""):
        r = delete(client, "u1", token)
        assert r.status_code == 403
        assert r.json() == {"detail": "writes are disabled: set api.token"}
    assert sent.users == []


@pytest.mark.parametrize(
    ("token", "scheme"),
    [(None, "Bearer"), ("wrong", "Bearer"), (TOKEN + "x", "Bearer"), (TOKEN, "Basic"), ("", "Bearer")],
)
def test_a_missing_or_wrong_token_is_a_401(token: str | None, scheme: str) -> None:
    sent = Sent()
    r = delete(app_client(TOKEN, sent), "u1", token, scheme)
    assert r.status_code == 401
    assert "Authorization: Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert sent.users == []


def test_the_right_token_schedules_the_forget_record() -> None:
    sent = Sent()
    r = delete(app_client(TOKEN, sent), "Zoë/🎬", TOKEN)
    assert r.status_code == 202
    body = r.json()
    assert body["user_id"] == "Zoë/🎬" and body["status"] == "scheduled" and body["ts"] == 1_700_000_000_000
    assert "rec:" in body["detail"]
    assert sent.users == ["Zoë/🎬"]


@pytest.mark.parametrize("user", ["x" * 257, "a\x00b", "tab\there", "\x85"])
def test_a_bad_user_id_is_a_422_once_authenticated(user: str) -> None:
    sent = Sent()
    client = app_client(TOKEN, sent)
    r = delete(client, user, TOKEN)
    assert r.status_code == 422 and r.json()["detail"].startswith("user_id: ")
    # ... and without the token nothing is said about the parameter.
    assert delete(client, user).status_code == 401
    assert sent.users == []


def test_kafka_failure_is_a_503_and_an_unwired_api_too() -> None:
    r = delete(app_client(TOKEN, Sent(fail=TimeoutError("broker away"))), "u1", TOKEN)
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable" and "broker away" in r.json()["detail"]
    r = delete(app_client(TOKEN, None), "u1", TOKEN)
    assert r.status_code == 503 and "no Kafka producer" in r.json()["detail"]


def test_reads_need_no_token() -> None:
    client = app_client(TOKEN, Sent())
    for path in ("/healthz", "/v1/users/u1", "/v1/users/u1/recommendations", "/v1/items/i1"):
        assert client.get(path).status_code == 503, path  # Redis is away here, but no 401/403


def test_openapi_documents_the_bearer_scheme_on_delete_only() -> None:
    spec = app_client(TOKEN).get("/openapi.json").json()
    ops = spec["paths"]["/v1/users/{user_id}"]
    assert ops["delete"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in ops["get"]
    assert set(ops["delete"]["responses"]) >= {"202", "401", "403", "422", "503"}


def test_api_redis_credentials_fall_back_to_the_jobs() -> None:
    both = Settings.model_validate(
        {"redis": {"username": "job", "password": "jp"}, "api": {"redis_username": "api", "redis_password": "ap"}}
    )
    assert redis_credentials(both) == ("api", "ap")
    assert redis_credentials(Settings.model_validate({"redis": {"username": "job", "password": "jp"}})) == ("job", "jp")
    assert redis_credentials(Settings()) == (None, None)
