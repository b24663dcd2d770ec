"""The Python stage of the interest job: once per batch of users (never per event), write Redis and score.

The JVM stages (:mod:`jobs.interest`) apply every event to the user's state and hand this stage one record per
writer shard and flush: ``{"shard", "final", "records": [...]}``, each user's record as ``UserInterest.encode``
writes it (``u`` id, ``n`` events, ``r`` recent ``[ts, item, scenario]`` and ``s`` seen items, both JSON inside a
string, decoded only for the users scored; ``a`` actions since the last flush, ``f`` forgotten), then the batch's
Redis commands. Per batch it:

1. deletes the keys of users who were forgotten (before anything newer of theirs is written: in the same buffer);
2. writes every user's ``user:{id}`` (the state path: always as fresh as the batch) with the commands the JVM
   packed, one buffer for the batch;
3. counts the online hit rate: each action against the ``rec:{id}`` the user had while acting (what this writer
   last wrote, remembered; read back from Redis after a restart);
4. scores the users whose state changed, coalesced (once per user, however many events), oldest first, for
   at most ``job.score_share`` of a flush interval per flush (summed over the shards): a scorer slower than the
   stream makes ``rec:{id}`` lag instead of holding the state path (and Kafka) back. The lag is bounded: the
   backlog holds each user once, so a user waits at most (users in the backlog) / (users scored per second).
   Users scored after waiting longer than ``job.max_rec_staleness_ms`` are counted (metric ``recs_late``): the
   sign that the scorer, not the stream, needs more capacity;
5. returns the audit, one record per Redis round trip (see :func:`audit_rows`): the batch's state writes,
   then each chunk of users scored.

The backlog of users waiting to be scored lives in this process: after a restart, those users' ``rec:{id}``
refresh at their next event. Everything else is derived from the JVM state, so a replay converges.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyflink.datastream import BroadcastProcessFunction, RuntimeContext

from jobs.redis_io import StreamRedis
from serving.experiments import (
    INTERLEAVED,
    Assignment,
    action_counts,
    assign,
    experiment_metric_ops,
    impression_counts,
    list_counts,
    team_draft,
)
from serving.model_watcher import ServingModel, load_version
from serving.policy import ItemFacts, Policy, UserContext, item_facts, policy_source
from serving.store import (
    CATALOG,
    RedisOp,
    decode_item,
    decode_recommendations,
    encode_list,
    key,
    online_hits,
    online_metric_ops,
)
from streamrec.events import DEFAULT_SCENARIO, item_text

if TYPE_CHECKING:
    from streamrec.config import RulesConfig, Settings

log = logging.getLogger(__name__)

# Users per scorer call at most; within a budget, as many as the measured scoring rate fits in what is left.
SCORE_CHUNK = 256
MIN_SCORE_CHUNK = 8
# Users whose rec:{id} the writer remembers (for the online hit rate, instead of reading it back per action).
SHOWN_CACHE_USERS = 200_000


@dataclass(frozen=True, slots=True)
class UserList:
    """One user's list as written to ``rec:{id}``: entries ``{"item_id", "score", "reason"?, "team"?}``."""

    items: list[dict[str, Any]]
    version: str
    arm: str | None
    teams: list[str] | None
    scenario: str


def audit_rows(record: bytes) -> list[dict[str, Any]]:
    """One audit record of the recommendations topic -> a row per user written.

    A record is ``{"written_at", "users": [[user_id, events], ...]}`` (state writes: ``user:{id}``) or
    ``{"written_at", "ts", "model_version", "scored": [[user_id, events, items, scores, arm?, version?], ...]}``
    (``rec:{id}``; ``arm`` when the list is part of an experiment, ``version`` when an arm's model scored it).
    Rows: ``{"user_id", "events", "items", "scores", "model_version", "arm", "ts", "written_at", "scored"}``;
    ``ts`` is when the list was computed, ``written_at`` when Redis acknowledged the write (epoch ms).
    """
    a = json.loads(record)
    at = a["written_at"]
    if "users" in a:
        return [{"user_id": u, "events": n, "items": [], "scores": [], "model_version": "", "arm": None, "ts": at,
                 "written_at": at, "scored": False} for u, n in a["users"]]
    rows = []
    for row in a["scored"]:
        u, n, items, scores = row[:4]
        arm = row[4] if len(row) > 4 else None
        version = row[5] if len(row) > 5 and row[5] else a["model_version"]
        rows.append({"user_id": u, "events": n, "items": items, "scores": scores, "model_version": version,
                     "arm": arm, "ts": a["ts"], "written_at": at, "scored": True})
    return rows


