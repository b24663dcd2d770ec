"""A user's interest state, and how one event or impression changes it: the reference semantics, plain Python.

The job keeps this state on the JVM (``jobs/jvm`` ``UserState``, applied by ``UserInterest.apply`` and
``applyImpression``); ``tests/unit/test_event_rules_agree.py`` checks the two against each other on random
sequences of events and impressions, so a change here must be made there too. :data:`TYPE_WEIGHT` and
:data:`RATING_MIDPOINT` are handed to the JVM by :func:`jobs.interest.job_params`: they have one home, here.
``bench/scale.py`` measures this state's size.
"""

from __future__ import annotations

import bisect
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from streamrec.config import JobConfig
from streamrec.events import DEFAULT_SCENARIO, IMPRESSION, Event

# How much one action says about interest; a rating's weight is its value relative to the scale's middle.
TYPE_WEIGHT = {"view": 1.0, "click": 2.0, "cart": 3.0, "purchase": 5.0, "skip": -1.0}
RATING_MIDPOINT = 2.5
MS_PER_HOUR = 3_600_000


@dataclass(slots=True)
class UserState:
    """A user's interest state, stored as one pickled value (one state access per event)."""

    user_id: str
    events: int = 0
    last_ts: int = 0
    # (ts, item_id, scenario), in event-time order, the last `recent_items` only.
    recent: list[tuple[int, str, str]] = field(default_factory=list)
    # Every item the user interacted with (insertion-ordered, capped): never recommended back.
    seen: dict[str, None] = field(default_factory=dict)
    # Time-decayed interest per facet ("scenario:web", "category:Drama"), valid at `interests_ts`.
    interests: dict[str, float] = field(default_factory=dict)
    interests_ts: int = 0
    # (item_id, scenario) of the event just applied (None for a skip): the writer scores it against the
    # recommendations the user had then (the online hit rate).
    last_action: tuple[str, str] | None = None
    # Item -> times shown (in impressions) without an action on it since; least recently shown first, capped at
    # job.max_shown_items. What the policy's repeat rule reads: a list the user keeps ignoring is demoted.
    shown: dict[str, int] = field(default_factory=dict)
    # Item of `shown` -> the latest event time it was shown at: the repeat rule's cooling period runs from it.
    shown_ts: dict[str, int] = field(default_factory=dict)
    # Impression records applied (lists shown). Not actions: `events` does not count them.
    impressions: int = 0

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # A slots object pickles as (None, {field: value}); a state pickled before a field was added
        # (an older checkpoint or savepoint) gets that field's default.
        values = state[1]
        for f in fields(self):
            if f.name in values:
                value = values[f.name]
            else:
                value = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(self, f.name, value)
        # Entries before the scenario was kept were (ts, item_id).
        self.recent = [e if len(e) == 3 else (e[0], e[1], DEFAULT_SCENARIO) for e in self.recent]

    def recent_items(self) -> list[str]:
        """Item ids, oldest first."""
        return [e[1] for e in self.recent]

    def recent_times(self) -> list[int]:
        """Event times of :meth:`recent_items` (epoch ms)."""
        return [e[0] for e in self.recent]

    def recent_scenarios(self) -> list[str]:
        """Scenarios of :meth:`recent_items`."""
        return [e[2] for e in self.recent]

    def top_interests(self, n: int) -> dict[str, float]:
        """The n strongest facets (by magnitude: a negative weight is a dislike), strongest first."""
        return dict(sorted(self.interests.items(), key=lambda kv: -abs(kv[1]))[:n])


def event_weight(ev: Event) -> float:
    """The interest signal of one event."""
    if ev.type == "rating":
        return (ev.value if ev.value is not None else RATING_MIDPOINT) - RATING_MIDPOINT
    return TYPE_WEIGHT[ev.type]


def apply_impression(state: UserState, ev: Event, max_shown: int) -> None:
    """Apply one impression to the state, in place: each distinct item shown counts once more.

    The items become the most recently shown, in the list's order; beyond ``max_shown`` the least recently shown
    go. An impression is not an action: ``events``, ``recent``, ``seen``, ``interests``, ``last_ts`` and
    ``last_action`` stay as they are.
    """
    state.impressions += 1
    for item in dict.fromkeys(ev.items):  # an item twice in one list was shown once
        state.shown[item] = state.shown.pop(item, 0) + 1
        state.shown_ts[item] = max(state.shown_ts.pop(item, 0), ev.ts)  # a late impression keeps the latest
    for old in list(state.shown)[: max(0, len(state.shown) - max_shown)]:
        del state.shown[old]
        state.shown_ts.pop(old, None)


def apply_event(state: UserState, ev: Event, cfg: JobConfig, facets: tuple[str, ...] = ()) -> None:
    """Apply one event to the state, in place. Out-of-order events land at their event-time position.

    An impression goes to :func:`apply_impression` (``facets`` unused). An action (any type but skip) on an item
    removes the item from ``shown``: it was acted on.
    """
    if ev.type == IMPRESSION:
        apply_impression(state, ev, cfg.max_shown_items)
        return
    state.events += 1
    state.last_ts = max(state.last_ts, ev.ts)
    state.last_action = None if ev.type == "skip" else (ev.item_id, ev.scenario or DEFAULT_SCENARIO)
    if ev.type != "skip":
        entry = (ev.ts, ev.item_id, ev.scenario or DEFAULT_SCENARIO)
        if not state.recent or ev.ts >= state.recent[-1][0]:
            state.recent.append(entry)
        else:
            bisect.insort_right(state.recent, entry, key=lambda e: e[0])
        del state.recent[: max(0, len(state.recent) - cfg.recent_items)]
        state.shown.pop(ev.item_id, None)
        state.shown_ts.pop(ev.item_id, None)
        state.seen.pop(ev.item_id, None)
        state.seen[ev.item_id] = None
        overflow = len(state.seen) - cfg.max_seen_items
        for old in list(state.seen)[: max(0, overflow)]:
            del state.seen[old]
    half_life_ms = cfg.interest_half_life_hours * MS_PER_HOUR
    weight = event_weight(ev)
    if ev.ts >= state.interests_ts:
        decay = 0.5 ** ((ev.ts - state.interests_ts) / half_life_ms)
        state.interests = {k: v * decay for k, v in state.interests.items() if abs(v * decay) > 1e-6}
        state.interests_ts = ev.ts
    else:  # a late event counts as much as it would have decayed to by now
        weight *= 0.5 ** ((state.interests_ts - ev.ts) / half_life_ms)
    for facet in (f"scenario:{ev.scenario or DEFAULT_SCENARIO}", *facets):
        state.interests[facet] = state.interests.get(facet, 0.0) + weight
