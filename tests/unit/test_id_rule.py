"""One id rule: the HTTP API refuses exactly the user and item ids the stream dead-letters, for the same reason.

The ids are drawn from the hostile strategies the event parsers are fuzzed with (``test_events_fuzz.py``). The
stream's verdict is ``parse_event`` on an otherwise valid event; the API's is its answer to a request with the
id in the path, percent-encoded so that the server decodes it itself. An id no URL can carry (not text, a lone
surrogate, longer than a URL may be) never reaches the API: the stream must refuse it too. No services: the
API's Redis is a closed port (a read answers 503 once its parameters are valid) and its forget sender a stub.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import example, given
from hypothesis import strategies as st

from infra.process import free_port
from serving.api import create_app
from streamrec.config import Settings
from streamrec.events import MAX_ID_CHARS, MAX_RECORD_BYTES, InvalidRecordError, id_problem, parse_event
from tests.unit.test_events_fuzz import EVENT_FIELDS, FUZZ, NOW, VALID, field_values

TOKEN = "id-rule-token"
# The ids that started it (U+0085 NEL: the stream took it, the API did not), and their neighbours.
EDGE_IDS = ["\x85", "a\x85b", "\x7f", "\x9f", "\xa0", " ", "\u2028", "\ufeff", "x" * MAX_ID_CHARS,
            "x" * (MAX_ID_CHARS + 1), "x" * MAX_RECORD_BYTES, "", "..", "a/recommendations", "%", "\ud800", "a\x00b",
            "i1\n", "a\nb"]  # a router's path parameter drops a trailing newline: the API must see it


def forget(user_id: str) -> Mapping[str, Any]:
    return {"user_id": user_id, "type": "forget", "ts": NOW}


@pytest.fixture(scope="module")
def api() -> Iterator[TestClient]:
    settings = Settings.model_validate({"api": {"token": TOKEN}})
    store = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    with TestClient(create_app(settings, redis_client=store, forget=forget)) as client:
        yield client


def record(field: str, value: Any) -> bytes:
    """A valid event but for ``field``, as a producer's JSON."""
    return json.dumps({**VALID[EVENT_FIELDS], field: value}).encode()


def stream_verdict(field: str, value: Any) -> str | None:
    """None if the stream applies an event with this id in ``field``, else its dead-letter reason."""
    try:
        parse_event(record(field, value), now_ms=NOW)
    except InvalidRecordError as exc:
        return exc.reason
    return None


# The API's verdict on ids no request can carry: JSON may hold any value as an id, a URL only UTF-8 text, and
# HTTP clients send no URL over 64 KiB (httpx's limit; servers' are lower).
NOT_TEXT, NOT_UTF8, TOO_LONG = "a path is text", "no URL carries it", "no client sends a URL this long"
UNSENDABLE = (NOT_TEXT, NOT_UTF8, TOO_LONG)
MAX_URL_CHARS = 65_536


def api_verdict(client: TestClient, field: str, value: Any) -> str | None:
    """None if the API takes this id as ``field`` (a user id: DELETE /v1/users/{id}; an item id: GET /v1/items/{id})."""
    if not isinstance(value, str):
        return NOT_TEXT
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        return NOT_UTF8
    # Every byte but ASCII letters and digits percent-encoded: no dot segment or delimiter for the client to read.
    segment = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02X}" for b in raw)
    if len(segment) > MAX_URL_CHARS - len("/v1/users/"):
        return TOO_LONG
    if field == "user_id":
        r = client.delete(f"/v1/users/{segment}", headers={"Authorization": f"Bearer {TOKEN}"})
        accepted = r.status_code == 202 and r.json()["user_id"] == value
    else:
        r = client.get(f"/v1/items/{segment}")
        accepted = r.status_code == 503  # past validation, the store is away
    if accepted:
        return None
    assert r.status_code < 500, (value, r.status_code, r.text[:300])
    return str(r.json()["detail"])


def check(client: TestClient, field: str, drawn: Any) -> None:
    # The id as a producer's JSON carries it: an escaped surrogate pair, say, is one character on arrival.
    value = json.loads(json.dumps(drawn))
    stream, api = stream_verdict(field, value), api_verdict(client, field, value)
    assert (stream is None) == (api is None), (value, stream, api)
    problem = id_problem(value)
    assert (problem is None) == (stream is None), (value, problem, stream)
    if problem is not None and api not in UNSENDABLE:
        # The rule's reason, in the stream's dead letter (unless the whole record is too big) and the API's 422.
        if len(record(field, value)) <= MAX_RECORD_BYTES:
            assert stream == f"field '{field}' {problem}", (value, stream)
        assert api == f"{field}: {problem}", (value, api)


@FUZZ
@given(value=field_values["user_id"])
@example(value="\x85")
def test_api_and_stream_agree_on_every_fuzzed_user_id(api: TestClient, value: Any) -> None:
    check(api, "user_id", value)


@FUZZ
@given(value=field_values["item_id"])
@example(value="\x85")
def test_api_and_stream_agree_on_every_fuzzed_item_id(api: TestClient, value: Any) -> None:
    check(api, "item_id", value)


@pytest.mark.parametrize("value", EDGE_IDS)
@pytest.mark.parametrize("field", ["user_id", "item_id"])
def test_api_and_stream_agree_on_the_edge_ids(api: TestClient, field: str, value: str) -> None:
    check(api, field, value)


def test_a_c1_control_is_refused_by_both() -> None:
    assert id_problem("\x85") == id_problem("a\x85b") == "contains control characters"
    assert stream_verdict("user_id", "a\x85b") == "field 'user_id' contains control characters"


def test_the_strategies_reach_both_verdicts() -> None:
    """The fuzzed ids are not all refused: valid ones are drawn too (else agreement would prove little)."""
    seen: set[bool] = set()

    @FUZZ
    @given(st.one_of(field_values["user_id"], field_values["item_id"]))
    def draw(value: Any) -> None:
        seen.add(id_problem(value) is None)

    draw()
    assert seen == {True, False}
