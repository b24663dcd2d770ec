"""The Python stage's batch logic (jobs.batch_writer), without Flink: one record per user, forget order."""

from __future__ import annotations

from jobs.batch_writer import merge_records


def rec(user: str, n: int, actions: list[list[str]], forgotten: bool = False) -> dict:
    out = {"u": user, "n": n, "r": "[]", "s": "[]", "a": actions}
    if forgotten:
        out["f"] = True
    return out


def test_the_newest_record_wins_and_actions_add_up() -> None:
    merged = merge_records([rec("u1", 2, [["i1", "web"]]), rec("u2", 1, []), rec("u1", 5, [["i2", "app"]])])
    assert merged["u1"]["n"] == 5
    assert merged["u1"]["a"] == [["i1", "web"], ["i2", "app"]]
    assert merged["u2"]["n"] == 1


def test_a_forget_drops_what_came_before_it_but_keeps_the_flag() -> None:
    merged = merge_records([rec("u1", 3, [["i1", "web"]]), rec("u1", 1, [["i9", "web"]], forgotten=True),
                            rec("u1", 2, [["i8", "web"]])])
    assert merged["u1"]["f"] is True  # the writer deletes the old keys first
    assert merged["u1"]["n"] == 2
    assert merged["u1"]["a"] == [["i9", "web"], ["i8", "web"]]  # only actions after the forget
