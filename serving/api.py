"""The HTTP API front-ends read: recommendations, user views and items, straight from Redis.

Run it with ``streamrec serve [--port N]`` (host and port from ``api.host`` / ``api.port``, Redis
from ``redis.url``; e.g. ``STREAMREC_API__PORT=8080``). OpenAPI at ``/docs`` and ``/openapi.json``.

Every error is JSON ``{"detail": "..."}``: a bad parameter is a 422 that names it, an absent user
or item a 404, and while Redis is unreachable every endpoint answers 503 (``"status":
"unavailable"`` too) until redis-py's pool reconnects by itself on the next request.

Ids travel percent-encoded in the path and may contain ``/`` (MovieLens-1M item ids are titles
such as ``Face/Off (1997)``); a user id cannot end in ``/recommendations``. They follow the event
contract's id rule (:func:`streamrec.events.id_problem`): the API refuses (422) exactly the ids the
stream dead-letters.

Reads are open. Endpoints that write or delete (``DELETE /v1/users/{id}``, ``POST /v1/impressions``) need
``Authorization: Bearer <api.token>`` (401 without it or with another token), and answer 403 while no
``api.token`` is set. The API reads Redis as ``api.redis_username`` (a read-only ACL user) when set, else as
``redis.username``; its writes therefore go through the stream: a ``forget`` record (a deletion) or an
``impression`` record (a list a front-end showed a user) on the events topic, which the job applies. Both are
sent by senders ``streamrec serve`` wires (one Kafka producer); without one the endpoint answers 503.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.convertors import Convertor, register_url_convertor

from serving.experiments import INTERLEAVED, experiment_report, read_experiment_counts, split_label
from serving.policy import Policy, excluded, item_facts, policy_source
from serving.store import (
    MODEL_CURRENT,
    POPULAR,
    connect,
    decode_item,
    decode_recommendations,
    decode_user,
    key,
    read_online_metrics,
)
from streamrec.config import CUTOFF, RulesConfig, Settings, secret_value
from streamrec.events import (
    DEFAULT_SCENARIO,
    ID_RULE,
    IMPRESSION,
    MAX_ID_CHARS,
    MAX_IMPRESSION_ITEMS,
    MAX_SCENARIO_CHARS,
    Event,
    InvalidRecordError,
    id_problem,
    make_impression,
)

MAX_K = 100

# --- response bodies (they are the OpenAPI schema) ---------------------------------------------


class Error(BaseModel):
    """Every error the API answers."""

    detail: str = Field(examples=["k: Input should be less than or equal to 100"])


class Unavailable(Error):
    """The answer while Redis cannot be reached."""

    status: Literal["unavailable"] = "unavailable"


class RecommendedItem(BaseModel):
    """One recommended item, best first."""

    item_id: str
    title: str | None = Field(description="from `item:{item_id}`; null when the catalog lacks the item")
    score: float | None = Field(description="the model's score; null for a pinned item the model did not score")
    reason: str | None = Field(
        None, description='why it is recommended, e.g. "because you watched Heat (1995)" (docs/policy.md)'
    )
    because: str | None = Field(None, description="the history item the reason names, when it names one")
    team: int | None = Field(None, description="in an interleaved list: the arm (0 or 1 of `teams`) that picked it")


class Recommendations(BaseModel):
    """A user's top-k."""

    user_id: str
    items: list[RecommendedItem]
    source: Literal["personal", "popular"] = Field(
        description="`personal`: the user's own `rec:{user_id}`; `popular`: the fallback for unknown users"
    )
    model_version: str | None = Field(description="the model that computed the list; null when there is none")
    computed_at: int | None = Field(description="epoch ms the list was computed; null when there is none")
    arm: str | None = Field(
        None, description="`<experiment>:<arm>` when the list is part of an A/B experiment: send it back with "
        "the impression"
    )
    teams: list[str] | None = Field(None, description="the two arms of an interleaved list")


class Experiments(BaseModel):
    """Per experiment and arm: the stream's counters, rates with 95% intervals, and the test against the control."""

    experiments: dict[str, Any]


