"""A/B experiments on live traffic: which arm a user is in, team-draft interleaving, and the per-arm figures.

An experiment (``policy.experiments`` in the config, :class:`~streamrec.config.ExperimentConfig`) splits the users
of a scenario between arms by a stable hash of the user id, so a user stays in one arm for the experiment's life
and every process (the job's shards, a restarted job) agrees without coordination. An arm is a model version
and/or a named rule set. With ``interleave`` every user gets one list merged from the first two arms by team
draft (Radlinski, Kurup and Joachims, CIKM 2008): each arm picks in turn (a coin decides who starts each round),
every item remembers its team, and an action on an item credits that team. Interleaving needs far fewer users
than a split to tell two rankers apart, because each user compares both.

The job counts per arm in ``metrics:experiments`` (:func:`experiment_metric_ops`):

- ``lists``: lists written; ``impression_lists`` and ``impressions``: lists and items front-ends reported shown;
- ``actions`` and ``hits@10``: actions of users while holding a list of the arm, and those on one of its top 10;
- for interleaving, ``credit`` per team and, per batch of a user's actions, ``wins`` for the team with more
  credit (a tie counts for neither).

:func:`experiment_report` turns the counters into rates with 95% Wilson intervals, each arm against the first
(the control) with a two-proportion z-test; for interleaving, a two-sided sign test on the wins.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamrec.config import CUTOFF, ExperimentConfig

EXPERIMENT_METRICS = "metrics:experiments"
# The arm of a list, as rec:{user} and impression records carry it: "<experiment>:<arm>".
ARM_SEPARATOR = ":"
INTERLEAVED = "interleaved"
_Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Assignment:
    """A user's place in an experiment: one arm, or (interleaving) the two teams."""

    experiment: ExperimentConfig
    arm: str  # the arm's name, or INTERLEAVED

    @property
    def label(self) -> str:
        return f"{self.experiment.name}{ARM_SEPARATOR}{self.arm}"

    @property
    def teams(self) -> tuple[str, str]:
        """The two arms that interleave (the experiment's first two)."""
        a, b = list(self.experiment.arms)[:2]
        return a, b


def split_label(label: str | None) -> tuple[str, str] | None:
    """``"exp:arm"`` -> ``("exp", "arm")``; None for a list outside any experiment."""
    if not label or ARM_SEPARATOR not in label:
        return None
    experiment, _, arm = label.partition(ARM_SEPARATOR)
    return experiment, arm


def bucket(experiment: str, user_id: str) -> float:
    """The user's stable place in [0, 1) for one experiment (crc32 of name and id: no process state)."""
    return zlib.crc32(f"{experiment}\0{user_id}".encode()) / 2**32


def assign(
    experiments: Sequence[ExperimentConfig], user_id: str, scenario: str, now: datetime | None = None
) -> Assignment | None:
    """The user's arm in the first experiment that is running for ``scenario``; None when none is."""
    now = now or datetime.now(UTC)
    for e in experiments:
        if e.scenario is not None and e.scenario != scenario:
            continue
        if (e.start is not None and now < _aware(e.start)) or (e.end is not None and now >= _aware(e.end)):
            continue
        if e.interleave:
            return Assignment(e, INTERLEAVED)
        total = sum(a.weight for a in e.arms.values())
        point, edge = bucket(e.name, user_id) * total, 0.0
        for name, arm in e.arms.items():
            edge += arm.weight
            if point < edge:
                return Assignment(e, name)
        return Assignment(e, list(e.arms)[-1])  # float rounding at the top edge
    return None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def team_draft(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], k: int, seed: str
) -> list[dict[str, Any]]:
    """Team-draft interleaving of two ranked lists into one of at most ``k``; each pick gets ``team`` 0 or 1.

    Args:
        a: The first arm's list, best first, entries with ``item_id`` (team 0).
        b: The second arm's list (team 1).
        k: Length of the merged list.
        seed: Fixes the coin flips (the user id and the lists' version): the same inputs interleave the same.
    """
    picks: list[dict[str, Any]] = []
    used: set[str] = set()
    lists, pos, count = (a, b), [0, 0], [0, 0]
    rnd = zlib.crc32(seed.encode())
    while len(picks) < k:
        rnd = (rnd * 1103515245 + 12345) & 0x7FFFFFFF  # a coin per round, from the seed alone
        first = 0 if count[0] < count[1] else 1 if count[1] < count[0] else (rnd >> 16) & 1
        took = False
        for team in (first, 1 - first):
            lst = lists[team]
            while pos[team] < len(lst) and lst[pos[team]]["item_id"] in used:
                pos[team] += 1
            if pos[team] < len(lst):
                entry = {**lst[pos[team]], "team": team}
                used.add(entry["item_id"])
                picks.append(entry)
                count[team] += 1
                took = True
                break
        if not took:
            break
    return picks


