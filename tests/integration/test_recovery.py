"""kill -9 the job mid-stream, `job start` again: it resumes from the latest checkpoint, each event applied once."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from jobs import launcher
from jobs.producer import EventProducer
from serving.store import connect, key

pytestmark = pytest.mark.integration

USERS = 8


def events(start: int, n: int) -> list[dict]:
    return [{"user_id": f"r{i % USERS}", "item_id": f"m{i % 37}", "type": "click", "ts": 1_700_000_000_000 + i}
            for i in range(start, start + n)]


def counts(r, users) -> dict[str, int]:
    return {u: int(r.hget(key("user", u), "events") or 0) for u in users}


def wait_for(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)


def test_kill_and_resume_applies_each_event_once(make_settings):
    settings, config = make_settings(flink={"checkpoint_interval_ms": 500})
    r = connect(settings.redis.url)
    r.flushdb()
    first, second = events(0, 300), events(300, 300)
    want_first = Counter(e["user_id"] for e in first)
    want = Counter(e["user_id"] for e in first + second)
    users = sorted(want)

    job = launcher.start(settings, str(config), say=lambda *_: None)
    assert job["restored_from"] is None
    try:
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for e in first:
                p.send(e)
        wait_for(lambda: counts(r, users) == dict(want_first) and launcher.latest_checkpoint(settings), 120)
        assert counts(r, users) == dict(want_first)
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for e in second[:150]:
                p.send(e)
        time.sleep(0.3)  # some of these are applied (and written to Redis) after the last checkpoint
        os.killpg(os.getpgid(job["pid"]), signal.SIGKILL)
        wait_for(lambda: not launcher.status(settings)["running"], 10)
        with EventProducer(settings.kafka.bootstrap, settings.kafka.events_topic) as p:
            for e in second[150:]:
                p.send(e)

        resumed = launcher.start(settings, str(config), say=lambda *_: None)
        assert resumed["restored_from"] is not None
        wait_for(lambda: counts(r, users) == dict(want), 120)
        assert counts(r, users) == dict(want)
        time.sleep(2)  # and no late double count
        assert counts(r, users) == dict(want)
    finally:
        launcher.stop(settings, say=lambda *_: None)