class UserView(BaseModel):
    """What the stream knows of a user (`user:{user_id}`)."""

    user_id: str
    events: int = Field(description="events applied to the user's state")
    last_ts: int = Field(description="event time (epoch ms) of the last one")
    recent: list[str] = Field(description="recent item ids, newest last")
    interests: dict[str, float] = Field(
        default_factory=dict, description="strongest time-decayed interests, e.g. category:Drama, scenario:web"
    )
    impressions: int = Field(0, description="lists a front-end reported shown to the user (impression records)")


class Item(BaseModel):
    """An item's display fields (`item:{item_id}`); fields beyond these are passed through."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    title: str | None = None
    categories: list[Any] | None = None
    text: str | None = None


class Health(BaseModel):
    """Liveness of the API and its store."""

    status: Literal["ok"] = "ok"
    redis: Literal["ok"] = "ok"
    model_version: str | None = Field(description="`model:current`, the version in service; null before any")


class OnlineCounts(BaseModel):
    """Actions of users who had recommendations, and how many hit them."""

    model_config = ConfigDict(extra="allow")  # hits@K / hit_rate@K for every list length K written

    actions: int = Field(description="actions of users who had recommendations when acting")


class OnlineMetrics(BaseModel):
    """The online hit rate, measured by the stream itself (``metrics:online``)."""

    model_version: str | None = Field(description="`model:current`, the version in service; null before any")
    versions: dict[str, dict[str, OnlineCounts]] = Field(
        description="model version -> scenario (and `all`) -> counts and hit rates; "
        f"hit_rate@{CUTOFF} = share of actions on an item in the top {CUTOFF} the user was shown"
    )


class ForgetScheduled(BaseModel):
    """A deletion accepted: the forget record is on the events topic, and the stream applies it."""

    user_id: str
    status: Literal["scheduled"] = "scheduled"
    ts: int = Field(description="event time (epoch ms) of the forget record")
    detail: str = (
        "the job deletes rec:{user_id} and user:{user_id} and clears the user's state within seconds; "
        "training drops every earlier event of the user"
    )


class ImpressionBody(BaseModel):
    """A list a front-end showed a user, one request per list shown.

    The job counts each item as shown to the user until the user acts on it (the policy's repeat rule reads it).
    """

    # Strict: an id sent as a number, or a ts as a string, is a client bug to report, not to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str = Field(
        description=f"user id: {ID_RULE}", json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS}
    )
    items: list[str] = Field(
        description=f"the item ids in the order shown, 1..{MAX_IMPRESSION_ITEMS}, each {ID_RULE}",
        json_schema_extra={"minItems": 1, "maxItems": MAX_IMPRESSION_ITEMS},
    )
    model_version: str | None = Field(None, description=f"the model that produced the list, 1..{MAX_ID_CHARS} chars")
    arm: str | None = Field(None, description=f"the A/B arm that produced the list, 1..{MAX_ID_CHARS} chars")
    scenario: str | None = Field(None, description=f"the surface it was shown on, 1..{MAX_SCENARIO_CHARS} chars")
    ts: int | None = Field(None, description="when it was shown, epoch ms (default: now)")


class ImpressionSent(BaseModel):
    """An impression accepted: the record now on the events topic (keyed by the user), which the stream applies."""

    user_id: str
    type: str = Field(IMPRESSION, description=f"always `{IMPRESSION}`")
    items: list[str]
    ts: int = Field(description="event time (epoch ms) of the impression record")
    model_version: str | None = None
    arm: str | None = None
    scenario: str | None = None


# --- plumbing --------------------------------------------------------------------------------



class _IdConvertor(Convertor[str]):
    """A path id: any characters, ``/`` and newlines included, handed whole to the id rule.

    Starlette's ``path`` stops at a newline and drops a trailing one (``/v1/items/i1%0A`` would read item ``i1``).
    """

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("id", _IdConvertor())


def _valid_id(value: str) -> str:
    """A path id checked by the event contract's id rule: the API refuses exactly the ids the stream refuses."""
    problem = id_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_id", "{problem}", {"problem": problem})
    return value


# The length bounds are documented in the OpenAPI schema; _valid_id enforces them with the rest of the rule.
_ID_SCHEMA = {"minLength": 1, "maxLength": MAX_ID_CHARS}
UserId = Annotated[
    str, Path(description=f"user id: {ID_RULE}", json_schema_extra=_ID_SCHEMA), AfterValidator(_valid_id)
]
ItemId = Annotated[
    str, Path(description=f"item id: {ID_RULE}", json_schema_extra=_ID_SCHEMA), AfterValidator(_valid_id)
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": Error, "description": "a parameter is invalid; the detail names it"},
    503: {"model": Unavailable, "description": "Redis is unreachable; retry later"},
}


def _redis(request: Request) -> Any:  # noqa: ANN401
    return request.app.state.redis


# A `user_id -> forget record` callable that puts a forget record on the events topic (streamrec serve wires
# the jobs' producer; serving does not import jobs).
ForgetSender = Callable[[str], Mapping[str, Any]]
# A `validated impression -> the record sent` callable that puts it on the events topic once Kafka acknowledged it
# (wired like the forget sender, on the same producer).
ImpressionSender = Callable[[Event], Mapping[str, Any]]
_bearer = HTTPBearer(auto_error=False, description="`api.token`, for endpoints that write or delete")


def _write_refusal(token: bytes | None, credentials: HTTPAuthorizationCredentials | None) -> HTTPException | None:
    """Why a request that writes or deletes may not (403: writes disabled, 401: not the token), or None."""
    if token is None:
        return HTTPException(403, "writes are disabled: set api.token")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token):
        return HTTPException(
            401, "this endpoint needs the header `Authorization: Bearer <api.token>`", {"WWW-Authenticate": "Bearer"}
        )
    return None