def _bump(counts: dict[tuple[str, str, str, str], int], field: tuple[str, str, str, str], n: int = 1) -> None:
    counts[field] = counts.get(field, 0) + n


def action_counts(
    actions: Mapping[str, Sequence[tuple[str, str]]], shown: Mapping[str, dict[str, Any] | None]
) -> dict[tuple[str, str, str, str], int]:
    """Per arm, the actions of users holding one of its lists, and the hits (``credit``/``wins`` interleaved).

    Args:
        actions: user id -> ``(item_id, scenario)`` of the actions since the lists were written.
        shown: user id -> the decoded ``rec:{user}`` the user had then (None: none).

    Returns:
        ``(experiment, arm, scenario, counter) -> n``.
    """
    counts: dict[tuple[str, str, str, str], int] = {}
    for user, acts in actions.items():
        rec = shown.get(user)
        where = split_label((rec or {}).get("arm"))
        if not rec or where is None or not rec.get("items"):
            continue
        experiment, arm = where
        top = {e["item_id"]: e for e in rec["items"][:CUTOFF]}
        if arm != INTERLEAVED:
            for item, scenario in acts:
                _bump(counts, (experiment, arm, scenario, "actions"))
                if item in top:
                    _bump(counts, (experiment, arm, scenario, f"hits@{CUTOFF}"))
            continue
        teams = rec.get("teams") or ["0", "1"]
        credit = [0, 0]
        scenario = ""
        for item, scenario in acts:
            for t in teams:
                _bump(counts, (experiment, t, scenario, "actions"))
            entry = top.get(item)
            if entry is not None and entry.get("team") in (0, 1):
                credit[entry["team"]] += 1
                _bump(counts, (experiment, teams[entry["team"]], scenario, "credit"))
        if credit[0] != credit[1]:
            _bump(counts, (experiment, teams[0 if credit[0] > credit[1] else 1], scenario, "wins"))
    return counts


