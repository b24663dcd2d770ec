"""One rule set, two readers: the producer SDK's parser (streamrec.events) and the stream's JVM decoder
(jobs/jvm EventContract) agree on every record of the fuzz corpus (events, impressions and items), and the JVM
interest state agrees with jobs.state.apply_event / apply_impression. The JVM side runs as ``java ...
ContractCli`` on the jar `make setup` builds."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from typing import Any

import pytest
from hypothesis import given, settings

from infra.flink_cluster import flink_home
from infra.jars import job_jar
from jobs.state import RATING_MIDPOINT, TYPE_WEIGHT, UserState, apply_event, apply_impression
from serving.store import INTEREST_DECIMALS, UserView, decode_user, key
from streamrec.config import PROJECT_ROOT, JobConfig
from streamrec.events import (
    DEFAULT_SCENARIO,
    FORGET,
    IMPRESSION,
    Event,
    InvalidRecordError,
    parse_event,
    parse_item,
)
from tests.unit.test_events_fuzz import EVENT_FIELDS, FUZZ, IMPRESSION_FIELDS, ITEM_FIELDS, NOW, records

# The same corpus every run: a random draw of 200 records now and then holds no valid event at all, and the
# check that the corpus has both kinds must not depend on the draw.
CORPUS = settings(FUZZ, derandomize=True)


def java(mode: str, arg: str, lines: list[str]) -> list[dict[str, Any]]:
    jar = job_jar(PROJECT_ROOT / ".cache" / "jars")
    classpath = ":".join([str(jar), *map(str, sorted((flink_home() / "lib").glob("*.jar")))])
    proc = subprocess.run(
        ["java", "-cp", classpath, "io.streamrec.jobs.ContractCli", mode, arg],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def python_verdict(raw: bytes) -> dict[str, Any]:
    try:
        ev = parse_event(raw, now_ms=NOW)
    except InvalidRecordError as exc:
        return {"ok": False, "reason": exc.reason}
    return {"ok": True, "user_id": ev.user_id, "item_id": ev.item_id, "type": ev.type, "ts": ev.ts,
            "value": ev.value, "scenario": ev.scenario, "event_id": ev.event_id, "items": list(ev.items),
            "model_version": ev.model_version, "arm": ev.arm}


HAND_PICKED = [
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"event_id":"e-1"}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"event_id":""}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"event_id":null}',
    b'{"user_id":"u1","type":"forget","ts":5}',
    b'{"user_id":"\\u3000","item_id":"i1","type":"view","ts":5}',
    b'{"user_id":"a\\u00a0","item_id":"i1","type":"view","ts":5}',
    b'{"user_id":"u1","item_id":"i1","type":"rating","ts":5,"value":1e400}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5} {}',
    b'\xef\xbb\xbf{"user_id":"u1","item_id":"i1","type":"view","ts":5}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"x":"\\ud800"}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"x":"\\ud83c\\udfac"}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":-0}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5.0}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"scenario":""}',
    b"",
    b"[" * 500 + b"]" * 500,
    b"[" * 501 + b"]" * 501,
    b'{"context":' * 499 + b'{"user_id":"u1","item_id":"i1","type":"view","ts":5}' + b"}" * 499,
    b'{"context":' * 500 + b'{"user_id":"u1","item_id":"i1","type":"view","ts":5}' + b"}" * 500,
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"x":' + b"1" * 4300 + b"}",
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"x":' + b"1" * 4301 + b"}",
    # Impressions: valid ones, and each of their faults.
    b'{"user_id":"u1","type":"impression","items":["i1","i2"],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"model_version":"v3","arm":"exp:a","scenario":"web",'
    b'"event_id":"e1","context":{"page":2},"value":1}',
    b'{"user_id":"u1","type":"impression","items":["i1","i1"],"ts":5,"model_version":null,"arm":null}',
    b'{"user_id":"u1","type":"impression","items":' + json.dumps([f"i{n}" for n in range(100)]).encode() + b',"ts":5}',
    b'{"user_id":"u1","type":"impression","items":' + json.dumps([f"i{n}" for n in range(101)]).encode() + b',"ts":5}',
    b'{"user_id":"u1","type":"impression","items":[],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":"i1","ts":5}',
    b'{"user_id":"u1","type":"impression","items":{"i1":1},"ts":5}',
    b'{"user_id":"u1","type":"impression","ts":5}',
    b'{"user_id":"u1","type":"impression","items":null,"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1",""],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1","\\u3000"],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1",7],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1",null],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["a\\u0085"],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["' + b"x" * 257 + b'"],"ts":5}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"item_id":"i1"}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"item_id":null}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"model_version":""}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"model_version":3}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"arm":"' + "🎬".encode() * 256 + b'"}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"arm":"' + "🎬".encode() * 257 + b'"}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"arm":["a"]}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":-1}',
    b'{"user_id":"u1","type":"impression","items":["i1"]}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"scenario":""}',
    b'{"user_id":"u1","type":"impression","items":["i1"],"ts":5,"event_id":""}',
    b'{"user_id":"","type":"impression","items":["i1"],"ts":5}',
    b'{"type":"impression","items":["i1"],"ts":5}',
    b'{"user_id":"u1","type":"Impression","items":["i1"],"ts":5}',
    b'{"user_id":"u1","item_id":"i1","type":"view","ts":5,"items":[7],"arm":""}',  # unknown fields of an action
]


def same(py: dict[str, Any], jv: dict[str, Any], raw: bytes) -> None:
    assert py["ok"] == jv["ok"], (raw[:300], py, jv)
    if py["ok"]:
        assert py == jv, raw[:300]
    elif py["reason"].startswith("field '") and not py["reason"].startswith("field 'type'"):
        assert py["reason"] == jv["reason"], raw[:300]  # the same words (a type's repr is Python's own)


def test_hand_picked_records_agree() -> None:
    got = java("validate", str(NOW), [base64.b64encode(r).decode() for r in HAND_PICKED])
    for raw, jv in zip(HAND_PICKED, got, strict=True):
        same(python_verdict(raw), jv, raw)


def test_fuzz_corpus_agrees() -> None:
    corpus: list[bytes] = []

    @CORPUS
    @given(raw=records(EVENT_FIELDS))
    def gather(raw: bytes) -> None:
        corpus.append(raw)

    gather()
    got = java("validate", str(NOW), [base64.b64encode(r).decode() for r in corpus])
    assert len(got) == len(corpus) > 100
    for raw, jv in zip(corpus, got, strict=True):
        same(python_verdict(raw), jv, raw)
    assert any(v["ok"] for v in got) and not all(v["ok"] for v in got)  # the corpus has both kinds


def test_impression_fuzz_corpus_agrees() -> None:
    corpus: list[bytes] = []

    @CORPUS
    @given(raw=records(IMPRESSION_FIELDS))
    def gather(raw: bytes) -> None:
        corpus.append(raw)

    gather()
    got = java("validate", str(NOW), [base64.b64encode(r).decode() for r in corpus])
    assert len(got) == len(corpus) > 100
    for raw, jv in zip(corpus, got, strict=True):
        same(python_verdict(raw), jv, raw)
    assert any(v["ok"] and v["type"] == IMPRESSION for v in got) and not all(v["ok"] for v in got)


def python_item_verdict(raw: bytes) -> dict[str, Any]:
    try:
        return {"ok": True, "item_id": parse_item(raw).item_id}
    except InvalidRecordError as exc:
        return {"ok": False, "reason": exc.reason}


ITEMS_PICKED = [
    b'{"item_id":"i1","title":"Heat"}',
    b'{"item_id":"i1","title":"Heat","categories":false,"attributes":0,"text":null}',
    b'{"item_id":"i1","title":" \\t\\u3000"}',
    b'{"item_id":"i1","title":"Heat","categories":"Drama"}',
    b'{"item_id":"i1","title":"Heat","categories":["Drama",""]}',
    b'{"item_id":"i1","title":"Heat","ts":-1}',
    b'{"item_id":"i1","title":"Heat","ts":null}',
    b'{"item_id":"i1","title":"Heat","attributes":[1]}',
    b'{"item_id":"i1","title":"' + b"x" * 1025 + b'"}',
    b'{"item_id":"i1","title":"Heat","text":"' + b"x" * 10_001 + b'"}',
]


def test_items_agree() -> None:
    corpus: list[bytes] = list(ITEMS_PICKED)

    @CORPUS
    @given(raw=records(ITEM_FIELDS))
    def gather(raw: bytes) -> None:
        corpus.append(raw)

    gather()
    got = java("validate-item", "0", [base64.b64encode(r).decode() for r in corpus])
    for raw, jv in zip(corpus, got, strict=True):
        same(python_item_verdict(raw), jv, raw)
    assert any(v["ok"] for v in got) and not all(v["ok"] for v in got)


def params(cfg: JobConfig, max_shown: int = 200) -> str:
    return json.dumps({
        "recentItems": cfg.recent_items, "maxSeenItems": cfg.max_seen_items, "maxShownItems": max_shown,
        "impressionType": IMPRESSION,
        "halfLifeHours": cfg.interest_half_life_hours,
        "flushIntervalMs": 100, "shards": 4, "dedupTtlMs": 1000, "dedupMaxIds": 10, "topInterests": 10,
        "batchDelayMs": 20, "tickForMs": 1000, "flushAtEndOfInput": False, "forgetType": FORGET,
        "defaultScenario": DEFAULT_SCENARIO, "ratingMidpoint": RATING_MIDPOINT, "typeWeights": TYPE_WEIGHT,
        "userKeyPrefix": key("user", ""), "recKeyPrefix": key("rec", ""), "interestDecimals": INTEREST_DECIMALS,
    })


def resp_commands(packed: bytes) -> list[list[str]]:
    """RESP arrays of bulk strings -> their arguments (what the JVM packs for the writer)."""
    out, i = [], 0
    while i < len(packed):
        assert packed[i : i + 1] == b"*"
        end = packed.index(b"\r\n", i)
        n, i = int(packed[i + 1 : end]), end + 2
        args = []
        for _ in range(n):
            end = packed.index(b"\r\n", i)
            size, i = int(packed[i + 1 : end]), end + 2
            args.append(packed[i : i + size].decode())
            i += size + 2
        out.append(args)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_jvm_state_agrees_with_apply_event(seed: int) -> None:
    rng = random.Random(seed)
    cfg = JobConfig(recent_items=8, max_seen_items=12, interest_half_life_hours=1.0)
    max_shown = 6  # small, so that the cap drops items
    state = UserState("u1")
    lines = []
    shown_since_flush = []  # the flush record's "m": every impression, as the JVM reports it
    ts = 1_700_000_000_000
    for _ in range(60):
        ts += rng.randint(-600_000, 1_200_000)  # out of order now and then
        if rng.random() < 0.3:  # a list shown: items that later events act on, now and then twice in one list
            items = [f"i{rng.randint(0, 20)}" for _ in range(rng.randint(1, 5))]
            version, arm = rng.choice([None, "v1"]), rng.choice([None, "exp:a", "exp:b"])
            scenario = rng.choice([None, "web"])
            apply_impression(state, Event("u1", "", IMPRESSION, ts, scenario=scenario, items=tuple(items),
                                          model_version=version, arm=arm), max_shown)
            shown_since_flush.append([version or "", arm or "", scenario or DEFAULT_SCENARIO, len(set(items))])
            lines.append(json.dumps({"user_id": "u1", "type": IMPRESSION, "items": items, "ts": ts,
                                     "model_version": version, "arm": arm, "scenario": scenario}))
            continue
        etype = rng.choice([*TYPE_WEIGHT, "rating"])
        value = rng.choice([None, 1.0, 4.5]) if etype == "rating" else None
        scenario = rng.choice([None, "web", "app"])
        item = f"i{rng.randint(0, 20)}"
        facets = tuple(f"category:{c}" for c in rng.sample(["Drama", "Comedy", "Noir"], rng.randint(0, 2)))
        apply_event(state, Event("u1", item, etype, ts, value, scenario), cfg, facets)
        lines.append(json.dumps({"user_id": "u1", "item_id": item, "type": etype, "ts": ts, "value": value,
                                 "scenario": scenario, "facets": list(facets)}))
    jv, packed = java("apply", params(cfg, max_shown), lines)
    assert jv["n"] == state.events and jv["t"] == state.last_ts
    # Impressions: the shown counts (in their order: least recently shown first), the total, the flush's list.
    assert state.shown and state.impressions == jv["x"] == len(shown_since_flush)
    assert list(json.loads(jv["flush"]["i"]).items()) == [(i, [n, state.shown_ts[i]]) for i, n in state.shown.items()]
    assert jv["flush"]["m"] == shown_since_flush
    assert [tuple(e) for e in jv["r"]] == state.recent
    assert jv["s"] == list(state.seen)
    assert set(jv["i"]) == set(state.interests)
    for facet, weight in state.interests.items():
        assert jv["i"][facet] == pytest.approx(weight, rel=1e-9, abs=1e-12)
    # The user:{id} hash the JVM packs reads back as the one serving.store writes for the same state.
    (hset,) = resp_commands(base64.b64decode(packed["resp_b64"]))
    assert hset[:2] == ["HSET", key("user", "u1")]
    jvm_hash = dict(zip(hset[2::2], hset[3::2], strict=True))
    assert jvm_hash.pop("impressions") == str(state.impressions)  # beside serving.store's fields
    want = UserView("u1", state.events, state.last_ts, state.recent_items(), state.top_interests(10)).to_hash()
    got_view, want_view = decode_user(jvm_hash), decode_user(want)
    assert got_view is not None and want_view is not None
    assert {k: v for k, v in got_view.items() if k != "interests"} == {
        k: v for k, v in want_view.items() if k != "interests"
    }
    assert got_view["interests"] == pytest.approx(want_view["interests"], abs=1e-12)


def test_the_jar_carries_the_rules_file() -> None:
    import zipfile

    with zipfile.ZipFile(job_jar(PROJECT_ROOT / ".cache" / "jars")) as jar:
        packaged = json.loads(jar.read("event_rules.json"))
    assert packaged == json.loads((PROJECT_ROOT / "streamrec" / "event_rules.json").read_text())
