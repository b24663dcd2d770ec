"""Every Redis key streamrec writes or reads, and its encoding: the one place jobs and serving agree on.

| key | type | value |
| --- | --- | --- |
| ``rec:{user_id}`` | string | JSON ``{"items": [{"item_id", "score"}...], "model_version", "computed_at"}`` |
| ``user:{user_id}`` | hash | ``events`` (events applied), ``last_ts``, ``recent``, ``interests`` (JSON) |
| ``item:{item_id}`` | hash | ``title`` and the other display fields (``categories`` as a JSON list) |
| ``catalog`` | set | every item id of the live catalog (what the writer recommends from, read back after a restart) |
| ``popular`` | string | same JSON as ``rec:{user}``: the fallback for users with no personal list |
| ``model:current`` | string | the model version in service |
| ``model:history`` | list | JSON ``{"version", "replaced_at"}`` of the versions served before, newest first |
| ``metrics:online`` | hash | field JSON ``[model_version, scenario, counter]`` -> count (``actions``, ``hits@10``...) |

:func:`wait_for_events` is how a replay (the demos, the benchmarks) waits for the job: ``user:{id}.events``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamrec.config import CUTOFF

KeyKind = Literal["rec", "user", "item"]
POPULAR = "popular"
MODEL_CURRENT = "model:current"
MODEL_HISTORY = "model:history"
ONLINE_METRICS = "metrics:online"
CATALOG = "catalog"
# Decimals of the interests user:{id} shows (the JVM job writes the same hash: jobs/jvm RedisCommands).
INTEREST_DECIMALS = 4
# How long a replay's events may take to be applied by the job (the demos wait this long to catch up).
CATCH_UP_TIMEOUT_S = 600.0


def key(kind: KeyKind, ident: str) -> str:
    """The Redis key of a user's recommendations, a user's state view, or an item's display fields."""
    return f"{kind}:{ident}"


# Least privilege (Redis 7 ACL rules, for the users `streamrec up` creates): every key above, and for each of
# streamrec's two identities only the commands it sends (connecting sends SELECT; redis-py's CLIENT SETINFO,
# which Redis 7.0 lacks, may be refused: the client ignores that).
_KEY_PATTERNS = (key("rec", "*"), key("user", "*"), key("item", "*"), CATALOG, POPULAR, "model:*", "metrics:*")
_CONNECT = "+ping +select"
# The stream's writers (redis.username): the job's writer and catalog stage, and the trainer's and CLI's
# announcements (model:current/history, popular); HGETALL: after a restart the writer reads the texts of
# catalog items a text model does not know from item:{id}, and the catalog's ids (SMEMBERS catalog). No KEYS/SCAN,
# FLUSH*, CONFIG, or key outside the layout.
JOB_ACL_RULES = (
    f"resetchannels -@all {_CONNECT} +get +set +del +hset +hgetall +hincrby +lpush +sadd +smembers +multi +exec "
    "+discard "
    + " ".join(f"~{p}" for p in _KEY_PATTERNS)
)
# Front-ends and the HTTP API (api.redis_username): the reads of the API, and read-only key access besides.
API_ACL_RULES = f"resetchannels -@all {_CONNECT} +get +hmget +hgetall " + " ".join(
    f"%R~{p}" for p in _KEY_PATTERNS
)


@dataclass(frozen=True, slots=True)
class UserView:
    """What ``user:{id}`` shows of a user's interest state."""

    user_id: str
    events: int
    last_ts: int
    recent: Sequence[str]
    # The strongest time-decayed interests ("category:Drama", "scenario:web"), valid at last_ts.
    interests: Mapping[str, float] = field(default_factory=dict)

    def to_hash(self) -> dict[str, str]:
        return {
            "events": str(self.events),
            "last_ts": str(self.last_ts),
            "recent": json.dumps(list(self.recent)),
            "interests": json.dumps({k: round(v, INTEREST_DECIMALS) for k, v in self.interests.items()}),
        }


