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

from serving.diversity import mmr_order
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


class Policy:
    """The configured rules and experiments, compiled once per (re)load."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.experiments = config.experiments

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
        pins = [
            p for p in dict.fromkeys(rules.pins)
            if p not in user.seen and (recommendable is None or recommendable(p)) and not excluded(rules, p, facts(p))
        ][:k]
        pinned = set(pins)
        kept = [(i, s) for i, s in candidates if i not in pinned and not excluded(rules, i, facts(i))]
        out: list[dict[str, Any]] = [{"item_id": p, "score": None, "reason": {"kind": "pin"}} for p in pins]
        if kept and len(out) < k:
            out += self._order(user, kept, k - len(out), rules, facts, vectors, now_ms)
        by_score = {i: s for i, s in candidates}
        for entry in out[: len(pins)]:
            entry["score"] = by_score.get(entry["item_id"])
        if rules.explain and vectors is not None:
            self._explain(user, out, vectors)
        if not rules.explain:
            for entry in out:
                entry.pop("reason", None)
        return out

    def _order(
        self,
        user: UserContext,
        kept: Sequence[tuple[str, float]],
        k: int,
        rules: RulesConfig,
        facts: Callable[[str], ItemFacts | None],
        vectors: Vectors | None,
        now_ms: int,
    ) -> list[dict[str, Any]]:
        ids = [i for i, _ in kept]
        raw = np.array([s for _, s in kept], dtype=np.float64)
        span = raw.max() - raw.min()
        adj = (raw - raw.min()) / span if span > 0 else np.ones_like(raw)
        reasons: list[dict[str, Any] | None] = [None] * len(ids)
        fresh_ms = rules.fresh_hours * MS_PER_HOUR
        cooldown_ms = rules.repeat_cooldown_s * 1000
        for n, item in enumerate(ids):
            f = facts(item)
            best = 0.0
            for b in rules.boosts:
                if matches(b.when, item, f):
                    adj[n] += b.by
                    if b.by > best:
                        best, reasons[n] = b.by, {"kind": "rule", "rule": b.name}
            if rules.fresh_boost and f is not None and f.ts > 0 and 0 <= user.newest_ts - f.ts <= fresh_ms:
                adj[n] += rules.fresh_boost
                if rules.fresh_boost > best:
                    reasons[n] = {"kind": "new"}
            if rules.repeat_impressions is not None and item in user.shown:
                times, last = user.shown[item]
                if times >= rules.repeat_impressions and now_ms - last < cooldown_ms:
                    adj[n] -= DEMOTION
        order = np.argsort(-adj, kind="stable")
        need = len(order) if rules.max_per_category else min(k, len(order))
        if rules.diversity > 0 and vectors is not None and len(order) > 1:
            rows = vectors([ids[i] for i in order])
            order = order[mmr_order(adj[order], rows, need, rules.diversity)]
        out: list[dict[str, Any]] = []
        per_category: dict[str, int] = {}
        for n in order[:need]:
            if len(out) == k:
                break
            item = ids[n]
            if rules.max_per_category:
                cats = (facts(item) or ItemFacts()).categories
                if any(per_category.get(c, 0) >= rules.max_per_category for c in cats):
                    continue
                for c in cats:
                    per_category[c] = per_category.get(c, 0) + 1
            entry: dict[str, Any] = {"item_id": item, "score": float(raw[n])}
            if reasons[n] is not None:
                entry["reason"] = reasons[n]
            out.append(entry)
        return out

    @staticmethod
    def _explain(user: UserContext, out: list[dict[str, Any]], vectors: Vectors) -> None:
        """"Because you watched X": per item without a rule's reason, the history item with the closest row."""
        todo = [e for e in out if "reason" not in e]
        history = list(dict.fromkeys(reversed(list(user.history))))  # newest first: ties go to the recent one
        if not todo or not history:
            return
        h = vectors(history)
        v = vectors([e["item_id"] for e in todo])
        hn = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        known = np.linalg.norm(h, axis=1) > 0
        if not known.any():
            return
        sim = vn @ hn.T
        sim[:, ~known] = -np.inf
        for entry, j in zip(todo, sim.argmax(axis=1).tolist(), strict=True):
            entry["reason"] = {"kind": "history", "item_id": history[j]}


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
