"""A/B experiments (serving.experiments): the split, team-draft interleaving, counters and statistics."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from serving.experiments import (
    action_counts,
    assign,
    experiment_report,
    impression_counts,
    list_counts,
    sign_test_p,
    team_draft,
    two_proportion_p,
    wilson,
)
from streamrec.config import ExperimentConfig


def experiment(**kw) -> ExperimentConfig:  # noqa: ANN003
    return ExperimentConfig.model_validate({"name": "exp1", "arms": {"control": {}, "treat": {"weight": 3}}, **kw})


def test_the_split_is_stable_and_follows_the_weights() -> None:
    e = experiment()
    arms = Counter(assign([e], f"user{i}", "web").arm for i in range(20_000))
    assert abs(arms["treat"] / 20_000 - 0.75) < 0.015
    assert all(assign([e], f"user{i}", "web").arm == assign([e], f"user{i}", "web").arm for i in range(100))


def test_scenario_and_time_window_decide_who_is_in() -> None:
    now = datetime.now(UTC)
    assert assign([experiment(scenario="app")], "u", "web") is None
    assert assign([experiment(scenario="app")], "u", "app") is not None
    assert assign([experiment(start=now + timedelta(hours=1))], "u", "web") is None
    assert assign([experiment(end=now - timedelta(hours=1))], "u", "web") is None
    a = assign([experiment(interleave=True)], "u", "web")
    assert a is not None and a.label == "exp1:interleaved" and a.teams == ("control", "treat")


def test_team_draft_takes_turns_without_duplicates_and_is_reproducible() -> None:
    a = [{"item_id": i} for i in "abcdef"]
    b = [{"item_id": i} for i in "bxaycz"]
    merged = team_draft(a, b, 6, seed="u1")
    ids = [e["item_id"] for e in merged]
    assert len(set(ids)) == 6
    teams = Counter(e["team"] for e in merged)
    assert teams[0] == teams[1] == 3  # each team picks in turn
    assert merged == team_draft(a, b, 6, seed="u1")
    for e in merged:  # each pick is the best item of its team's list not yet taken
        src = a if e["team"] == 0 else b
        assert e["item_id"] in {x["item_id"] for x in src}
    # Over many users each team starts first about half the time.
    firsts = Counter(team_draft(a, b, 2, seed=f"u{i}")[0]["team"] for i in range(2000))
    assert 0.45 < firsts[0] / 2000 < 0.55


def test_counters_per_arm_from_lists_actions_and_impressions() -> None:
    shown = {
        "u1": {"items": [{"item_id": "a"}, {"item_id": "b"}], "arm": "exp1:treat"},
        "u2": {"items": [{"item_id": "c"}], "arm": "exp1:control"},
        "u3": {"items": [{"item_id": "a", "team": 0}, {"item_id": "z", "team": 1}], "arm": "il:interleaved",
               "teams": ["m1", "m2"]},
        "u4": {"items": [{"item_id": "a"}]},  # no experiment: not counted
    }
    actions = {"u1": [("b", "web"), ("q", "web")], "u2": [("q", "web")], "u3": [("z", "web")], "u4": [("a", "web")]}
    c = action_counts(actions, shown)
    assert c[("exp1", "treat", "web", "actions")] == 2 and c[("exp1", "treat", "web", "hits@10")] == 1
    assert c[("exp1", "control", "web", "actions")] == 1 and ("exp1", "control", "web", "hits@10") not in c
    assert c[("il", "m2", "web", "credit")] == 1 and c[("il", "m2", "web", "wins")] == 1
    assert not any(k[0] not in ("exp1", "il") for k in c)
    assert list_counts([("exp1:treat", "web"), (None, "web")]) == {("exp1", "treat", "web", "lists"): 1}
    imp = impression_counts([["v1", "exp1:treat", "web", 10], ["v1", "", "web", 5]])
    assert imp == {("exp1", "treat", "web", "impression_lists"): 1, ("exp1", "treat", "web", "impressions"): 10}


def test_statistics_match_hand_computed_values() -> None:
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 0.0)
    assert two_proportion_p(60, 100, 40, 100) == pytest.approx(0.0047, abs=5e-4)  # z = 2.83
    assert two_proportion_p(1, 0, 1, 1) is None
    assert sign_test_p(9, 1) == pytest.approx(0.0215, abs=1e-3)  # 2 * P(X <= 1), X ~ Bin(10, 0.5)
    assert sign_test_p(0, 0) is None


def test_the_report_compares_each_arm_with_the_control() -> None:
    counts = {"exp1": {"control": {"actions": 100, "hits@10": 40, "impressions": 1000},
                       "treat": {"actions": 100, "hits@10": 60, "impressions": 1000}}}
    r = experiment_report(counts, [experiment()])["exp1"]
    assert list(r["arms"]) == ["control", "treat"]
    assert r["arms"]["treat"]["hit_rate@10"]["value"] == 0.6
    assert r["arms"]["treat"]["ctr"]["value"] == 0.06
    assert r["arms"]["treat"]["vs_control"]["hit_rate@10_p"] == pytest.approx(0.0047, abs=5e-4)
    il = experiment_report({"il": {"m1": {"wins": 9, "credit": 12}, "m2": {"wins": 1, "credit": 2}}})["il"]
    assert il["interleave"] and il["sign_test_p"] == pytest.approx(0.0215, abs=1e-3)
