"""The policy stage: the scorer's candidates for a user -> the list the user is shown, each item with its reason.

The job's writer (:mod:`jobs.batch_writer`) runs it once per user scored, never per event; the API runs
:func:`excluded` again on read, so an item marked unavailable leaves every answer before the lists are rewritten.
The rules of a scenario are :class:`~streamrec.config.RulesConfig`; per list, in this order:

1. ``exclude`` drops items (and pins) that match a condition, e.g. ``attributes.available == false``;
2. the candidates' scores are min-max scaled to 0..1 (so a boost means the same whatever the model's scale),
   then ``boosts`` and ``fresh_boost`` add to them, and the repeat rule demotes an item shown
   ``repeat_impressions`` times without an action below every other one, until ``repeat_cooldown_s`` have
   passed since it was last shown;
3. ``diversity`` re-ranks by maximal marginal relevance over the model's item rows (:mod:`serving.diversity`);
4. ``max_per_category`` skips an item once each of its categories is full (a cap: a list may come out shorter);
5. ``pins`` go first;
6. each item gets its reason: the pin or rule that placed it, ``new`` for the freshness boost, else the history
   item whose row is most like its own ("because you watched X": the recent item that scores it highest).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from serving.diversity import mmr_batch
from streamrec.config import ItemCondition, PolicyConfig, RulesConfig

if TYPE_CHECKING:
    from streamrec.config import Settings

log = logging.getLogger(__name__)

MS_PER_HOUR = 3_600_000
# A demoted item's scaled score drops by this much: below every candidate that is not demoted (they span 0..1
# plus boosts), and still ordered among the demoted ones.
DEMOTION = 1_000.0


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """What the rules read of an item: its categories, attributes and ``ts`` (when it was published)."""

    categories: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    ts: int = 0


def item_facts(record: Mapping[str, Any] | None) -> ItemFacts | None:
    """The facts of an ``items`` record or of a decoded ``item:{id}`` hash (JSON strings decoded); None: unknown."""
    if not record:
        return None
    cats = record.get("categories") or ()
    attrs = record.get("attributes") or {}
    if isinstance(cats, str):
        cats = json.loads(cats)
    if isinstance(attrs, str):
        attrs = json.loads(attrs)
    ts = record.get("ts") or 0
    return ItemFacts(tuple(str(c) for c in cats), attrs if isinstance(attrs, dict) else {}, int(ts))


def matches(cond: ItemCondition, item_id: str, facts: ItemFacts | None) -> bool:
    """Whether the item meets every part of the condition (an unknown item meets only ``item_ids``)."""
    if cond.item_ids and item_id not in cond.item_ids:
        return False
    if cond.category is not None and (facts is None or cond.category not in facts.categories):
        return False
    if cond.attribute is not None:
        if facts is None or cond.attribute not in facts.attributes:
            return False
        if facts.attributes[cond.attribute] != cond.equals:
            return False
    return True


def excluded(rules: RulesConfig, item_id: str, facts: ItemFacts | None) -> bool:
    """Whether any of the rules' ``exclude`` conditions keeps the item out of lists."""
    return any(matches(c, item_id, facts) for c in rules.exclude)


@dataclass(frozen=True, slots=True)
class UserContext:
    """What the policy reads of one user, from the job's state record."""

    user_id: str
    scenario: str
    # Recent item ids, oldest first (the explanations' candidates).
    history: Sequence[str]
    # The user's newest event time (epoch ms): what "fresh" is measured against, so a replay behaves as live.
    newest_ts: int
    # item -> (times shown without an action since, when last shown, epoch ms).
    shown: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # Items never recommended back (pins obey it too).
    seen: Collection[str] = ()


Vectors = Callable[[Sequence[str]], np.ndarray]


@dataclass(slots=True)
class _Prep:
    """One user's list on its way through the stage (see :meth:`Policy.rank_many`)."""

    ids: list[str]
    raw: np.ndarray
    info: list[_Static]
    pinned: list[dict[str, Any]]
    history: list[str]
    reasons: list[dict[str, Any] | None] = field(default_factory=list)
    adj: np.ndarray = field(default_factory=lambda: np.zeros(0))
    live: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    late: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    want: int = 0
    diversity: float = 0.0
    rows: np.ndarray | None = None
    history_rows: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Static:
    """What one rule set says of one item, whatever the user (cached per item and facts object)."""

    facts: ItemFacts | None
    excluded: bool
    boost: float
    reason: dict[str, Any] | None
    reason_weight: float
    ts: int
    categories: tuple[str, ...]