def merge_records(users: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per user, the newest; actions and impressions after (and of) the user's last forget only."""
    out: dict[str, dict[str, Any]] = {}
    for rec in users:  # a user's records arrive in the order the JVM flushed them
        prev = out.get(rec["u"])
        if prev is not None and not rec.get("f"):
            rec = {**rec, "a": prev["a"] + rec["a"], "m": prev.get("m", []) + rec.get("m", []),
                   "f": prev.get("f", False)}
        out[rec["u"]] = rec
    return out


class BatchWriter(BroadcastProcessFunction):
    """Per batch: Redis in a few pipelined round trips, the scorer on the users that changed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        j = self.settings.job
        self.redis = StreamRedis(self.settings, runtime_context)
        self.model = ServingModel(
            str(self.settings.path(self.settings.models.registry_dir)), j.model_check_interval_s, j.scorer_threads
        )
        self.catalog: set[str] | None = None  # None: not yet read from Redis (the catalog set)
        # Per scorer in use (the promoted one, experiment arms' versions): the catalog ids that arrived since it
        # last heard of the catalog. A scorer not in it has not been told of the catalog at all.
        self.fresh: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
        self.policy = policy_source(self.settings)
        # item id -> what the business rules read of it (None: not in item:{id} either).
        self.facts: dict[str, ItemFacts | None] = {}
        # Registry versions experiment arms ask for -> their scorer (None: refused; the promoted one serves).
        self.arm_scorers: dict[str, Any] = {}
        # Texts of items that arrived in this process, until a text model has embedded them.
        self.item_texts: dict[str, str] = {}
        # user -> (waiting since, monotonic s; the user's newest record): the users to score.
        self.backlog: dict[str, tuple[float, dict[str, Any]]] = {}
        self.max_staleness_s = j.max_rec_staleness_ms / 1000
        self.budget_s = j.score_share * j.flush_interval_ms / 1000 / j.writer_shards
        # user -> the rec:{id} it has (decoded; None: none), the last SHOWN_CACHE_USERS users written or read.
        self.shown: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self.score_rate = 1000.0  # users scored per second, measured as it goes: sizes the chunks to the budget
        group = runtime_context.get_metrics_group()
        self.users_written = group.counter("users_written")
        self.users_scored = group.counter("users_scored")
        self.score_ms = group.counter("score_ms")
        self.recs_late = group.counter("recs_late")

    def close(self) -> None:
        self.redis.close()

    def _load_catalog(self) -> set[str]:
        """The catalog's ids: read once from Redis (the catalog stage's set), then kept up by the broadcast."""
        if self.catalog is None:
            (ids,) = self.redis.execute([("smembers", (CATALOG,), {})])
            self.catalog = {i.decode() if isinstance(i, bytes) else i for i in ids or ()}
        return self.catalog

    def process_broadcast_element(self, value: bytes, ctx: BroadcastProcessFunction.Context) -> None:
        catalog = self._load_catalog()
        scorer = self.model.get()
        keep_texts = scorer is None or scorer.embeds_text  # a model without a text tower never reads them
        for item in json.loads(value)["items"]:  # one batch of the catalog stage
            if item["item_id"] not in catalog:
                catalog.add(item["item_id"])
                for fresh in self.fresh.values():
                    fresh.add(item["item_id"])
            self.facts[item["item_id"]] = item_facts(item)
            if keep_texts:
                self.item_texts[item["item_id"]] = item["text"]

    def process_element(self, value: bytes, ctx: BroadcastProcessFunction.ReadOnlyContext) -> Iterator[bytes]:
        head, _, commands = bytes(value).partition(b"\n")
        if not self.backlog and not commands and b'"records":[]' in head:
            return  # a tick with nothing to do
        self._load_catalog()
        batch = json.loads(head)
        lines = self.write(batch["records"], commands, final=bool(batch["final"]))
        if lines:
            yield b"\n".join(lines)

    def write(self, users: list[dict[str, Any]], commands: bytes = b"", final: bool = False) -> list[bytes]:
        """Steps 1-5 of the module's docstring for one batch; the audit lines.

        ``commands``: the batch's state writes as the JVM packed them (RESP): per user record a ``DEL`` of its
        keys when it carries a forget, then an ``HSET user:{id}`` when it has events; sent as one buffer.
        """
        latest = merge_records(users)
        forgotten = sorted(u for u, r in latest.items() if r.get("f"))
        # A user with impressions only is rescored too: the repeat rule may have demoted what was shown.
        live = [r for r in latest.values() if r["n"] > 0 or (r.get("m") and not r.get("f"))]
        if commands:
            self.redis.execute_packed(commands, sum(bool(r.get("f")) + (r["n"] > 0) for r in users))
        written_ms = int(time.time() * 1000)
        if live:
            self.users_written.inc(len(live))  # a counter call crosses to the JVM: only when there is news
        for u in forgotten:
            self.shown[u] = None  # its rec: is gone
        actions = {r["u"]: [tuple(a) for a in r["a"]] for r in live if r["a"] and not r.get("f")}
        counted = impression_counts(m for r in live for m in r.get("m", ()))
        ops: list[RedisOp] = []
        if actions:
            shown = self._shown(list(actions))
            ops += online_metric_ops(online_hits(actions, shown))
            counted.update(action_counts(actions, shown))
        ops += experiment_metric_ops(counted)
        if ops:
            self.redis.execute(ops)
        now = time.monotonic()
        for u in forgotten:
            self.backlog.pop(u, None)
        for r in live:  # an entry keeps its place (and waiting time) when the user changes again
            since = self.backlog.get(r["u"], (now, r))[0]
            self.backlog[r["u"]] = (since, r)
        audit = [json.dumps({"written_at": written_ms, "users": [[r["u"], r["n"]] for r in live if r["n"] > 0]},
                            separators=(",", ":")).encode()] if any(r["n"] > 0 for r in live) else []
        return audit + self.score_backlog(final)

    def _shown(self, users: list[str]) -> dict[str, dict[str, Any] | None]:
        """The rec:{id} each user had: what this writer last wrote (cached), else read from Redis."""
        missing = [u for u in users if u not in self.shown]
        if missing:
            replies = self.redis.execute([("get", (key("rec", u),), {}) for u in missing])
            for u, raw in zip(missing, replies, strict=True):
                self._remember(u, decode_recommendations(raw))
        return {u: self.shown[u] for u in users}

    def _remember(self, user: str, rec: dict[str, Any] | None) -> None:
        self.shown[user] = rec
        self.shown.move_to_end(user)
        if len(self.shown) > SHOWN_CACHE_USERS:
            self.shown.popitem(last=False)

    def _ready(self, scorer: Any) -> Any:
        """A scorer told about the catalog: the whole of it the first time, then only what is new."""
        if not self.catalog:
            return scorer
        fresh = self.fresh.get(scorer)
        if fresh is None:  # a new model (or the first): every catalog item counts
            self._embed_new_items(scorer, self.catalog)
            scorer.restrict_to(self.catalog)
            self.fresh[scorer] = set()
        elif fresh:  # only the items that arrived since: O(new), not O(catalog)
            self._embed_new_items(scorer, fresh)
            scorer.allow(fresh)
            fresh.clear()
        return scorer

    def _scorer(self) -> Any:
        """The serving scorer, told about the catalog."""
        scorer = self.model.get()
        return None if scorer is None else self._ready(scorer)

    def _arm_scorer(self, version: str) -> Any:
        """The scorer of a registry version an experiment arm names (None: it cannot load; logged once)."""
        if version not in self.arm_scorers:
            try:
                registry = str(self.settings.path(self.settings.models.registry_dir))
                self.arm_scorers[version] = load_version(registry, version, self.settings.job.scorer_threads)
            except Exception as exc:  # noqa: BLE001 - a wrong arm must not stop the stream: the promoted one serves
                log.error("experiment arm model %s cannot load, the promoted model serves its users: %s", version, exc)
                self.arm_scorers[version] = None
        scorer = self.arm_scorers[version]
        return None if scorer is None else self._ready(scorer)

    def _recommendable(self, scorer: Any) -> Callable[[str], bool]:
        """Whether a pinned item may be shown: the scorer has a row for it and it is in the catalog."""
        catalog = self.catalog
        return lambda item: bool(scorer.knows(item)) and (not catalog or item in catalog)

    def _facts(self, ids: set[str]) -> None:
        """Fill :attr:`facts` for ``ids`` from ``item:{id}`` (after a restart the broadcast has not sent them)."""
        missing = sorted(i for i in ids if i not in self.facts)
        if missing:
            hashes = self.redis.execute([("hgetall", (key("item", i),), {}) for i in missing])
            for item_id, raw in zip(missing, hashes, strict=True):
                self.facts[item_id] = item_facts(decode_item(raw))

    def score_backlog(self, everything: bool) -> list[bytes]:
        """Score the backlog, oldest first, within the module docstring's budget; an audit record per chunk.

        ``everything``: all of it, whatever the budget (the end of a bounded input).
        """
        scorer = self._scorer() if self.backlog else None
        if scorer is None:
            self.backlog.clear()  # no model promoted yet: nothing to score (rec: stays as it is)
            return []
        t0 = time.monotonic()
        out: list[bytes] = []
        scored = 0
        version = self.model.version or scorer.version
        k = self.settings.job.top_k
        late = 0
        while self.backlog:
            now = time.monotonic()
            left = self.budget_s - (now - t0)
            if not everything and left <= 0:
                break
            size = SCORE_CHUNK if everything else int(min(SCORE_CHUNK, max(MIN_SCORE_CHUNK, self.score_rate * left)))
            # The backlog's order is the users' waiting order: a user's entry keeps its place until scored.
            chunk = list(itertools.islice(self.backlog.items(), size))
            late += sum(1 for _, (since, _) in chunk if now - since > self.max_staleness_s)
            recs = [r for _, (_, r) in chunk]
            lists = self._lists(recs, scorer, version, k)
            now_ms = int(time.time() * 1000)
            ops: list[RedisOp] = [
                ("set", (key("rec", r["u"]),
                         encode_list(lst.items, lst.version, now_ms, lst.arm, lst.teams, lst.scenario)), {})
                for r, lst in zip(recs, lists, strict=True) if lst.items
            ]
            written = [(lst.arm, lst.scenario) for lst in lists if lst.items]
            ops += experiment_metric_ops(list_counts(written))
            if ops:
                self.redis.execute(ops)
            written_ms = int(time.time() * 1000)
            took = time.monotonic() - now
            self.score_rate = 0.8 * self.score_rate + 0.2 * len(recs) / max(took, 1e-6)  # users/s, smoothed
            rows = []
            for r, lst in zip(recs, lists, strict=True):
                self.backlog.pop(r["u"], None)
                if lst.items:
                    self._remember(r["u"], {"items": lst.items, "model_version": lst.version, "computed_at": now_ms,
                                            "arm": lst.arm, "teams": lst.teams})
                row: list[Any] = [r["u"], r["n"], [e["item_id"] for e in lst.items],
                                  [None if e["score"] is None else round(float(e["score"]), 6) for e in lst.items]]
                if lst.arm is not None or lst.version != version:
                    row += [lst.arm, lst.version if lst.version != version else None]
                rows.append(row)
            out.append(json.dumps({"written_at": written_ms, "ts": now_ms, "model_version": version, "scored": rows},
                                  separators=(",", ":")).encode())
            scored += len(recs)
        if scored:
            self.users_scored.inc(scored)
            self.score_ms.inc(int((time.monotonic() - t0) * 1000))
        if late:
            self.recs_late.inc(late)
        return out

    def _lists(self, recs: list[dict[str, Any]], scorer: Any, version: str, k: int) -> list[UserList]:
        """Each user's list: the scorer's candidates through the policy stage (:mod:`serving.policy`).

        Users are grouped by the model that scores them (the promoted one, or an experiment arm's version),
        one scorer call per group; an interleaved user has one entry in each team's group.
        """
        policy = self.policy.get()
        recent = [json.loads(r["r"]) for r in recs]  # decoded here, for the users scored only
        seen = [set(json.loads(r["s"])) for r in recs]
        users: list[UserContext] = []
        plans: list[tuple[Assignment | None, list[tuple[str | None, RulesConfig]]]] = []
        for r, rs, sn in zip(recs, recent, seen, strict=True):
            scenario = rs[-1][2] if rs else DEFAULT_SCENARIO
            shown = {i: (int(v[0]), int(v[1])) for i, v in json.loads(r.get("i") or "{}").items()}
            users.append(UserContext(r["u"], scenario, [e[1] for e in rs], max((e[0] for e in rs), default=0),
                                     shown, sn))
            a = assign(policy.experiments, r["u"], scenario) if policy.experiments else None
            arms = [] if a is None else [a.arm] if a.arm != INTERLEAVED else list(a.teams)
            sources: list[tuple[str | None, RulesConfig]] = (
                [(a.experiment.arms[arm].model_version, policy.rules(scenario, a.experiment.arms[arm].rules))
                 for arm in arms] if a is not None else [(None, policy.rules(scenario))]
            )
            plans.append((a, sources))
        # Candidates per (model version, user), one scorer call per version.
        wanted: dict[str | None, list[int]] = {}
        for b, (_, sources) in enumerate(plans):
            for v, _rules in sources:
                group = wanted.setdefault(v, [])
                if not group or group[-1] != b:  # both teams of an interleaved user may share a version
                    group.append(b)
        candidates: dict[tuple[str | None, int], list[tuple[str, float]]] = {}
        scorers: dict[str | None, tuple[Any, str]] = {}
        for v, idx in wanted.items():
            arm_scorer = self._arm_scorer(v) if v is not None else None
            sc, sv = (arm_scorer, arm_scorer.version) if arm_scorer is not None else (scorer, version)
            scorers[v] = (sc, sv)
            pool = max(Policy.pool(k, rules) if not policy.plain(rules, users[b]) else k
                       for b in idx for vv, rules in plans[b][1] if vv == v)
            got = sc.score([users[b].history for b in idx], pool, exclude=[seen[b] for b in idx],
                           times=[[e[0] for e in recent[b]] for b in idx],
                           scenarios=[[e[2] for e in recent[b]] for b in idx])
            for b, cands in zip(idx, got, strict=True):
                candidates[(v, b)] = cands
        if any(not policy.plain(rules, users[b]) for b, (_, sources) in enumerate(plans) for _, rules in sources):
            self._facts({i for c in candidates.values() for i, _ in c}
                        | {p for _, sources in plans for _, rules in sources for p in rules.pins})
        now_ms = int(time.time() * 1000)
        # The policy stage once per model version for all its users (one batch: rows, MMR, reasons).
        ranked_by: dict[tuple[int, int], list[dict[str, Any]]] = {}
        jobs: dict[str | None, list[tuple[int, int, RulesConfig]]] = {}
        for b, (_, sources) in enumerate(plans):
            for j, (v, rules) in enumerate(sources):
                if policy.plain(rules, users[b]):
                    ranked_by[(b, j)] = [{"item_id": i, "score": s} for i, s in candidates[(v, b)][:k]]
                else:
                    jobs.setdefault(v, []).append((b, j, rules))
        for v, todo in jobs.items():
            sc, _ = scorers[v]
            lists = policy.rank_many([users[b] for b, _, _ in todo], [candidates[(v, b)] for b, _, _ in todo], k,
                                     [rules for _, _, rules in todo], self.facts.get, sc.item_vectors,
                                     self._recommendable(sc), now_ms)
            for (b, j, _), lst in zip(todo, lists, strict=True):
                ranked_by[(b, j)] = lst
        out: list[UserList] = []
        for b, (a, sources) in enumerate(plans):
            ranked = [ranked_by[(b, j)] for j in range(len(sources))]
            versions = [scorers[v][1] for v, _ in sources]
            label = None if a is None else a.label
            if a is not None and a.arm == INTERLEAVED:
                items = team_draft(ranked[0], ranked[1], k, seed=f"{label}:{users[b].user_id}:{recs[b]['n']}")
                v_used = "+".join(dict.fromkeys(versions))
                out.append(UserList(items, v_used, label, list(a.teams), users[b].scenario))
            else:
                out.append(UserList(ranked[0], versions[0], label, None, users[b].scenario))
        return out

    def _embed_new_items(self, scorer: Any, items: set[str]) -> None:
        """Give the items the model has never seen a row from their text (a text model only).

        Texts come from the ``items`` records of this process, else (after a restart) from ``item:{id}``; once
        embedded, they are let go.
        """
        if not scorer.embeds_text:
            return
        unknown = sorted(i for i in items if not scorer.knows(i))
        missing = [i for i in unknown if i not in self.item_texts]
        if missing:
            hashes = self.redis.execute([("hgetall", (key("item", i),), {}) for i in missing])
            for item_id, raw in zip(missing, hashes, strict=True):
                record = decode_item(raw)
                self.item_texts[item_id] = item_text(record) if record else ""
        t0 = time.perf_counter()
        added = scorer.add_items({i: self.item_texts.pop(i) for i in unknown})
        if added:
            log.info("model %s: %d new items embedded from their text in %.2fs", scorer.version, added,
                     time.perf_counter() - t0)
