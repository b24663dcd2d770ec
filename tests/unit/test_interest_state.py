"""The reference semantics of the per-user interest state (:func:`jobs.state.apply_event`), without Flink."""

from __future__ import annotations

import pytest

from jobs.state import (
    MS_PER_HOUR,
    RATING_MIDPOINT,
    TYPE_WEIGHT,
    UserState,
    apply_event,
    apply_impression,
    event_weight,
)
from streamrec.config import JobConfig
from streamrec.events import IMPRESSION, Event

CFG = JobConfig(recent_items=3, max_seen_items=4, interest_half_life_hours=2.0)
HALF_LIFE_MS = 2 * MS_PER_HOUR
T0 = 1_700_000_000_000


def ev(item: str, ts: int, etype: str = "view", **kw: object) -> Event:
    return Event("u1", item, etype, ts, **kw)  # type: ignore[arg-type]


def run(*events: Event, cfg: JobConfig = CFG, facets: tuple[str, ...] = ()) -> UserState:
    state = UserState("u1")
    for e in events:
        apply_event(state, e, cfg, facets)
    return state


def test_fresh_state() -> None:
    s = UserState("u1")
    assert (s.events, s.last_ts, s.recent, s.seen, s.interests, s.interests_ts) == (0, 0, [], {}, {}, 0)
    assert s.recent_items() == []


def test_counts_events_and_keeps_max_ts() -> None:
    s = run(ev("a", T0 + 50), ev("b", T0 + 10), ev("c", T0 + 30))
    assert s.events == 3
    assert s.last_ts == T0 + 50


def test_recent_keeps_last_l_in_event_time_order() -> None:
    s = run(*(ev(f"i{n}", T0 + n) for n in range(6)))
    assert s.recent_items() == ["i3", "i4", "i5"]
    assert s.recent == [(T0 + 3, "i3", "default"), (T0 + 4, "i4", "default"), (T0 + 5, "i5", "default")]
    assert s.recent_times() == [T0 + 3, T0 + 4, T0 + 5] and s.recent_scenarios() == ["default"] * 3


def test_out_of_order_event_lands_at_its_time_position() -> None:
    s = run(ev("a", T0 + 10), ev("c", T0 + 30), ev("b", T0 + 20))
    assert s.recent_items() == ["a", "b", "c"]
    s = run(ev("b", T0 + 20), ev("c", T0 + 30), ev("a", T0 + 10))
    assert s.recent_items() == ["a", "b", "c"]


def test_late_event_older_than_the_window_is_dropped_from_recent() -> None:
    s = run(ev("b", T0 + 20), ev("c", T0 + 30), ev("d", T0 + 40), ev("a", T0 + 10))
    assert s.recent_items() == ["b", "c", "d"]
    assert s.events == 4 and "a" in s.seen


def test_late_event_evicts_the_oldest_when_full() -> None:
    s = run(ev("a", T0 + 10), ev("c", T0 + 30), ev("d", T0 + 40), ev("b", T0 + 20))
    assert s.recent_items() == ["b", "c", "d"]


def test_equal_timestamps_keep_arrival_order() -> None:
    s = run(ev("x", T0 + 5), ev("a", T0 + 10), ev("b", T0 + 10), ev("c", T0 + 5))
    assert s.recent_items() == ["c", "a", "b"]


def test_skip_is_counted_but_not_recent_or_seen() -> None:
    s = run(ev("a", T0), ev("s", T0 + 1, "skip"), ev("b", T0 + 2))
    assert s.events == 3 and s.last_ts == T0 + 2
    assert s.recent_items() == ["a", "b"]
    assert list(s.seen) == ["a", "b"]
    assert "s" not in s.seen


def test_seen_is_capped_dropping_the_oldest() -> None:
    s = run(*(ev(f"i{n}", T0 + n) for n in range(6)))
    assert list(s.seen) == ["i2", "i3", "i4", "i5"]


def test_reinteraction_moves_item_to_newest_in_seen() -> None:
    s = run(ev("a", T0), ev("b", T0 + 1), ev("c", T0 + 2), ev("d", T0 + 3), ev("a", T0 + 4), ev("e", T0 + 5))
    # "a" was refreshed, so "b" is the oldest and is the one dropped
    assert list(s.seen) == ["c", "d", "a", "e"]
    assert s.recent_items() == ["d", "a", "e"]