class Policy:
    """The configured rules and experiments, compiled once per (re)load."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.experiments = config.experiments
        # id(rules) -> (the rules, item id -> what they say of the item): see _static.
        self._cache: dict[int, tuple[RulesConfig, dict[str, _Static]]] = {}

    @staticmethod
    def plain(rules: RulesConfig, user: UserContext) -> bool:
        """Whether the rules leave this user's list as the model's top-k (then the stage is skipped: no cost)."""
        repeats = rules.repeat_impressions is not None and any(
            n >= rules.repeat_impressions for n, _ in user.shown.values()
        )
        return not (
            rules.exclude or rules.boosts or rules.pins or rules.max_per_category or rules.fresh_boost
            or rules.diversity or rules.explain or repeats
        )

    def rules(self, scenario: str, rule_set: str | None = None) -> RulesConfig:
        """The rule set of an experiment arm, else the scenario's, else the default."""
        if rule_set is not None:
            return self.config.rule_sets[rule_set]
        return self.config.scenarios.get(scenario, self.config.default)

    @staticmethod
    def pool(k: int, rules: RulesConfig) -> int:
        """How many candidates the scorer should return for a list of ``k``."""
        return max(k, int(round(k * rules.candidates))) + len(rules.pins)

    def rank(
        self,
        user: UserContext,
        candidates: Sequence[tuple[str, float]],
        k: int,
        rules: RulesConfig,
        facts: Callable[[str], ItemFacts | None],
        vectors: Vectors | None = None,
        recommendable: Callable[[str], bool] | None = None,
        now_ms: int = 0,
    ) -> list[dict[str, Any]]:
        """The user's list: ``[{"item_id", "score", "reason"?}]``, at most ``k``, in the order shown.

        Args:
            user: The user's context.
            candidates: The scorer's ``(item_id, score)``, best first (:meth:`pool` of them).
            k: Items in the list.
            rules: The rules that apply (:meth:`rules`).
            facts: Item id -> its facts (None: unknown, matched by ``item_ids`` only).
            vectors: Item ids -> the model's rows (for diversity and explanations; None: neither).
            recommendable: Whether a pinned item may be shown (in the catalog, known to the scorer).
            now_ms: Wall-clock time (epoch ms), against which the repeat rule's cooling period runs.
        """
        return self.rank_many([user], [candidates], k, [rules], facts, vectors, recommendable, now_ms)[0]

    def rank_many(
        self,
        users: Sequence[UserContext],
        candidates: Sequence[Sequence[tuple[str, float]]],
        k: int,
        rules: Sequence[RulesConfig],
        facts: Callable[[str], ItemFacts | None],
        vectors: Vectors | None = None,
        recommendable: Callable[[str], bool] | None = None,
        now_ms: int = 0,
    ) -> list[list[dict[str, Any]]]:
        """:meth:`rank` for a chunk of users, each with its rules.

        The item rows come in one call, MMR and the explanations in one numpy pass per step for the whole
        chunk: the stage costs the stream per chunk about what a single list would, plus a little per user.
        """
        preps = [self._prepare(u, c, k, r, facts, recommendable, now_ms)
                 for u, c, r in zip(users, candidates, rules, strict=True)]
        wants_rows = vectors is not None and any(r.diversity > 0 or r.explain for r in rules)
        if wants_rows and vectors is not None:
            every = [i for p in preps for i in (*p.ids, *p.history)]
            rows = vectors(every) if every else np.zeros((0, 0), dtype=np.float32)
            at = 0
            for p in preps:
                p.rows, at = rows[at : at + len(p.ids)], at + len(p.ids)
                p.history_rows, at = rows[at : at + len(p.history)], at + len(p.history)
        self._diversify([p for p, r in zip(preps, rules, strict=True) if r.diversity > 0 and p.rows is not None
                         and len(p.live) > 1], k)
        out = [self._finish(p, r, k) for p, r in zip(preps, rules, strict=True)]
        self._explain([(o, p) for o, p, r in zip(out, preps, rules, strict=True) if r.explain and p.rows is not None],
                      vectors)
        return out

    def _static(self, rules: RulesConfig, facts: Callable[[str], ItemFacts | None]) -> Callable[[str], _Static]:
        """Item id -> what the rules say of it whatever the user: computed once per item and facts version.

        The rules are fixed for a Policy's life (a reload builds a new Policy), an item's facts change only with
        an ``items`` upsert (a new ItemFacts object), so the entry is reused while its facts object is the same.
        """
        owner, cache = self._cache.get(id(rules), (None, {}))
        if owner is not rules:  # a rule set this Policy has not seen (an id can be reused once one is gone)
            cache = {}
            self._cache[id(rules)] = (rules, cache)

        def get(item: str) -> _Static:
            f = facts(item)
            hit = cache.get(item)
            if hit is not None and hit.facts is f:
                return hit
            boost, reason = 0.0, None
            for b in rules.boosts:
                if matches(b.when, item, f):
                    boost += b.by
                    if reason is None or b.by > reason[1]:
                        reason = ({"kind": "rule", "rule": b.name}, b.by)
            entry = _Static(f, excluded(rules, item, f), boost, None if reason is None else reason[0],
                            reason[1] if reason else 0.0, f.ts if f is not None else 0,
                            f.categories if f is not None else ())
            cache[item] = entry
            return entry

        return get

    def _prepare(
        self,
        user: UserContext,
        candidates: Sequence[tuple[str, float]],
        k: int,
        rules: RulesConfig,
        facts: Callable[[str], ItemFacts | None],
        recommendable: Callable[[str], bool] | None,
        now_ms: int,
    ) -> _Prep:
        """Steps 1-2 of the module docstring for one user: pins, exclusions, scaled and adjusted scores."""
        static = self._static(rules, facts)
        pins = [
            p for p in dict.fromkeys(rules.pins)
            if p not in user.seen and (recommendable is None or recommendable(p)) and not static(p).excluded
        ][:k]
        pinned = set(pins)
        by_score = dict(candidates)
        kept = [(i, s, x) for i, s in candidates if i not in pinned and not (x := static(i)).excluded]
        prep = _Prep([i for i, _, _ in kept], np.array([s for _, s, _ in kept], dtype=np.float64),
                     [x for _, _, x in kept], [{"item_id": p, "score": by_score.get(p), "reason": {"kind": "pin"}}
                                               for p in pins],
                     list(dict.fromkeys(reversed(list(user.history)))) if rules.explain else [])
        if not kept:
            return prep
        raw = prep.raw
        span = raw.max() - raw.min()
        adj = (raw - raw.min()) / span if span > 0 else np.ones_like(raw)
        adj += np.array([x.boost for x in prep.info])
        prep.reasons = [x.reason for x in prep.info]
        if rules.fresh_boost:
            fresh_ms = rules.fresh_hours * MS_PER_HOUR
            for n, x in enumerate(prep.info):
                if x.ts > 0 and 0 <= user.newest_ts - x.ts <= fresh_ms:
                    adj[n] += rules.fresh_boost
                    if rules.fresh_boost > x.reason_weight:
                        prep.reasons[n] = {"kind": "new"}
        demoted = np.zeros(len(prep.ids), dtype=bool)
        if rules.repeat_impressions is not None and user.shown:
            cooldown_ms = rules.repeat_cooldown_s * 1000
            for n, item in enumerate(prep.ids):
                seen = user.shown.get(item)
                if seen is not None and seen[0] >= rules.repeat_impressions and now_ms - seen[1] < cooldown_ms:
                    demoted[n] = True
        # Best first; a demoted item after every other one (MMR never sees the demotion, which would flatten the
        # others' relevance).
        order = np.argsort(-adj, kind="stable")
        prep.adj, prep.live, prep.late = adj, order[~demoted[order]], order[demoted[order]]
        prep.want = min(len(prep.live), 2 * k if rules.max_per_category else k)
        prep.diversity = rules.diversity
        return prep

    @staticmethod
    def _diversify(preps: Sequence[_Prep], k: int) -> None:
        """Step 3 for every list that asks for it, in one batch: ``live`` re-ordered by MMR.

        Twice the list when a category cap may skip some (MMR is O(picks x candidates)); the rest follow in
        score order should the cap skip even more.
        """
        if not preps:
            return
        n = max(len(p.live) for p in preps)
        d = preps[0].rows.shape[1] if preps[0].rows is not None else 0
        scores = np.full((len(preps), n), -np.inf)
        rows = np.zeros((len(preps), n, d))
        for b, p in enumerate(preps):
            assert p.rows is not None
            scores[b, : len(p.live)] = p.adj[p.live]
            rows[b, : len(p.live)] = p.rows[p.live]
        picks = mmr_batch(scores, rows, max(p.want for p in preps), np.array([p.diversity for p in preps]))
        for b, p in enumerate(preps):
            chosen = picks[b, : p.want]
            chosen = chosen[chosen >= 0]
            rest = np.setdiff1d(np.arange(len(p.live)), chosen, assume_unique=True)
            p.live = np.concatenate([p.live[chosen], p.live[np.sort(rest)]])

    @staticmethod
    def _finish(p: _Prep, rules: RulesConfig, k: int) -> list[dict[str, Any]]:
        """Steps 4-5: the category cap over the (re-ranked) order, after the pins."""
        out = list(p.pinned)
        cap = rules.max_per_category
        per_category: dict[str, int] = {}
        ids, raw, reasons, info = p.ids, p.raw.tolist(), p.reasons, p.info
        for n in np.concatenate([p.live, p.late]).tolist() if len(ids) else []:
            if len(out) == k:
                break
            if cap:
                cats = info[n].categories
                full = False
                for c in cats:
                    if per_category.get(c, 0) >= cap:
                        full = True
                        break
                if full:
                    continue
                for c in cats:
                    per_category[c] = per_category.get(c, 0) + 1
            reason = reasons[n]
            out.append({"item_id": ids[n], "score": raw[n]} if reason is None else
                       {"item_id": ids[n], "score": raw[n], "reason": reason})
        if not rules.explain:
            for entry in out:
                entry.pop("reason", None)
        return out

    @staticmethod
    def _explain(lists: Sequence[tuple[list[dict[str, Any]], _Prep]], vectors: Vectors | None) -> None:
        """Step 6 for every list at once: per item without a rule's reason, the history item with the closest row.

        "Because you watched X": of the user's recent items (newest first, so a tie goes to the recent one),
        the one whose row has the largest cosine with the item's.
        """
        todo = [(o, p, [e for e in o if "reason" not in e]) for o, p in lists]
        todo = [(o, p, t) for o, p, t in todo if t and p.history]
        if not todo:
            return
        d = todo[0][1].rows.shape[1] if todo[0][1].rows is not None else 0
        m, h = max(len(t) for _, _, t in todo), max(len(p.history) for _, p, _ in todo)
        items = np.zeros((len(todo), m, d))
        hist = np.zeros((len(todo), h, d))
        for b, (_, p, t) in enumerate(todo):
            assert p.rows is not None and p.history_rows is not None
            row_of = {i: n for n, i in enumerate(p.ids)}
            missing = [e["item_id"] for e in t if e["item_id"] not in row_of]
            extra = vectors(missing) if missing and vectors is not None else None
            for j, e in enumerate(t):
                if e["item_id"] in row_of:
                    items[b, j] = p.rows[row_of[e["item_id"]]]
                elif extra is not None:
                    items[b, j] = extra[missing.index(e["item_id"])]
            hist[b, : len(p.history)] = p.history_rows
        items /= np.maximum(np.linalg.norm(items, axis=2, keepdims=True), 1e-12)
        norms = np.linalg.norm(hist, axis=2)
        hist /= np.maximum(norms, 1e-12)[:, :, None]
        sims = np.einsum("bmd,bhd->bmh", items, hist)
        sims[np.broadcast_to((norms == 0)[:, None, :], sims.shape)] = -np.inf
        best = sims.argmax(axis=2)
        for b, (_, p, t) in enumerate(todo):
            if not (norms[b, : len(p.history)] > 0).any():
                continue
            for j, e in enumerate(t):
                e["reason"] = {"kind": "history", "item_id": p.history[best[b, j]]}