def _writer(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Let a request that writes or deletes through only with the configured token (secure by default)."""
    refusal = _write_refusal(request.app.state.token, credentials)
    if refusal is not None:
        raise refusal


def redis_credentials(settings: Settings) -> tuple[str | None, str | None]:
    """The API's Redis identity: ``api.redis_username/password`` when either is set, else ``redis.*``."""
    a, r = settings.api, settings.redis
    if a.redis_username or a.redis_password:
        return a.redis_username, secret_value(a.redis_password)
    return r.username, secret_value(r.password)


# A redis.Redis; Any because redis-py's annotations union every sync result with its async Awaitable.
Store = Annotated[Any, Depends(_redis)]


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _validation_message(errors: Sequence[Any]) -> str:
    """FastAPI's error list as one sentence: ``k: Input should be ...; user_id: ...``."""
    parts = []
    for err in errors:
        name = str(err["loc"][-1]) if err.get("loc") else "request"
        parts.append(f"{name}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # A write endpoint says nothing about its input before the token is checked: FastAPI decodes a JSON body
    # before it runs the endpoint's dependencies, so an undecodable one would otherwise answer 422 to anyone.
    route = request.scope.get("route")
    if any(d.dependency is _writer for d in getattr(route, "dependencies", ())):
        refusal = _write_refusal(request.app.state.token, await _bearer(request))
        if refusal is not None:
            return JSONResponse({"detail": refusal.detail}, refusal.status_code, headers=refusal.headers)
    return JSONResponse(status_code=422, content={"detail": _validation_message(exc.errors())})


async def _on_redis_down(_: Request, exc: Exception) -> JSONResponse:
    # redis-py reports the host:port in its message; the URL (which may hold a password) stays out.
    detail = f"Redis is unreachable ({exc}); the API answers again as soon as Redis is back"
    return JSONResponse(status_code=503, content=Unavailable(detail=detail).model_dump())


# --- the app ---------------------------------------------------------------------------------


# Sync handlers: FastAPI runs them in its thread pool, so a slow Redis never blocks the loop. They read
# Redis, the token and the forget sender from the app's state, which create_app sets.
router = APIRouter()


@router.get(
    "/v1/users/{user_id:id}/recommendations",
    response_model=Recommendations,
    responses=_ERRORS,
    summary="A user's recommendations",
    tags=["recommendations"],
)
def recommendations(
    user_id: UserId,
    store: Store,
    request: Request,
    k: Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items, 1..{MAX_K}")] = 10,
) -> Recommendations:
    """The user's top-k (`rec:{user_id}`), or the `popular` list for a user without one.

    When neither exists the answer is still 200: no items, source `popular`, and null
    `model_version` and `computed_at`, so a front-end renders an empty shelf, not an error.
    Titles come from `item:{item_id}` in one pipelined round trip.
    """
    # Both lists in one round trip: the fallback is small and an unknown user costs no extra trip.
    personal, popular = store.pipeline(transaction=False).get(key("rec", user_id)).get(POPULAR).execute()
    payload = decode_recommendations(personal)
    source: Literal["personal", "popular"] = "personal"
    if payload is None:
        payload, source = decode_recommendations(popular), "popular"
    if payload is None:
        return Recommendations(
            user_id=user_id, items=[], source=source, model_version=None, computed_at=None
        )
    # Every entry's display fields and attributes in one round trip: the exclude rules apply on read as well, so
    # an item marked unavailable leaves the answer before the job rewrites the list.
    entries = payload.get("items", [])
    pipe = store.pipeline(transaction=False)
    for entry in entries:
        pipe.hmget(key("item", str(entry["item_id"])), ["title", "categories", "attributes"])
    fields = pipe.execute() if entries else []
    rule_sets = [r for r in _list_rules(request.app.state.policy.get(), payload) if r.exclude]
    shown = []
    for e, (title, cats, attrs) in zip(entries, fields, strict=True):
        if rule_sets:
            facts = item_facts({"categories": _text(cats) or "[]", "attributes": _text(attrs) or "{}"})
            if any(excluded(r, str(e["item_id"]), facts) for r in rule_sets):
                continue
        shown.append((e, _text(title)))
        if len(shown) == k:
            break
    because = sorted({str(e["reason"]["item_id"]) for e, _ in shown if (e.get("reason") or {}).get("item_id")})
    pipe = store.pipeline(transaction=False)
    for item_id in because:
        pipe.hmget(key("item", item_id), ["title"])
    because_titles = {i: _text(t[0]) for i, t in zip(because, pipe.execute() if because else [], strict=True)}
    return Recommendations(
        user_id=user_id,
        items=[
            RecommendedItem(
                item_id=str(e["item_id"]), title=title, score=None if e.get("score") is None else float(e["score"]),
                reason=_reason(e.get("reason"), because_titles), team=e.get("team"),
                because=(e.get("reason") or {}).get("item_id"),
            )
            for e, title in shown
        ],
        source=source,
        model_version=payload.get("model_version"),
        computed_at=payload.get("computed_at"),
        arm=payload.get("arm"),
        teams=payload.get("teams"),
    )


def _list_rules(policy: Policy, payload: Mapping[str, Any]) -> list[RulesConfig]:
    """The rules a list was made with: its scenario's, or its experiment arm's (both teams' when interleaved)."""
    scenario = payload.get("scenario") or DEFAULT_SCENARIO
    where = split_label(payload.get("arm"))
    experiment = next((e for e in policy.experiments if where and e.name == where[0]), None)
    if where is None or experiment is None:
        return [policy.rules(scenario)]
    arms = payload.get("teams") if where[1] == INTERLEAVED else [where[1]]
    named = [experiment.arms[a].rules for a in arms or () if a in experiment.arms]
    return [policy.rules(scenario, name) for name in named] or [policy.rules(scenario)]


def _reason(reason: Mapping[str, Any] | None, titles: Mapping[str, str | None]) -> str | None:
    """A ``rec:{user}`` item's reason in words (docs/policy.md)."""
    if not reason:
        return None
    kind = reason.get("kind")
    if kind == "history":
        item = str(reason.get("item_id"))
        return f"because you watched {titles.get(item) or item}"
    if kind == "rule":
        return f"promoted: {reason.get('rule')}"
    if kind == "new":
        return "new"
    if kind == "pin":
        return "featured"
    return None


@router.get(
    "/v1/users/{user_id:id}",
    response_model=UserView,
    responses={404: {"model": Error, "description": "no such user"}, **_ERRORS},
    summary="What the stream knows of a user",
    tags=["users"],
)
def user(user_id: UserId, store: Store) -> UserView:
    """The user's state view (`user:{user_id}`): event count, last event time, recent items."""
    view = decode_user(store.hgetall(key("user", user_id)))
    if view is None:
        raise HTTPException(404, f"user {user_id!r} is unknown: none of their events reached the stream")
    return UserView(user_id=user_id, **view)


@router.delete(
    "/v1/users/{user_id:id}",
    status_code=202,
    response_model=ForgetScheduled,
    responses={
        401: {"model": Error, "description": "no `Authorization: Bearer <api.token>`, or another token"},
        403: {"model": Error, "description": "writes are disabled: no api.token is set"},
        **_ERRORS,
        503: {"model": Unavailable, "description": "Kafka did not take the forget record; retry later"},
    },
    summary="Forget a user (right to be forgotten)",
    tags=["users"],
    dependencies=[Depends(_writer)],
)
def forget_user(user_id: UserId, request: Request) -> ForgetScheduled | JSONResponse:
    """Schedule the deletion of everything streamrec keeps of the user. Needs the API token.

    A `forget` record goes to the events topic, keyed by the user id so that it follows the user's earlier
    events. The job then clears the user's state and deletes `rec:{user_id}` and `user:{user_id}` (a later
    event of the user starts afresh), and training drops every event of the user up to the record.
    """
    forget: ForgetSender | None = request.app.state.forget
    if forget is None:
        return JSONResponse(
            status_code=503,
            content=Unavailable(detail="this API has no Kafka producer for forget records").model_dump(),
        )
    try:
        record = forget(user_id)
    except Exception as exc:  # noqa: BLE001 - whatever the producer raises (Kafka away, timeout): a clear 503
        detail = f"could not put the forget record on the events topic ({type(exc).__name__}: {exc}); retry"
        return JSONResponse(status_code=503, content=Unavailable(detail=detail).model_dump())
    return ForgetScheduled(user_id=user_id, ts=int(record["ts"]))


@router.post(
    "/v1/impressions",
    status_code=202,
    response_model=ImpressionSent,
    response_model_exclude_none=True,
    responses={
        401: {"model": Error, "description": "no `Authorization: Bearer <api.token>`, or another token"},
        403: {"model": Error, "description": "writes are disabled: no api.token is set"},
        422: {"model": Error, "description": "the body breaks the impression contract; the detail says how"},
        503: {"model": Unavailable, "description": "Kafka did not take the impression record; retry later"},
    },
    summary="Report a list shown to a user",
    tags=["users"],
    dependencies=[Depends(_writer)],
)
def report_impression(body: ImpressionBody, request: Request) -> dict[str, Any] | JSONResponse:
    """Put an `impression` record on the events topic: the items a front-end showed the user. Needs the API token.

    The record is checked by the event contract the stream applies (the id rule for `user_id` and every item,
    1..100 items), so a record this endpoint accepts is never dead-lettered. Keyed by the user id, it follows the
    user's earlier events. The job counts each item as shown to the user without an action until the user acts
    on it. Answers the record sent.
    """
    try:
        record = make_impression(
            body.user_id, body.items, int(time.time() * 1000) if body.ts is None else body.ts,
            model_version=body.model_version, arm=body.arm, scenario=body.scenario,
        )
    except InvalidRecordError as exc:
        return JSONResponse(status_code=422, content=Error(detail=exc.reason).model_dump())
    send: ImpressionSender | None = request.app.state.impressions
    if send is None:
        return JSONResponse(
            status_code=503,
            content=Unavailable(detail="this API has no Kafka producer for impression records").model_dump(),
        )
    try:
        sent = send(record)
    except Exception as exc:  # noqa: BLE001 - whatever the producer raises (Kafka away, timeout): a clear 503
        detail = f"could not put the impression record on the events topic ({type(exc).__name__}: {exc}); retry"
        return JSONResponse(status_code=503, content=Unavailable(detail=detail).model_dump())
    return dict(sent)


@router.get(
    "/v1/items/{item_id:id}",
    response_model=Item,
    responses={404: {"model": Error, "description": "no such item"}, **_ERRORS},
    summary="An item's display fields",
    tags=["items"],
)
def item(item_id: ItemId, store: Store) -> Item:
    """The item's display fields (`item:{item_id}`): title, categories, text and any others."""
    fields = decode_item(store.hgetall(key("item", item_id)))
    if fields is None:
        raise HTTPException(404, f"item {item_id!r} is not in the catalog")
    return Item(**{**fields, "item_id": item_id})


@router.get(
    "/v1/metrics/online",
    response_model=OnlineMetrics,
    responses={503: _ERRORS[503]},
    summary="Online hit rate per model version and scenario",
    tags=["metrics"],
)
def online_metrics(store: Store) -> OnlineMetrics:
    """How often users acted on an item we were recommending them, per model version and scenario."""
    return OnlineMetrics(model_version=_text(store.get(MODEL_CURRENT)), versions=read_online_metrics(store))


@router.get(
    "/v1/experiments",
    response_model=Experiments,
    responses={503: _ERRORS[503]},
    summary="A/B experiments: per-arm hit rate and click-through with 95% intervals and a significance test",
    tags=["metrics"],
)
def experiments(store: Store, request: Request) -> Experiments:
    """Per experiment and arm (`metrics:experiments`, counted by the stream): lists, impressions, actions, hits.

    `hit_rate@10` is hits over actions of users holding the arm's list, `ctr` hits over items shown (the
    front-ends' impressions), each `{"value", "ci95" (Wilson), "n"}`; `vs_control` is a two-proportion z-test
    against the experiment's first arm. An interleaved experiment has per-team `credit` and `wins` and a sign
    test (`sign_test_p`). Experiments no longer configured are reported from their counters alone.
    """
    configured = request.app.state.policy.get().experiments
    return Experiments(experiments=experiment_report(read_experiment_counts(store), configured))


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: _ERRORS[503]},
    summary="Liveness of the API and Redis",
    tags=["health"],
)
def healthz(store: Store) -> Health:
    """200 when Redis answers, with the model version in service; 503 when it does not."""
    _, current = store.pipeline(transaction=False).ping().get(MODEL_CURRENT).execute()
    return Health(model_version=_text(current))


