"""Offline evaluation: reproducible splits and full-ranking metrics for any scorer of item rows.

Protocols (both rank ALL items of the training item index, the items already in the user's
history excluded, one target per test case, so Recall@k = HR@k):

* ``loo`` (leave-one-out): each user's last item is the target, everything before is history
  and training data. Users with a single event only train.
* ``time`` (global time split, replayed): events before the cutoff (the ``1 - test_fraction``
  quantile of event times) are training data. Every later event is then a test case, in time
  order, as the stream would see it: the history is all of that user's earlier events (training
  or test), the target the event's item. Cases without history, or whose item the user already
  had, are skipped. A target the training data never saw cannot be ranked and counts as a miss.

Ties in score rank by item row (as a stable sort would), so metrics are deterministic.

The harness measures each protocol on a :class:`Holdout`: a validation split, on which every choice is
made, and a test split, read once per final configuration (:func:`holdout`). Both share one training set,
so a model is fitted once and measured on both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from model_export.data.datasets import build_scenario_timelines, k_core
from model_export.errors import NotEnoughDataError

PROTOCOLS = ("loo", "time")


@dataclass(frozen=True)
class History:
    """What a ranker knows of one user at prediction time, oldest first, aligned.

    Attributes:
        rows: Item rows (1..N) of the items the index knows; unknown items are left out.
        ts: Their event times (epoch ms), int64.
        scenarios: Their ``scenario`` (``"default"`` when the event had none).
        now: Time of the prediction (the target event's ts), epoch ms.
        scenario: Scenario of the prediction (the target event's).
    """

    rows: np.ndarray
    ts: np.ndarray
    scenarios: tuple[str, ...]
    now: int
    scenario: str = "default"


# A ranker maps a batch of histories to scores (B, N + 1) over the rows of its item index.
Ranker = Callable[[Sequence[History]], np.ndarray]


@dataclass(frozen=True)
class Split:
    """Training sequences and held-out test cases of one protocol.

    Attributes:
        protocol: ``"loo"`` or ``"time"``.
        train: ``{user_id: [item_id, ...]}`` oldest first: everything a model may learn from.
        sequences: ``{user_id: [item_id, ...]}`` every known item, training and held out.
        times: ``{user_id: [ts, ...]}`` aligned with ``sequences`` (epoch ms).
        scenarios: ``{user_id: [scenario, ...]}`` aligned with ``sequences``.
        cases: ``(user_id, t)``: predict ``sequences[user][t]`` from ``sequences[user][:t]``.
        min_ts: Earliest training event time (epoch ms).
        max_ts: Latest training event time (epoch ms).
        cutoff_ts: Events at or after this time are held out (``time`` only).
    """

    protocol: str
    train: dict[str, list[str]]
    sequences: dict[str, list[str]]
    cases: list[tuple[str, int]]
    min_ts: int
    max_ts: int
    cutoff_ts: int | None = None
    times: dict[str, list[int]] = field(default_factory=dict)
    scenarios: dict[str, list[str]] = field(default_factory=dict)


def leave_one_out(events: Iterable[Mapping[str, Any]]) -> Split:
    """The leave-one-out split: each user's last item held out (see the module docstring)."""
    return leave_one_out_lines(build_scenario_timelines(events))


def leave_one_out_lines(lines: Mapping[str, list[tuple[int, str, str]]]) -> Split:
    """:func:`leave_one_out` of per-user ``(ts, item, scenario)`` timelines."""
    sequences = {user: [item for _, item, _ in line] for user, line in lines.items()}
    train = {user: seq[:-1] if len(seq) >= 2 else seq for user, seq in sequences.items()}
    cases = [(user, len(seq) - 1) for user, seq in sequences.items() if len(seq) >= 2]
    if not cases:
        raise NotEnoughDataError("no user has two events, so leave-one-out has nothing to hold out")
    times = [line[j][0] for user, line in lines.items() for j in range(len(train[user]))]
    return Split("loo", train, sequences, cases, min(times), max(times), None, *_aligned(lines))


def _aligned(lines: Mapping[str, list[tuple[int, str, str]]]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    times = {user: [ts for ts, _, _ in line] for user, line in lines.items()}
    scenarios = {user: [sc for _, _, sc in line] for user, line in lines.items()}
    return times, scenarios


def time_split(events: Iterable[Mapping[str, Any]], test_fraction: float = 0.2) -> Split:
    """The global time split at the ``1 - test_fraction`` quantile of event times (module docstring)."""
    lines = build_scenario_timelines(events)
    all_ts = sorted(ts for line in lines.values() for ts, _, _ in line)
    if len(all_ts) < 2:
        what = f"{len(all_ts)} events cannot be split in time"
        raise NotEnoughDataError(what)
    return _split_at(lines, all_ts[min(int(len(all_ts) * (1.0 - test_fraction)), len(all_ts) - 1)])


def window_split(events: Iterable[Mapping[str, Any]], cutoff_ts: int) -> Split:
    """The ``time`` protocol with a given cutoff: events at or after ``cutoff_ts`` are the held-out window.

    The periodic trainer uses it to measure the candidate and the serving model on the same
    most recent events (module docstring: every later event is a case, in time order).

    Raises:
        NotEnoughDataError: nothing before the cutoff, or no window event has a history before it.
    """
    return _split_at(build_scenario_timelines(events), cutoff_ts)


def _split_at(
    lines: Mapping[str, list[tuple[int, str, str]]],
    cutoff: int,
    train: dict[str, list[str]] | None = None,
    train_ts: Sequence[int] | None = None,
) -> Split:
    """Every event at or after ``cutoff`` a case; ``train`` (default: every event before it) what models learn.

    ``train_ts``: the event times of ``train`` (default: those of the events before the cutoff).
    """
    own_train = train is None
    train = {} if train is None else train
    sequences: dict[str, list[str]] = {}
    timed_cases: list[tuple[int, str, int]] = []
    for user, line in lines.items():
        seq = sequences[user] = [item for _, item, _ in line]
        n_before = sum(1 for ts, _, _ in line if ts < cutoff)
        if own_train and n_before:
            train[user] = seq[:n_before]
        seen = set(seq[:n_before])
        for t in range(n_before, len(seq)):
            if t > 0 and seq[t] not in seen:
                timed_cases.append((line[t][0], user, t))
            seen.add(seq[t])
    if train_ts is None:
        train_ts = [ts for line in lines.values() for ts, _, _ in line if ts < cutoff]
    if not timed_cases or not train_ts:
        raise NotEnoughDataError("no event after the time cutoff has a history before it")
    # Replay order: by event time, ties by user's order then position (the sorts are stable).
    cases = [(user, t) for _, user, t in sorted(timed_cases, key=lambda c: c[0])]
    return Split("time", train, sequences, cases, min(train_ts), max(train_ts), cutoff, *_aligned(lines))


def make_split(events: Iterable[Mapping[str, Any]], protocol: str, test_fraction: float = 0.2) -> Split:
    """The split of ``protocol`` (one of :data:`PROTOCOLS`)."""
    if protocol == "loo":
        return leave_one_out(events)
    if protocol == "time":
        return time_split(events, test_fraction)
    msg = f"unknown protocol {protocol!r}; use one of {PROTOCOLS}"
    raise ValueError(msg)


# Share of all events (by time) held out for validation under ``time``: the last part of the training period.
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Holdout:
    """One protocol's validation and test splits, over one training set.

    Attributes:
        validation: Its cases are the validation targets; its sequences never hold a test event.
        test: Its cases are the test targets; a case's history holds every earlier event, the
            validation events included (a model reads them, as the stream would between trainings).
        train: What every model learns from, for both splits (``validation.train`` and ``test.train``).
    """

    validation: Split
    test: Split

    @property
    def train(self) -> dict[str, list[str]]:
        return self.validation.train


def _quantile_ts(all_ts: Sequence[int], share: float) -> int:
    return all_ts[min(int(len(all_ts) * share), len(all_ts) - 1)]


def loo_holdout(events: Iterable[Mapping[str, Any]]) -> Holdout:
    """Leave-one-out with validation: each user's last item is the test target, the one before it the validation target.

    Models train on everything before the validation target. Users with two events give a test case only
    (their first event trains); users with one event only train.

    Raises:
        NotEnoughDataError: no user has three events.
    """
    lines = build_scenario_timelines(events)
    test = leave_one_out_lines(lines)
    val = leave_one_out_lines({u: line[:-1] if len(line) >= 2 else line for u, line in lines.items()})
    return Holdout(val, replace(test, train=val.train, min_ts=val.min_ts, max_ts=val.max_ts))


def time_holdout(
    events: Iterable[Mapping[str, Any]],
    test_fraction: float = 0.2,
    validation_fraction: float = VALIDATION_FRACTION,
    core: int = 1,
) -> Holdout:
    """The time split without the future: validation is the last part of the training period.

    Events before the ``1 - test_fraction - validation_fraction`` quantile of event times train, after the
    ``core`` filter (:func:`~model_export.data.datasets.k_core`) computed on those events alone: whether a
    user or an item trains never depends on a later event. Events from there to the ``1 - test_fraction``
    quantile are the validation cases, every later event a test case (module docstring: each with all of
    the user's earlier events as history, unfiltered). An item without training events is new to every
    model, however often it is rated later.

    Raises:
        NotEnoughDataError: too few events for the three periods.
    """
    events = list(events)
    lines = build_scenario_timelines(events)
    all_ts = sorted(ts for line in lines.values() for ts, _, _ in line)
    if len(all_ts) < 3:
        msg = f"{len(all_ts)} events cannot be split into training, validation and test"
        raise NotEnoughDataError(msg)
    test_cut = _quantile_ts(all_ts, 1.0 - test_fraction)
    val_cut = _quantile_ts(all_ts, 1.0 - test_fraction - validation_fraction)
    kept = k_core([e for e in events if int(e["ts"]) < val_cut], core)
    train_lines = build_scenario_timelines(kept)
    train = {u: [item for _, item, _ in line] for u, line in train_lines.items()}
    train_ts = [ts for line in train_lines.values() for ts, _, _ in line]
    before_test = {u: [x for x in line if x[0] < test_cut] for u, line in lines.items()}
    val = _split_at({u: line for u, line in before_test.items() if line}, val_cut, train, train_ts)
    return Holdout(val, _split_at(lines, test_cut, train, train_ts))


def holdout(
    events: Iterable[Mapping[str, Any]],
    protocol: str,
    test_fraction: float = 0.2,
    validation_fraction: float = VALIDATION_FRACTION,
    core: int = 1,
) -> Holdout:
    """The :class:`Holdout` of ``protocol``; ``core`` filters the training period of ``time`` only.

    ``loo`` takes its events as given (the literature filters the whole data set first, which is harmless
    there: no later period is held out).
    """
    if protocol == "loo":
        return loo_holdout(events)
    if protocol == "time":
        return time_holdout(events, test_fraction, validation_fraction, core)
    msg = f"unknown protocol {protocol!r}; use one of {PROTOCOLS}"
    raise ValueError(msg)


def item_index(train: Mapping[str, Sequence[str]]) -> list[str]:
    """The item index of a training set: item ids sorted, item ``i`` of the list is row ``i + 1``."""
    return sorted({item for seq in train.values() for item in seq})


def pick_cold_items(items: Sequence[str], fraction: float, seed: int = 0) -> frozenset[str]:
    """A seeded random ``fraction`` of an item index, to hide from training (the cold-start measurement).

    The pick depends on the set of items and the seed only (the ids are sorted first).

    Raises:
        ValueError: ``fraction`` is not in [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        msg = f"cold fraction must be in [0, 1), got {fraction}"
        raise ValueError(msg)
    pool = sorted(set(items))
    n = round(len(pool) * fraction)
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return frozenset(pool[i] for i in picked)


def hide_items(split: Split, hidden: Collection[str]) -> Split:
    """The split with every event of ``hidden`` items removed from its training data only.

    Training sequences skip those items (a user left with none drops out of ``train``); the full
    sequences, times, scenarios and test cases are unchanged, so the same cases are measured and
    a case's history still holds the hidden items the user met, as the stream would.
    ``min_ts``/``max_ts`` keep describing the unfiltered training window.
    """
    hidden = frozenset(hidden)
    train = {u: kept for u, seq in split.train.items() if (kept := [i for i in seq if i not in hidden])}
    return replace(split, train=train)