def test_same_item_twice_appears_twice_in_recent_once_in_seen() -> None:
    s = run(ev("a", T0), ev("a", T0 + 1))
    assert s.recent_items() == ["a", "a"]
    assert list(s.seen) == ["a"]


def test_first_event_sets_interest_without_decay() -> None:
    s = run(ev("a", T0, "purchase", scenario="web"))
    assert s.interests == {"scenario:web": TYPE_WEIGHT["purchase"]}
    assert s.interests_ts == T0


def test_weight_halves_after_one_half_life() -> None:
    s = run(ev("a", T0, "click"), ev("b", T0 + HALF_LIFE_MS, "view", scenario="app"))
    assert s.interests["scenario:default"] == pytest.approx(TYPE_WEIGHT["click"] / 2)
    assert s.interests["scenario:app"] == pytest.approx(TYPE_WEIGHT["view"])
    assert s.interests_ts == T0 + HALF_LIFE_MS


def test_half_life_comes_from_config() -> None:
    cfg = JobConfig(interest_half_life_hours=1.0)
    s = run(ev("a", T0, "cart"), ev("b", T0 + 2 * MS_PER_HOUR, "view", scenario="x"), cfg=cfg)
    assert s.interests["scenario:default"] == pytest.approx(TYPE_WEIGHT["cart"] / 4)


def test_decay_accumulates_on_the_same_facet() -> None:
    s = run(ev("a", T0, "view"), ev("b", T0 + HALF_LIFE_MS, "view"), ev("c", T0 + 2 * HALF_LIFE_MS, "view"))
    assert s.interests["scenario:default"] == pytest.approx(0.25 + 0.5 + 1.0)


def test_late_event_weight_is_decayed_and_clock_stays() -> None:
    s = run(ev("a", T0 + HALF_LIFE_MS, "view", scenario="web"), ev("b", T0, "purchase", scenario="app"))
    assert s.interests_ts == T0 + HALF_LIFE_MS
    assert s.interests["scenario:web"] == pytest.approx(1.0)
    assert s.interests["scenario:app"] == pytest.approx(TYPE_WEIGHT["purchase"] / 2)


def test_order_of_arrival_does_not_change_interests() -> None:
    a, b = ev("a", T0, "click"), ev("b", T0 + 3 * HALF_LIFE_MS, "cart")
    assert run(a, b).interests == pytest.approx(run(b, a).interests)


def test_skip_lowers_interest() -> None:
    s = run(ev("a", T0, "view"), ev("b", T0, "skip"))
    assert s.interests["scenario:default"] == pytest.approx(TYPE_WEIGHT["view"] + TYPE_WEIGHT["skip"])
    assert TYPE_WEIGHT["skip"] < 0


def test_negligible_interest_is_pruned() -> None:
    s = run(ev("a", T0, "view", scenario="old"), ev("b", T0 + 40 * HALF_LIFE_MS, "view"))
    assert "scenario:old" not in s.interests


def test_extra_facets_get_the_same_weight() -> None:
    s = run(ev("a", T0, "cart"), facets=("category:Drama", "category:War"))
    assert s.interests == {"scenario:default": 3.0, "category:Drama": 3.0, "category:War": 3.0}


@pytest.mark.parametrize(("value", "weight"), [(5.0, 2.5), (2.5, 0.0), (1.0, -1.5), (0.0, -2.5), (None, 0.0)])
def test_rating_weight_is_relative_to_the_midpoint(value: float | None, weight: float) -> None:
    e = ev("a", T0, "rating", value=value)
    assert event_weight(e) == pytest.approx(weight)
    assert RATING_MIDPOINT == 2.5
    assert run(e).interests["scenario:default"] == pytest.approx(weight)


@pytest.mark.parametrize("etype", sorted(TYPE_WEIGHT))
def test_event_weight_by_type(etype: str) -> None:
    assert event_weight(ev("a", T0, etype)) == TYPE_WEIGHT[etype]


def test_purchase_outweighs_click_outweighs_view() -> None:
    assert TYPE_WEIGHT["purchase"] > TYPE_WEIGHT["cart"] > TYPE_WEIGHT["click"] > TYPE_WEIGHT["view"] > 0


def test_event_at_epoch_zero_still_decays() -> None:
    s = run(ev("a", 0, "view"), ev("b", HALF_LIFE_MS, "view", scenario="x"))
    assert s.interests["scenario:default"] == pytest.approx(0.5)