def create_app(
    settings: Settings,
    redis_client: redis.Redis | None = None,
    forget: ForgetSender | None = None,
    impressions: ImpressionSender | None = None,
) -> FastAPI:
    """The API on ``redis_client``, or on a client for ``settings.redis`` (closed at shutdown).

    ``forget`` sends forget records (``DELETE /v1/users/{id}``), ``impressions`` impression records
    (``POST /v1/impressions``); without its sender an endpoint answers 503.
    """
    owned = redis_client is None
    if redis_client is None:
        redis_client = connect(settings.redis.url, *redis_credentials(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        if owned:
            app.state.redis.close()

    app = FastAPI(
        title="streamrec API",
        version="1",
        description="Real-time recommendations for front-ends, read from the online store (Redis) "
        "that the streaming job keeps up to date.",
        lifespan=lifespan,
    )
    app.state.redis = redis_client
    token = secret_value(settings.api.token)
    app.state.token = token.encode() if token else None
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    # ConnectionError covers refused, reset and auth failures; TimeoutError a Redis that hangs.
    app.add_exception_handler(redis.ConnectionError, _on_redis_down)
    app.add_exception_handler(redis.TimeoutError, _on_redis_down)
    app.state.forget = forget
    app.state.policy = policy_source(settings)
    app.state.impressions = impressions
    app.include_router(router)
    return app


def serve(
    settings: Settings,
    port: int | None = None,
    forget: ForgetSender | None = None,
    impressions: ImpressionSender | None = None,
) -> None:
    """Serve the API with uvicorn on ``api.host`` and ``port`` (default ``api.port``) until interrupted."""
    import uvicorn

    app = create_app(settings, forget=forget, impressions=impressions)
    uvicorn.run(app, host=settings.api.host, port=port or settings.api.port)