def list_counts(labels: Iterable[tuple[str | None, str]]) -> dict[tuple[str, str, str, str], int]:
    """``lists`` per arm, from the ``(arm label, scenario)`` of each list written."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for label, scenario in labels:
        where = split_label(label)
        if where is not None:
            _bump(counts, (*where, scenario, "lists"))
    return counts


def impression_counts(impressions: Iterable[Sequence[Any]]) -> dict[tuple[str, str, str, str], int]:
    """``impression_lists`` and ``impressions`` per arm, from the flush records' ``[version, arm, scenario, n]``.

    An interleaved list's impressions count for both teams: each was shown in every such list.
    """
    counts: dict[tuple[str, str, str, str], int] = {}
    for _version, label, scenario, n in impressions:
        where = split_label(label)
        if where is None:
            continue
        _bump(counts, (*where, scenario, "impression_lists"))
        _bump(counts, (*where, scenario, "impressions"), int(n))
    return counts


def experiment_metric_ops(counts: Mapping[tuple[str, str, str, str], int]) -> list[tuple[str, tuple, dict]]:
    """HINCRBY ops adding the counts to ``metrics:experiments``."""
    return [("hincrby", (EXPERIMENT_METRICS, json.dumps(list(f)), n), {}) for f, n in sorted(counts.items()) if n]


def read_experiment_counts(client: Any) -> dict[str, dict[str, dict[str, int]]]:
    """``metrics:experiments`` as ``{experiment: {arm: {counter: n}}}``, summed over scenarios."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for raw_field, raw_n in (client.hgetall(EXPERIMENT_METRICS) or {}).items():
        try:
            experiment, arm, _scenario, counter = json.loads(raw_field)
        except (ValueError, TypeError):
            continue
        row = out.setdefault(experiment, {}).setdefault(arm, {})
        row[counter] = row.get(counter, 0) + int(raw_n)
    return out


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and near 0 or 1, unlike the normal one)."""
    if n <= 0:
        return 0.0, 0.0
    p = successes / n
    z2 = _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> float | None:
    """Two-sided p-value of a pooled two-proportion z-test; None when either side has no trials."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (s1 / n1 - s2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def sign_test_p(wins_a: int, wins_b: int) -> float | None:
    """Two-sided exact binomial (sign) test of the interleaving wins; None without any win."""
    n = wins_a + wins_b
    if n == 0:
        return None
    k = min(wins_a, wins_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _rate(s: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(s, n)
    return {"value": round(s / n, 6) if n else None, "ci95": [round(lo, 6), round(hi, 6)], "n": n}


def experiment_report(
    counts: Mapping[str, Mapping[str, Mapping[str, int]]], experiments: Sequence[ExperimentConfig] = ()
) -> dict[str, Any]:
    """Per experiment and arm: the counters, hit rate and click-through with intervals, and the test.

    Hit rate is ``hits@10 / actions`` (an action on the list the user held), click-through ``hits@10 /
    impressions`` (of the items shown). Arms are compared with the experiment's first arm (configured order when
    the experiment is configured, else by name); interleaving reports credit and the sign test on wins.
    """
    by_name = {e.name: e for e in experiments}
    report: dict[str, Any] = {}
    for name, arms in sorted(counts.items()):
        cfg = by_name.get(name)
        order = [a for a in (cfg.arms if cfg else []) if a in arms] + sorted(a for a in arms if cfg is None or
                                                                              a not in cfg.arms)
        rows: dict[str, Any] = {}
        for arm in order:
            c = arms[arm]
            hits = c.get(f"hits@{CUTOFF}", 0)
            rows[arm] = {
                **{k: int(v) for k, v in sorted(c.items())},
                f"hit_rate@{CUTOFF}": _rate(hits, c.get("actions", 0)),
                "ctr": _rate(hits, c.get("impressions", 0)),
            }
        entry: dict[str, Any] = {"arms": rows, "interleave": bool(cfg and cfg.interleave)}
        if entry["interleave"] or any("credit" in arms[a] or "wins" in arms[a] for a in order):
            entry["interleave"] = True
            if len(order) >= 2:
                a, b = order[:2]
                entry["sign_test_p"] = sign_test_p(arms[a].get("wins", 0), arms[b].get("wins", 0))
        elif order:
            control = arms[order[0]]
            for arm in order[1:]:
                c = arms[arm]
                rows[arm]["vs_control"] = {
                    "control": order[0],
                    f"hit_rate@{CUTOFF}_p": two_proportion_p(
                        c.get(f"hits@{CUTOFF}", 0), c.get("actions", 0),
                        control.get(f"hits@{CUTOFF}", 0), control.get("actions", 0),
                    ),
                    "ctr_p": two_proportion_p(
                        c.get(f"hits@{CUTOFF}", 0), c.get("impressions", 0),
                        control.get(f"hits@{CUTOFF}", 0), control.get("impressions", 0),
                    ),
                }
        report[name] = entry
    return report