def test_last_action_is_the_event_just_applied_with_its_scenario() -> None:
    state = run(ev("a", T0, scenario="app"), ev("b", T0 + 1))
    assert state.last_action == ("b", "default")
    apply_event(state, ev("c", T0 + 2, etype="skip"), CFG)
    assert state.last_action is None  # a skip is not an action a recommendation could have led to


def test_state_survives_pickle_and_an_older_pickle_gets_new_fields_defaults() -> None:
    import pickle

    state = run(ev("a", T0, scenario="app"), ev("b", T0 + 1))
    assert pickle.loads(pickle.dumps(state)) == state
    # A state pickled before `last_action` existed (an older checkpoint): slots objects pickle as (None, dict).
    _, fields = state.__getstate__()  # type: ignore[misc]
    old = {k: v for k, v in fields.items() if k != "last_action"}
    restored = UserState.__new__(UserState)
    restored.__setstate__((None, old))
    assert restored.last_action is None
    assert restored.recent == state.recent and restored.events == 2
    # ... and one pickled when recent entries were (ts, item_id) gets the default scenario.
    older = {**old, "recent": [(ts, item) for ts, item, _ in state.recent]}
    restored.__setstate__((None, older))
    assert restored.recent_scenarios() == ["default", "default"] and restored.recent_items() == ["a", "b"]




# --- impressions: shown without an action since ---------------------------------------------------------------


def shown(*items: str, ts: int = T0, **kw: object) -> Event:
    return Event("u1", "", IMPRESSION, ts, items=items, **kw)  # type: ignore[arg-type]


def test_an_impression_counts_each_item_and_is_no_action() -> None:
    s = run(ev("a", T0, "click", scenario="web"))
    before = (s.events, s.last_ts, list(s.recent), dict(s.seen), dict(s.interests), s.interests_ts, s.last_action)
    apply_event(s, shown("b", "c", ts=T0 + 5, arm="exp:a"), CFG)
    apply_event(s, shown("c", "d", "c", ts=T0 + 6), CFG)  # c twice in one list: shown once more
    assert s.shown == {"b": 1, "c": 2, "d": 1} and list(s.shown) == ["b", "c", "d"]  # least recently shown first
    assert s.impressions == 2
    assert (s.events, s.last_ts, s.recent, s.seen, s.interests, s.interests_ts, s.last_action) == before


def test_an_action_on_a_shown_item_clears_its_count_and_a_skip_does_not() -> None:
    s = run(shown("a", "b", "c"), shown("a"))
    apply_event(s, ev("a", T0 + 1, "view"), CFG)
    apply_event(s, ev("b", T0 + 2, "skip"), CFG)
    apply_event(s, ev("c", T0 + 3, "rating", value=1.0), CFG)  # a rating is an action, even a bad one
    apply_event(s, ev("z", T0 + 4, "purchase"), CFG)  # never shown: nothing to clear
    assert s.shown == {"b": 1}
    apply_event(s, shown("a", ts=T0 + 5), CFG)
    assert s.shown == {"b": 1, "a": 1}  # shown again after the action: counting from one
    assert s.impressions == 3 and s.events == 4


def test_the_shown_map_is_capped_dropping_the_least_recently_shown() -> None:
    s = UserState("u1")
    apply_impression(s, shown("a", "b", "c"), max_shown=3)
    apply_impression(s, shown("d"), max_shown=3)
    assert list(s.shown) == ["b", "c", "d"]
    apply_impression(s, shown("b"), max_shown=3)  # shown again: the most recent now
    assert list(s.shown) == ["c", "d", "b"] and s.shown["b"] == 2
    apply_impression(s, shown("e", "f", "g", "h"), max_shown=3)
    assert s.shown == {"f": 1, "g": 1, "h": 1}
    s = UserState("u1")
    for n in range(CFG.max_shown_items + 50):  # apply_event uses the job's cap
        apply_event(s, shown(f"i{n}"), CFG)
    assert len(s.shown) == CFG.max_shown_items and next(iter(s.shown)) == "i50"


def test_an_older_pickle_gets_the_impression_fields_defaults() -> None:
    import pickle

    state = run(ev("a", T0), shown("b"))
    assert pickle.loads(pickle.dumps(state)) == state
    _, fields = state.__getstate__()  # type: ignore[misc]
    restored = UserState.__new__(UserState)
    restored.__setstate__((None, {k: v for k, v in fields.items() if k not in ("shown", "impressions")}))
    assert restored.shown == {} and restored.impressions == 0 and restored.events == 1