class PolicySource:
    """The policy in force: the config's, or ``policy.file`` re-read when it changes (hot reload).

    A file that fails to parse or validate is refused with an error log, and the policy in force stays: a typo
    in a rule never takes the lists down. The file holds :class:`~streamrec.config.PolicyConfig`'s fields.
    """

    def __init__(self, config: PolicyConfig, path: Path | None) -> None:
        self.path = path
        self.interval_s = config.reload_interval_s
        self.policy = Policy(config)
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self.reloads = 0
        if path is not None:
            self._reload()

    def get(self) -> Policy:
        """The current policy (the file is looked at no more often than ``reload_interval_s``)."""
        now = time.monotonic()
        if self.path is not None and now - self._checked >= self.interval_s:
            self._reload()
        return self.policy

    def _reload(self) -> None:
        assert self.path is not None
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
        except OSError as exc:
            if self._stamp != (-1, -1):  # once per disappearance, not every interval
                log.error("policy file %s unreadable, the policy in force stays: %s", self.path, exc)
                self._stamp = (-1, -1)
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
            if not isinstance(data, dict) or "file" in data:
                raise ValueError("the policy file must be a mapping of policy fields (without 'file')")
            config = PolicyConfig.model_validate({**data, "reload_interval_s": self.interval_s})
        except (OSError, ValueError, yaml.YAMLError) as exc:  # pydantic's ValidationError is a ValueError
            log.error("policy file %s refused, the policy in force stays: %s", self.path, exc)
            return
        self.policy = Policy(config)
        self.reloads += 1
        log.info("policy reloaded from %s (%d experiments)", self.path, len(config.experiments))


def policy_source(settings: Settings) -> PolicySource:
    """The policy of a process: ``settings.policy``, or its ``file`` (hot-reloaded)."""
    p = settings.policy
    return PolicySource(p, settings.path(p.file) if p.file else None)
