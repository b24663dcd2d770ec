"""The HTTP API's write protection (Bearer token, secure by default), DELETE /v1/users/{id} and POST /v1/impressions,
without services."""

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
from streamrec.events import IMPRESSION, Event

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


class Shown:
    """Collects the impression records the API sends (the real one is jobs.producer.EventProducer.send_impression)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.records: list[Event] = []
        self.fail = fail

    def __call__(self, ev: Event) -> Mapping[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.records.append(ev)
        return ev.to_dict()


def app_client(token: str | None, forget: Any = None, impressions: Any = None) -> TestClient:  # noqa: ANN401
    settings = Settings.model_validate({"api": {"token": token}})
    # Nothing listens there: reads answer 503, and the write paths never touch Redis.
    store = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    return TestClient(create_app(settings, redis_client=store, forget=forget, impressions=impressions))


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


def test_openapi_documents_the_bearer_scheme_on_the_writes_only() -> None:
    spec = app_client(TOKEN).get("/openapi.json").json()
    ops = spec["paths"]["/v1/users/{user_id}"]
    assert ops["delete"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in ops["get"]
    assert set(ops["delete"]["responses"]) >= {"202", "401", "403", "422", "503"}
    post = spec["paths"]["/v1/impressions"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    assert set(post["responses"]) >= {"202", "401", "403", "422", "503"}
    body = spec["components"]["schemas"]["ImpressionBody"]
    assert body["required"] == ["user_id", "items"] and body["properties"]["items"]["maxItems"] == 100


# --- POST /v1/impressions -----------------------------------------------------------------------------------


def post(client: TestClient, body: Any, token: str | None = None, scheme: str = "Bearer"):  # noqa: ANN201, ANN401
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.post("/v1/impressions", json=body, headers=headers)


LIST = {"user_id": "Zoë/🎬", "items": ["i1", "Face/Off (1997)"]}


def test_impressions_need_the_token_like_every_write() -> None:
    shown = Shown()
    assert post(app_client(None, impressions=shown), LIST, "anything").status_code == 403
    for token, scheme in [(None, "Bearer"), ("wrong", "Bearer"), (TOKEN, "Basic")]:
        r = post(app_client(TOKEN, impressions=shown), LIST, token, scheme)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    # ... and without it nothing is said about the body, not even that it is no JSON.
    client = app_client(TOKEN, impressions=shown)
    assert post(client, {"items": []}).status_code == 401
    assert client.post("/v1/impressions", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 401
    assert shown.records == []


def test_the_right_token_sends_the_impression_record() -> None:
    shown = Shown()
    client = app_client(TOKEN, impressions=shown)
    body = {**LIST, "model_version": "v0003", "arm": "exp-1:b", "scenario": "web", "ts": 1_700_000_000_000}
    r = post(client, body, TOKEN)
    assert r.status_code == 202
    assert r.json() == {**body, "type": IMPRESSION}
    (ev,) = shown.records
    assert (ev.user_id, ev.items, ev.model_version, ev.arm, ev.scenario) == (
        "Zoë/🎬", ("i1", "Face/Off (1997)"), "v0003", "exp-1:b", "web")
    r = post(client, LIST, TOKEN)  # the optional fields stay out; ts is now
    assert r.status_code == 202 and set(r.json()) == {"user_id", "type", "items", "ts"}
    assert r.json()["ts"] == shown.records[-1].ts > 1_700_000_000_000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**LIST, "user_id": "a\x00b"}, "field 'user_id' contains control characters"),
        ({**LIST, "user_id": "x" * 257}, "field 'user_id' is longer than 256 characters"),
        ({**LIST, "items": []}, "field 'items' must be a list of 1..100 item ids"),
        ({**LIST, "items": [f"i{n}" for n in range(101)]}, "field 'items' must be a list of 1..100 item ids"),
        ({**LIST, "items": ["i1", " "]}, "field 'items[1]' must not be empty"),
        ({**LIST, "items": ["i1", "tab\there"]}, "field 'items[1]' contains control characters"),
        ({**LIST, "arm": ""}, "field 'arm' must be a non-empty string"),
        ({**LIST, "scenario": "s" * 65}, "field 'scenario' must be a non-empty string of <= 64"),
        ({**LIST, "ts": -5}, "field 'ts' -5 is negative"),
        ({**LIST, "ts": "5"}, "ts: Input should be a valid integer"),
        ({**LIST, "items": "i1"}, "items: Input should be a valid list"),
        ({**LIST, "items": [7]}, "Input should be a valid string"),
        ({**LIST, "item_id": "i1"}, "item_id: Extra inputs are not permitted"),
        ({"items": ["i1"]}, "user_id: Field required"),
    ],
)
def test_a_bad_impression_is_a_422_with_the_reason(body: dict[str, Any], fragment: str) -> None:
    shown = Shown()
    r = post(app_client(TOKEN, impressions=shown), body, TOKEN)
    assert r.status_code == 422 and fragment in r.json()["detail"], r.json()
    assert shown.records == []


def test_kafka_failure_is_a_503_for_impressions_and_an_unwired_api_too() -> None:
    r = post(app_client(TOKEN, impressions=Shown(fail=TimeoutError("broker away"))), LIST, TOKEN)
    assert r.status_code == 503 and r.json()["status"] == "unavailable" and "broker away" in r.json()["detail"]
    r = post(app_client(TOKEN, forget=Sent()), LIST, TOKEN)  # a forget sender is no impression sender
    assert r.status_code == 503 and "no Kafka producer for impression records" in r.json()["detail"]
    assert post(app_client(TOKEN), {**LIST, "items": []}, TOKEN).status_code == 422  # invalid first: not sent


def test_api_redis_credentials_fall_back_to_the_jobs() -> None:
    both = Settings.model_validate(
        {"redis": {"username": "job", "password": "jp"}, "api": {"redis_username": "api", "redis_password": "ap"}}
    )
    assert redis_credentials(both) == ("api", "ap")
    assert redis_credentials(Settings.model_validate({"redis": {"username": "job", "password": "jp"}})) == ("job", "jp")
    assert redis_credentials(Settings()) == (None, None)
