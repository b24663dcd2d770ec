"""End to end: business rules, explanations and A/B experiments through the real job, read over HTTP.

Producer -> Kafka -> Flink -> the policy stage -> Redis -> the API. A two-arm experiment (a model version
against a rule set) splits users by the stable hash; each list equals what the artifacts and the policy compute
offline for the user's arm; an item marked unavailable never appears, and one marked so while lists exist
leaves the API's answers at once and the lists at the users' next event; actions and impressions are counted
per arm; a hot-reloaded policy file switches to team-draft interleaving, whose credit follows the teams.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from typing import Any

import pytest
import yaml

from infra.process import free_port, spawn, stop_pid
from jobs import launcher
from jobs.producer import EventProducer
from model_export.artifact.registry import Registry
from model_export.data.datasets import load_dataset
from model_export.pipeline import train_and_export_events
from model_export.train import TrainConfig
from serving.experiments import assign, read_experiment_counts, team_draft
from serving.policy import Policy, UserContext, item_facts
from serving.scorer import Scorer
from serving.store import connect, decode_recommendations, key
from streamrec.config import PolicyConfig
from streamrec.events import DEFAULT_SCENARIO, item_text

pytestmark = pytest.mark.e2e

TRAIN = 2000
USERS = 60
TOKEN = "policy-test-token"
UNAVAILABLE = {"attribute": "available", "equals": False}


def get(url: str) -> Any:  # noqa: ANN401
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check, timeout_s: float = 120.0, every_s: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def test_rules_experiments_and_interleaving_through_the_job(make_settings, tmp_path):  # noqa: ANN001, PLR0915
    port = free_port()
    policy_file = tmp_path / "policy.yaml"
    ab = {
        "default": {"exclude": [UNAVAILABLE], "max_per_category": 4},
        "rule_sets": {"diverse": {"exclude": [UNAVAILABLE], "diversity": 0.5}},
        "experiments": [{"name": "ab", "arms": {"control": {"model_version": None}, "treat": {"rules": "diverse"}}}],
    }
    data = load_dataset("ml-100k")
    past = data.events[:TRAIN]
    registry_dir = tmp_path / "models"
    registry = Registry(registry_dir)
    out = tmp_path / "artifacts"
    old = registry.publish(train_and_export_events(past, out, name="old", config=TrainConfig(epochs=1)))
    new = registry.publish(train_and_export_events(past, out, name="new", config=TrainConfig(epochs=2), seed=1))
    registry.promote(new)
    ab["experiments"][0]["arms"]["control"]["model_version"] = old
    policy_file.write_text(yaml.safe_dump(ab, sort_keys=False))
    settings, config_path = make_settings(
        api={"port": port, "token": TOKEN},
        job={"top_k": 10, "model_check_interval_s": 0.5},
        models={"registry_dir": str(registry_dir)},
        policy={"file": str(policy_file), "reload_interval_s": 0.3},
    )
    # The stream: the later events of USERS users.
    later = data.events[TRAIN:]
    chosen = list(dict.fromkeys(e["user_id"] for e in later))[:USERS]
    per_user: Counter[str] = Counter()
    stream = []
    for e in later:  # each chosen user's next 15 events, in time order
        if e["user_id"] in set(chosen) and per_user[e["user_id"]] < 15:
            per_user[e["user_id"]] += 1
            stream.append(e)
    users = sorted({e["user_id"] for e in stream})
    counts = Counter(e["item_id"] for e in stream)
    # The most popular item of the stream is unavailable from the start; the second one becomes so later.
    banned, later_banned = (i for i, _ in counts.most_common(2))
    catalog = [{**item, "attributes": {**(item.get("attributes") or {}), "available": item["item_id"] != banned}}
               for item in data.items]
    r = connect(settings.redis.url)
    r.flushdb()
    launcher.start(settings, str(config_path), say=lambda *_: None)
    api = spawn([sys.executable, "-m", "streamrec.cli", "--config", str(config_path), "serve"], tmp_path / "api.log")
    sent: Counter[str] = Counter()
    try:
        k = settings.kafka
        with EventProducer(k.bootstrap, k.events_topic, k.items_topic) as p:
            for item in catalog:
                p.send_item(item)
            p.flush()
            wait_for("the catalog", lambda: r.exists(key("item", catalog[-1]["item_id"])), 60)
            for e in stream:
                p.send(e)
                sent[e["user_id"]] += 1
            p.flush()

            def applied() -> bool:
                pipe = r.pipeline(transaction=False)
                for u in users:
                    pipe.hget(key("user", u), "events")
                return [int(x or 0) for x in pipe.execute()] == [sent[u] for u in users]

            def lists() -> dict[str, dict]:
                pipe = r.pipeline(transaction=False)
                for u in users:
                    pipe.get(key("rec", u))
                return {u: decode_recommendations(raw) for u, raw in zip(users, pipe.execute(), strict=True)}

            def settled(ok=lambda rec: True) -> dict[str, dict] | None:  # noqa: ANN001
                """Every user's list, once none has changed for a second (the scorer may lag the state path)."""
                first = lists()
                time.sleep(1.0)
                again = lists()
                done = all(again.values()) and all(ok(rec) for rec in again.values())
                return again if done and first == again else None

            wait_for("every event in the user state", applied, 180)
            recs = wait_for("every user's list", settled, 60)

            history: dict[str, list[dict]] = defaultdict(list)
            for e in stream:
                history[e["user_id"]].append(e)

            # user -> item -> (times shown without an action since, when last shown): what the job counts.
            shown: dict[str, dict[str, tuple[int, int]]] = {}

            def act(e: dict) -> None:
                p.send(e)
                history[e["user_id"]].append(e)
                shown.get(e["user_id"], {}).pop(e["item_id"], None)
                sent[e["user_id"]] += 1

            def history_scenario(u: str) -> str:
                return max(history[u], key=lambda e: e["ts"]).get("scenario") or DEFAULT_SCENARIO

            # 1. The split: each user's arm is the stable hash's, and its list is the arm's model and rules.
            policy = Policy(PolicyConfig.model_validate(ab))
            arms = {u: assign(policy.experiments, u, history_scenario(u)).arm for u in users}
            assert {u: rec["arm"] for u, rec in recs.items()} == {u: f"ab:{arms[u]}" for u in users}
            assert min(Counter(arms.values()).values()) >= USERS // 4
            assert all(rec["model_version"] == (old if arms[u] == "control" else new) for u, rec in recs.items())
            scorers = {v: Scorer(registry.path(v)) for v in (old, new)}
            ids = [item["item_id"] for item in catalog]
            facts = {item["item_id"]: item_facts(item) for item in catalog}
            for sc in scorers.values():  # as the writer prepares a scorer: text rows for unknown items, then
                sc.add_items({i["item_id"]: item_text(i) for i in catalog if not sc.knows(i["item_id"])})
                sc.restrict_to(ids)

            def offline(pol: Policy, u: str, rules_name: str | None, version: str) -> list[dict]:
                """The user's list as the artifact and the policy compute it here, from the events sent."""
                hist = sorted(history[u], key=lambda e: e["ts"])[-settings.job.recent_items:]
                sc = scorers[version]
                rules = pol.rules(hist[-1].get("scenario") or DEFAULT_SCENARIO, rules_name)
                cands = sc.score([[e["item_id"] for e in hist]], Policy.pool(10, rules),
                                 exclude=[{e["item_id"] for e in history[u]}], times=[[e["ts"] for e in hist]],
                                 scenarios=[[e.get("scenario") or DEFAULT_SCENARIO for e in hist]])[0]
                ctx = UserContext(u, hist[-1].get("scenario") or DEFAULT_SCENARIO, [e["item_id"] for e in hist],
                                  hist[-1]["ts"], shown.get(u, {}), {e["item_id"] for e in history[u]})
                return pol.rank(ctx, cands, 10, rules, facts.get, sc.item_vectors, now_ms=int(time.time() * 1000))

            for u in users:
                arm = arms[u]
                want = offline(policy, u, "diverse" if arm == "treat" else None, new if arm == "treat" else old)
                assert [x["item_id"] for x in recs[u]["items"]] == [x["item_id"] for x in want], u
            # 2. Rules: the unavailable item never, the category cap on the control arm, a reason for every item.
            genres = {item["item_id"]: item.get("categories") or [] for item in catalog}
            for u, rec in recs.items():
                items = [x["item_id"] for x in rec["items"]]
                assert banned not in items
                if arms[u] == "control":
                    per = Counter(g for i in items for g in genres[i])
                    assert max(per.values()) <= 4, (u, per)
                for x in rec["items"]:  # "because you watched X": X is one of the user's items
                    assert x["reason"]["kind"] == "history"
                    assert x["reason"]["item_id"] in {e["item_id"] for e in history[u]}

            base = f"http://127.0.0.1:{port}"
            wait_for("the API", lambda: _healthy(base), 30)
            holders = [u for u, rec in recs.items() if later_banned in [x["item_id"] for x in rec["items"]]]
            assert holders, "the second most popular item is in someone's list"
            u0 = holders[0]
            body = get(f"{base}/v1/users/{urllib.parse.quote(u0, safe='')}/recommendations?k=10")
            assert body["arm"] == f"ab:{arms[u0]}"
            assert later_banned in [x["item_id"] for x in body["items"]]
            assert all(x["reason"].startswith("because you watched ") for x in body["items"])

            # 3. Marked unavailable: out of the API's answers at once, out of the lists at the next event.
            item = next(i for i in catalog if i["item_id"] == later_banned)
            unavailable = {**item, "attributes": {**item["attributes"], "available": False}}
            p.send_item(unavailable)
            facts[later_banned] = item_facts(unavailable)
            p.flush()
            wait_for("the upsert in item:{id}", lambda: b"false" in (r.hget(key("item", later_banned), "attributes")
                                                                     or b""), 30)
            body = get(f"{base}/v1/users/{urllib.parse.quote(u0, safe='')}/recommendations?k=10")
            assert later_banned not in [x["item_id"] for x in body["items"]]
            assert later_banned in [x["item_id"] for x in decode_recommendations(r.get(key("rec", u0)))["items"]]

            # 4. Actions per arm: each user acts on the first item of the list it holds; half of them on an item
            # outside it. The counters move by exactly what the lists say.
            before = read_experiment_counts(r).get("ab", {})
            expect: Counter[tuple[str, str]] = Counter()
            last_ts = max(e["ts"] for e in stream)
            for n, u in enumerate(users):
                rec = decode_recommendations(r.get(key("rec", u)))
                target = rec["items"][0]["item_id"] if n % 2 == 0 else past[n]["item_id"]
                top = [x["item_id"] for x in rec["items"][:10]]
                expect[(arms[u], "actions")] += 1
                expect[(arms[u], "hits@10")] += target in top
                act({"user_id": u, "item_id": target, "type": "click", "ts": last_ts + n + 1})
            p.flush()
            wait_for("every action in the user state", applied, 120)
            wait_for("the action counters", lambda: _moved(r, "ab", before, expect), 30)
            recs = wait_for("lists without the unavailable item", lambda: settled(
                lambda rec: later_banned not in [i["item_id"] for i in rec["items"]]), 60)

            # 4b. Impressions over HTTP: a list shown five times without an action is demoted (the repeat rule),
            # and the arm's impression counters move by what was shown.
            before = read_experiment_counts(r).get("ab", {})
            u1 = users[1]
            rec = recs[u1]
            arm = arms[u1]
            seen_list = [x["item_id"] for x in rec["items"]]
            now_ms = int(time.time() * 1000)
            for n in range(5):
                body = post(f"{base}/v1/impressions", {"user_id": u1, "items": seen_list, "arm": rec["arm"],
                                                       "model_version": rec["model_version"], "ts": now_ms + n})
                assert body["items"] == seen_list
            shown[u1] = {i: (5, now_ms + 4) for i in seen_list}
            wait_for("the impression counters", lambda: _moved(r, "ab", before, Counter(
                {(arm, "impression_lists"): 5, (arm, "impressions"): 5 * len(seen_list)})), 30)
            assert int(r.hget(key("user", u1), "impressions")) == 5
            wait_for("the demoted list", lambda: decode_recommendations(r.get(key("rec", u1)))["items"][0]["item_id"]
                     not in seen_list, 30)
            recs = wait_for("every user's list", settled, 60)
            demoted = [x["item_id"] for x in decode_recommendations(r.get(key("rec", u1)))["items"]]
            assert demoted[0] not in seen_list
            fresh = [i for i in demoted if i not in seen_list]
            assert demoted[: len(fresh)] == fresh  # whatever was shown five times comes after everything else
            want = offline(policy, u1, "diverse" if arm == "treat" else None, new if arm == "treat" else old)
            assert demoted == [x["item_id"] for x in want]

            # 5. A hot-reloaded policy: team-draft interleaving of the two versions, credit by team.
            il = {"default": {"exclude": [UNAVAILABLE]},
                  "experiments": [{"name": "il", "interleave": True,
                                   "arms": {"old": {"model_version": old}, "new": {}}}]}
            policy_file.write_text(yaml.safe_dump(il, sort_keys=False))  # arm order: the teams
            time.sleep(1.0)
            for n, u in enumerate(users):
                act({"user_id": u, "item_id": past[n + 1]["item_id"], "type": "view", "ts": last_ts + 1000 + n})
            p.flush()
            wait_for("every event in the user state", applied, 120)
            recs = wait_for("interleaved lists", lambda: settled(lambda rec: rec.get("arm") == "il:interleaved"), 60)
            il_policy = Policy(PolicyConfig.model_validate(il))
            for u in users:  # each list is the team draft of the two versions' lists, with the same coin
                rec = recs[u]
                assert rec["teams"] == ["old", "new"] and rec["model_version"] == f"{old}+{new}"
                want = team_draft(offline(il_policy, u, None, old), offline(il_policy, u, None, new), 10,
                                  seed=f"il:interleaved:{u}:{sent[u]}")
                assert [(x["item_id"], x["team"]) for x in rec["items"]] == [
                    (x["item_id"], x["team"]) for x in want], u
            before = read_experiment_counts(r).get("il", {})
            credit: Counter[str] = Counter()
            for n, u in enumerate(users):
                rec = recs[u]
                pick = rec["items"][n % 3]
                credit[rec["teams"][pick["team"]]] += 1
                act({"user_id": u, "item_id": pick["item_id"], "type": "click", "ts": last_ts + 2000 + n})
            p.flush()
            wait_for("every action in the user state", applied, 120)
            want = Counter({(team, "credit"): n for team, n in credit.items()})
            want.update({(team, "actions"): len(users) for team in ("old", "new")})
            wait_for("the interleaving credit", lambda: _moved(r, "il", before, want), 30)

            # 6. The API reports both experiments with intervals and the tests.
            report = get(f"{base}/v1/experiments")
            assert set(report["experiments"]) >= {"ab", "il"}
            treat = report["experiments"]["ab"]["arms"]["treat"]
            assert treat["vs_control"]["control"] == "control"
            lo, hi = treat["hit_rate@10"]["ci95"]
            assert 0 <= lo <= treat["hit_rate@10"]["value"] <= hi <= 1
            assert report["experiments"]["il"]["interleave"] is True
            assert launcher.status(settings)["running"]
    finally:
        stop_pid(api)
        launcher.stop(settings, say=lambda *_: None)


def post(url: str, body: dict) -> Any:  # noqa: ANN401
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=35) as resp:
        assert resp.status == 202
        return json.loads(resp.read())


def _healthy(base: str) -> bool:
    try:
        return get(f"{base}/healthz")["status"] == "ok"
    except OSError:
        return False


def _moved(r, experiment: str, before: dict, expect: Counter) -> bool:  # noqa: ANN001
    now = read_experiment_counts(r).get(experiment, {})
    return all(now.get(arm, {}).get(c, 0) - before.get(arm, {}).get(c, 0) == n for (arm, c), n in expect.items())
