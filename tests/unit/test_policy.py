"""The policy stage (serving.policy): rules, the repeat rule, diversity, explanations, hot reload."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from serving.policy import ItemFacts, Policy, PolicySource, UserContext, excluded, item_facts
from streamrec.config import ConfigError, PolicyConfig, RulesConfig, load_config

# Items a..f: a, b, c are one series ("Saga"), d, e, f another genre each.
FACTS = {
    "a": ItemFacts(("Saga",), {"available": True}, 0),
    "b": ItemFacts(("Saga",), {}, 0),
    "c": ItemFacts(("Saga",), {"available": False}, 0),
    "d": ItemFacts(("Drama",), {}, 5_000),
    "e": ItemFacts(("Comedy",), {}, 0),
    "f": ItemFacts(("Horror",), {}, 0),
}
CANDIDATES = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0), ("e", 5.0), ("f", 4.0)]
# Rows: a, b, c nearly the same direction; d, e, f each their own; h1 is like a, h2 like e.
ROWS = {
    "a": [1.0, 0.0, 0.0, 0.0], "b": [0.99, 0.1, 0.0, 0.0], "c": [0.98, 0.0, 0.1, 0.0],
    "d": [0.0, 1.0, 0.0, 0.0], "e": [0.0, 0.0, 1.0, 0.0], "f": [0.0, 0.0, 0.0, 1.0],
    "h1": [0.9, 0.1, 0.0, 0.0], "h2": [0.0, 0.1, 0.9, 0.0],
}


def vectors(ids):  # noqa: ANN001, ANN201
    return np.array([ROWS.get(i, [0.0] * 4) for i in ids], dtype=np.float32)


def user(**kw) -> UserContext:  # noqa: ANN003
    base = {"user_id": "u", "scenario": "web", "history": ["h1", "h2"], "newest_ts": 10_000}
    return UserContext(**{**base, **kw})


def ranked(r: RulesConfig, k: int = 4, u: UserContext | None = None, now_ms: int = 0, **kw) -> list[str]:  # noqa: ANN003
    out = Policy(PolicyConfig()).rank(u or user(), CANDIDATES, k, r, FACTS.get, vectors, now_ms=now_ms, **kw)
    return [e["item_id"] for e in out]


def rules(**kw) -> RulesConfig:  # noqa: ANN003
    """Rules with only what a test names (the served default re-ranks for diversity)."""
    return RulesConfig.model_validate({"diversity": 0.0, **kw})


PLAIN = rules(explain=False, repeat_impressions=None)


def test_plain_rules_keep_the_model_order_and_are_skipped() -> None:
    assert ranked(PLAIN) == ["a", "b", "c", "d"]
    assert Policy.plain(PLAIN, user())
    assert not Policy.plain(RulesConfig(), user())  # explanations and diversity are on by default


def test_exclude_by_attribute_drops_the_item_and_the_api_check_agrees() -> None:
    r = rules(exclude=[{"attribute": "available", "equals": False}], explain=False)
    assert ranked(r) == ["a", "b", "d", "e"]
    assert excluded(r, "c", FACTS["c"]) and not excluded(r, "a", FACTS["a"])
    assert not excluded(r, "zz", None)  # an unknown item has no attribute to match


def test_pins_go_first_unless_seen_excluded_or_unknown() -> None:
    r = rules(pins=["f", "e", "c", "x"], exclude=[{"item_ids": ["c"]}], explain=True, repeat_impressions=None)
    out = Policy(PolicyConfig()).rank(user(seen={"e"}), CANDIDATES, 4, r, FACTS.get, vectors,
                                      recommendable=lambda i: i != "x")
    assert [e["item_id"] for e in out] == ["f", "a", "b", "d"]
    assert out[0]["reason"] == {"kind": "pin"} and out[0]["score"] == 4.0


def test_boost_and_freshness_change_the_order_with_their_reason() -> None:
    r = rules(boosts=[{"name": "comedy-week", "when": {"category": "Comedy"}, "by": 0.75}], fresh_boost=0.5,
              fresh_hours=1.0, repeat_impressions=None)
    out = Policy(PolicyConfig()).rank(user(), CANDIDATES, 3, r, FACTS.get, vectors)
    assert [e["item_id"] for e in out] == ["a", "e", "d"]  # e: 0.2 + 0.75, d: 0.4 + 0.5 (fresh: 5 s old)
    assert out[1]["reason"] == {"kind": "rule", "rule": "comedy-week"}
    assert out[2]["reason"] == {"kind": "new"}
    assert out[0]["reason"] == {"kind": "history", "item_id": "h1"}  # "because you watched h1"


def test_category_cap_and_diversity_break_up_a_series() -> None:
    assert ranked(rules(max_per_category=1, explain=False, repeat_impressions=None)) == ["a", "d", "e", "f"]
    diverse = ranked(rules(diversity=0.7, explain=False, repeat_impressions=None))
    assert diverse[0] == "a" and len({i for i in diverse if FACTS[i].categories == ("Saga",)}) < 3


def test_an_item_shown_too_often_without_an_action_is_demoted_until_it_cools() -> None:
    r = rules(repeat_impressions=3, repeat_cooldown_s=60, explain=False)
    shown = {"a": (3, 1_000_000), "b": (2, 1_000_000)}
    u = user(shown=shown)
    assert not Policy.plain(r, u) and Policy.plain(r, user(shown={"b": (2, 1_000_000)}))
    assert ranked(r, k=6, u=u, now_ms=1_030_000) == ["b", "c", "d", "e", "f", "a"]  # demoted, last
    assert ranked(r, k=6, u=u, now_ms=1_061_000)[0] == "a"  # cooled down


def test_rule_sets_and_scenarios_choose_the_rules() -> None:
    cfg = PolicyConfig.model_validate({"scenarios": {"app": {"diversity": 0.5}}, "rule_sets": {"x": {"pins": ["f"]}}})
    p = Policy(cfg)
    assert p.rules("app").diversity == 0.5 and p.rules("web") == RulesConfig()
    assert p.rules("web", "x").pins == ["f"]
    with pytest.raises(ValueError, match="no rule set"):
        PolicyConfig.model_validate({"experiments": [{"name": "e", "arms": {"a": {"rules": "nope"}, "b": {}}}]})


def test_item_facts_read_item_records_and_redis_hashes() -> None:
    assert item_facts({"categories": '["A"]', "attributes": '{"available": false}', "ts": 5}) == ItemFacts(
        ("A",), {"available": False}, 5)
    assert item_facts({"item_id": "i", "categories": ["A"], "attributes": {}, "ts": 0}) == ItemFacts(("A",), {}, 0)
    assert item_facts(None) is None


def test_the_policy_file_hot_reloads_and_a_bad_one_is_refused(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    f = tmp_path / "policy.yaml"
    f.write_text("default:\n  pins: [f]\n")
    src = PolicySource(PolicyConfig(reload_interval_s=0.01), f)
    assert src.get().rules("web").pins == ["f"]
    time.sleep(0.02)
    f.write_text("default:\n  pins: [e]\n  max_per_category: 2\n")
    assert src.get().rules("web").pins == ["e"]
    time.sleep(0.02)
    with caplog.at_level(logging.ERROR):
        f.write_text("default:\n  diversity: 7\n")  # out of range
        assert src.get().rules("web").pins == ["e"]  # the policy in force stays
    assert "refused" in caplog.text


def test_the_config_loads_a_policy_section(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("policy:\n  scenarios:\n    web:\n      exclude: [{attribute: available, equals: false}]\n")
    assert load_config(f, environ={}).policy.scenarios["web"].exclude[0].attribute == "available"
    f.write_text("policy:\n  default:\n    exclude: [{}]\n")
    with pytest.raises(ConfigError, match="item condition"):
        load_config(f, environ={})
