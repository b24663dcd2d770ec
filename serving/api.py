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

Reads are open. Endpoints that write or delete (``DELETE /v1/users/{id}``) need ``Authorization: Bearer
<api.token>`` (401 without it or with another token), and answer 403 while no ``api.token`` is set. The API
reads Redis as ``api.redis_username`` (a read-only ACL user) when set, else as ``redis.username``; a
deletion therefore goes through the stream: a ``forget`` record on the events topic, which the job applies.
"""

from __future__ import annotations

import hmac
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
from streamrec.config import CUTOFF, Settings, secret_value
from streamrec.events import ID_RULE, MAX_ID_CHARS, id_problem

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
    score: float


class Recommendations(BaseModel):
    """A user's top-k."""

    user_id: str
    items: list[RecommendedItem]
    source: Literal["personal", "popular"] = Field(
        description="`personal`: the user's own `rec:{user_id}`; `popular`: the fallback for unknown users"
    )
    model_version: str | None = Field(description="the model that computed the list; null when there is none")
    computed_at: int | None = Field(description="epoch ms the list was computed; null when there is none")


class UserView(BaseModel):
    """What the stream knows of a user (`user:{user_id}`)."""

    user_id: str
    events: int = Field(description="events applied to the user's state")
    last_ts: int = Field(description="event time (epoch ms) of the last one")
    recent: list[str] = Field(description="recent item ids, newest last")
    interests: dict[str, float] = Field(
        default_factory=dict, description="strongest time-decayed interests, e.g. category:Drama, scenario:web"
    )


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
_bearer = HTTPBearer(auto_error=False, description="`api.token`, for endpoints that write or delete")


def _writer(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Let a request that writes or deletes through only with the configured token (secure by default)."""
    token: bytes | None = request.app.state.token
    if token is None:
        raise HTTPException(403, "writes are disabled: set api.token")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token):
        raise HTTPException(
            401, "this endpoint needs the header `Authorization: Bearer <api.token>`", {"WWW-Authenticate": "Bearer"}
        )


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


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
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
    top = payload.get("items", [])[:k]
    pipe = store.pipeline(transaction=False)
    for entry in top:
        pipe.hmget(key("item", str(entry["item_id"])), ["title"])
    titles = pipe.execute() if top else []
    return Recommendations(
        user_id=user_id,
        items=[
            RecommendedItem(item_id=str(e["item_id"]), title=_text(t[0]), score=float(e["score"]))
            for e, t in zip(top, titles, strict=True)
        ],
        source=source,
        model_version=payload.get("model_version"),
        computed_at=payload.get("computed_at"),
    )


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
    settings: Settings, redis_client: redis.Redis | None = None, forget: ForgetSender | None = None
) -> FastAPI:
    """The API on ``redis_client``, or on a client for ``settings.redis`` (closed at shutdown).

    ``forget`` sends forget records (``DELETE /v1/users/{id}``); without it that endpoint answers 503.
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
    app.include_router(router)
    return app


def serve(settings: Settings, port: int | None = None, forget: ForgetSender | None = None) -> None:
    """Serve the API with uvicorn on ``api.host`` and ``port`` (default ``api.port``) until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings, forget=forget), host=settings.api.host, port=port or settings.api.port)