def encode_recommendations(items: Iterable[tuple[str, float]], model_version: str, computed_at: int) -> str:
    """The JSON string stored at ``rec:{user}`` (and ``popular``)."""
    return json.dumps(
        {
            "items": [{"item_id": i, "score": round(float(s), 6)} for i, s in items],
            "model_version": model_version,
            "computed_at": computed_at,
        },
        separators=(",", ":"),
    )


def encode_list(
    entries: Sequence[Mapping[str, Any]],
    model_version: str,
    computed_at: int,
    arm: str | None = None,
    teams: Sequence[str] | None = None,
    scenario: str | None = None,
) -> str:
    """``rec:{user}`` as the policy stage writes it: :func:`encode_recommendations`'s layout, and more.

    Per item its ``reason`` (and, interleaved, its ``team``); the list's ``arm`` (``"<experiment>:<arm>"``) and
    ``teams`` when it is part of an experiment; the ``scenario`` whose rules made it (the API applies that
    scenario's ``exclude`` again on read). A pinned item the model did not score has a ``null`` score.
    """
    items = []
    for e in entries:
        item: dict[str, Any] = {"item_id": e["item_id"],
                                "score": None if e.get("score") is None else round(float(e["score"]), 6)}
        for name in ("reason", "team"):
            if e.get(name) is not None:
                item[name] = e[name]
        items.append(item)
    payload: dict[str, Any] = {"items": items, "model_version": model_version, "computed_at": computed_at}
    if arm is not None:
        payload["arm"] = arm
    if teams is not None:
        payload["teams"] = list(teams)
    if scenario is not None:
        payload["scenario"] = scenario
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def decode_recommendations(raw: str | bytes | None) -> dict[str, Any] | None:
    """Inverse of :func:`encode_recommendations`; None when the key is absent."""
    return None if raw is None else json.loads(raw)


def decode_user(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any] | None:
    """``HGETALL user:{id}`` back to ``{"events", "last_ts", "recent", "interests", "impressions"?}``; None: absent."""
    if not raw:
        return None
    d = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
    out = {
        "events": int(d["events"]),
        "last_ts": int(d["last_ts"]),
        "recent": json.loads(d["recent"]),
        "interests": json.loads(d.get("interests", "{}")),
    }
    if "impressions" in d:  # lists a front-end reported shown (the job writes it once there is one)
        out["impressions"] = int(d["impressions"])
    return out


def item_hash(item: dict[str, Any]) -> dict[str, str]:
    """Display fields of a catalog item as the ``item:{id}`` hash."""
    out = {"title": str(item.get("title", ""))}
    if item.get("categories") is not None:
        out["categories"] = json.dumps(list(item["categories"]))
    if item.get("text"):
        out["text"] = str(item["text"])
    if item.get("attributes"):  # what the business rules filter on (serving.policy), in the job and on read
        out["attributes"] = json.dumps(item["attributes"], ensure_ascii=False)
    if item.get("ts"):
        out["ts"] = str(int(item["ts"]))
    return out


def decode_item(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any] | None:
    """``HGETALL item:{id}`` back to its display fields (``categories`` as a list); None when absent."""
    if not raw:
        return None

    def text(b: bytes | str) -> str:
        return b.decode() if isinstance(b, bytes) else b

    d = {text(k): text(v) for k, v in raw.items()}
    out: dict[str, Any] = dict(d)
    if "categories" in d:
        try:
            out["categories"] = json.loads(d["categories"])
        except ValueError:  # a writer outside item_hash() stored plain text: show it as one category
            out["categories"] = [d["categories"]]
    if "attributes" in d:
        try:
            out["attributes"] = json.loads(d["attributes"])
        except ValueError:
            out["attributes"] = {}
    if "ts" in d:
        out["ts"] = int(d["ts"]) if d["ts"].isdigit() else 0
    return out


def connect(url: str, username: str | None = None, password: str | None = None, timeout_s: float = 5.0):  # noqa: ANN201
    """A ``redis.Redis`` client for the configured store (decoded responses off: bytes in, bytes out)."""
    import redis

    return redis.Redis.from_url(
        url, username=username, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def wait_for_events(
    client: Any,
    want: Mapping[str, int],
    timeout_s: float = CATCH_UP_TIMEOUT_S,
    every_s: float = 0.5,
    on_poll: Callable[[int], None] | None = None,
) -> float:
    """Poll ``user:{id}`` until each user's ``events`` reaches the count expected; returns the seconds it took.

    Args:
        client: A ``redis.Redis``.
        want: User id -> events the job is to have applied to the user's state.
        timeout_s: The longest wait.
        every_s: Seconds between polls (one pipelined round trip each).
        on_poll: Called after every poll with the events applied so far (per user at most the count expected).

    Raises:
        TimeoutError: not every event was applied within ``timeout_s``.
    """
    users = list(want)
    total = sum(want[u] for u in users)
    start = time.monotonic()
    while True:
        pipe = client.pipeline(transaction=False)
        for u in users:
            pipe.hget(key("user", u), "events")
        done = sum(min(int(n or 0), want[u]) for u, n in zip(users, pipe.execute(), strict=True))
        if on_poll is not None:
            on_poll(done)
        if done >= total:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout_s:
            msg = f"after {timeout_s:.0f}s, {done} of {total} events of {len(users)} users are applied (user:{{id}})"
            raise TimeoutError(msg)
        time.sleep(every_s)


def announce_model(client: Any, version: str, now_ms: int | None = None) -> None:
    """Set ``model:current`` and push the previous one onto ``model:history`` (newest first)."""
    previous = client.get(MODEL_CURRENT)
    pipe = client.pipeline(transaction=True)
    if previous is not None and previous.decode() != version:
        entry = {"version": previous.decode(), "replaced_at": now_ms or int(time.time() * 1000)}
        pipe.lpush(MODEL_HISTORY, json.dumps(entry))
    pipe.set(MODEL_CURRENT, version)
    pipe.execute()


def write_popular(client: Any, items: Sequence[tuple[str, float]], model_version: str, computed_at: int) -> None:
    """The fallback list for users with no personal recommendations."""
    client.set(POPULAR, encode_recommendations(items, model_version, computed_at))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff of Redis round trips: sleep ``initial_s``, doubling up to ``max_s``.

    Retries stop once ``give_up_s`` would be exceeded since the first failure: the caller then gets
    :class:`RedisUnavailableError` (the job's task fails and Flink restarts it from the last checkpoint).
    """

    initial_s: float = 0.2
    max_s: float = 5.0
    give_up_s: float = 60.0


class RedisUnavailableError(Exception):
    """Redis stayed unreachable through every retry."""

    def __init__(self, attempts: int, seconds: float, cause: Exception) -> None:
        super().__init__(
            f"Redis write failed {attempts} times over {seconds:.1f}s ({cause}); the job restarts from its last "
            f"checkpoint and retries: check that Redis at the configured redis.url is up"
        )


RedisOp = tuple[str, tuple[Any, ...], dict[str, Any]]


def execute_with_retry(
    client: Any, ops: list[RedisOp], policy: RetryPolicy | None = None, on_retry: Callable[[float], None] | None = None
) -> list[Any]:
    """Run ops in one pipelined round trip; bounded retries with backoff (the pipeline is rebuilt per attempt).

    Args:
        client: a ``redis.Redis``.
        ops: ``(method, args, kwargs)`` of pipeline calls.
        policy: the backoff (default :class:`RetryPolicy()`).
        on_retry: called before each retry with the seconds lost since the previous attempt began (failed
            attempt + backoff sleep): the job counts retries and outage time with it.

    Returns:
        The replies, one per op.
    """
    def attempt() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for method, args, kwargs in ops:
            getattr(pipe, method)(*args, **kwargs)
        return list(pipe.execute())

    return _with_retry(attempt, policy, on_retry)


def execute_packed_with_retry(
    client: Any, packed: bytes, replies: int, policy: RetryPolicy | None = None,
    on_retry: Callable[[float], None] | None = None,
) -> list[Any]:
    """Send commands already packed as RESP (the JVM job's state writes) in one round trip; their replies.

    Retried like :func:`execute_with_retry`: the commands are overwrites, so a retry resends them all.
    """

    def attempt() -> list[Any]:
        pool = client.connection_pool
        conn = pool.get_connection("PIPELINE")
        try:
            conn.send_packed_command([packed])  # a list of buffers (iterating bytes would give ints)
            return [conn.read_response() for _ in range(replies)]
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection is not reusable
            raise
        finally:
            pool.release(conn)

    return _with_retry(attempt, policy, on_retry)


def _with_retry(
    send: Callable[[], list[Any]], policy: RetryPolicy | None, on_retry: Callable[[float], None] | None
) -> list[Any]:
    import redis

    policy = policy or RetryPolicy()
    delay = policy.initial_s
    first_failure: float | None = None
    attempt_began = time.monotonic()
    for attempt in itertools.count(1):
        try:
            return send()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            if now - first_failure + delay > policy.give_up_s:
                raise RedisUnavailableError(attempt, now - first_failure, exc) from exc
            time.sleep(delay)
            delay = min(delay * 2, policy.max_s)
            now = time.monotonic()
            if on_retry is not None:
                on_retry(now - attempt_began)
            attempt_began = now
    raise AssertionError("unreachable")


def online_hits(
    actions: Mapping[str, Sequence[tuple[str, str]]], shown: Mapping[str, dict[str, Any] | None]
) -> dict[tuple[str, str, str], int]:
    """Count how many of each user's actions were in the recommendations the user had when acting.

    Args:
        actions: user id -> ``(item_id, scenario)`` of the actions since the recommendations were written.
        shown: user id -> decoded ``rec:{user}`` at that time (None: the user had none; not counted).

    Returns:
        ``(model_version, scenario, counter) -> n`` with counters ``actions``, ``hits@10`` (the
        :data:`~streamrec.config.CUTOFF` of every hit rate we report) and ``hits@K`` (K: the length of the
        list shown).
    """
    counts: dict[tuple[str, str, str], int] = {}
    for user, acts in actions.items():
        rec = shown.get(user)
        if not rec or not rec.get("items"):
            continue
        version = rec.get("model_version") or "unknown"
        ranked = [r["item_id"] for r in rec["items"]]
        top, full = set(ranked[:CUTOFF]), set(ranked)
        for item, scenario in acts:
            for counter, hit in (
                ("actions", True),
                (f"hits@{CUTOFF}", item in top),
                (f"hits@{len(ranked)}", item in full),
            ):
                if hit:
                    counts[(version, scenario, counter)] = counts.get((version, scenario, counter), 0) + 1
    return counts


def online_metric_ops(counts: Mapping[tuple[str, str, str], int]) -> list[RedisOp]:
    """HINCRBY ops adding :func:`online_hits` counts to ``metrics:online``."""
    return [("hincrby", (ONLINE_METRICS, json.dumps(list(field)), n), {}) for field, n in sorted(counts.items())]


def read_online_metrics(client: Any) -> dict[str, dict[str, dict[str, float]]]:
    """``metrics:online`` as ``{model_version: {scenario: {"actions", "hits@10", "hit_rate@10", ...}}}``.

    Each scenario also appears summed under ``"all"``.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for raw_field, raw_n in (client.hgetall(ONLINE_METRICS) or {}).items():
        try:
            version, scenario, counter = json.loads(raw_field)
        except (ValueError, TypeError):
            continue  # not written by online_metric_ops
        for scope in (scenario, "all"):
            row = out.setdefault(version, {}).setdefault(scope, {})
            row[counter] = row.get(counter, 0) + int(raw_n)
    for scenarios in out.values():
        for row in scenarios.values():
            actions = row.get("actions", 0)
            for counter in [c for c in row if c.startswith("hits@")]:
                row["hit_rate@" + counter.split("@", 1)[1]] = round(row[counter] / actions, 6) if actions else 0.0
    return out
