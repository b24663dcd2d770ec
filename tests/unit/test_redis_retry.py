"""The bounded exponential backoff of the stream's Redis round trips (serving.store.execute_with_retry)."""

from __future__ import annotations

import time

import pytest
import redis

from serving.store import RedisUnavailableError, RetryPolicy, execute_with_retry


class FlakyRedis:
    """A pipeline that fails ``failures`` times with ``error``, then answers each op with its name."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.error = failures, error or redis.ConnectionError("Connection refused")
        self.attempts: list[float] = []
        self.ops: list[str] = []

    def pipeline(self, transaction: bool = False) -> FlakyRedis:
        self.ops = []
        return self

    def __getattr__(self, method: str):  # noqa: ANN204 - pipe.set(...), pipe.hset(...)
        return lambda *args, **kwargs: self.ops.append(method)

    def execute(self) -> list[str]:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise self.error
        return list(self.ops)


FAST = RetryPolicy(initial_s=0.01, max_s=0.04, give_up_s=0.5)


def test_retries_with_doubling_capped_delays_then_answers() -> None:
    client, lost = FlakyRedis(failures=4), []
    assert execute_with_retry(client, [("set", ("k", "v"), {}), ("get", ("k",), {})], FAST, lost.append) == [
        "set",
        "get",
    ]
    gaps = [b - a for a, b in zip(client.attempts, client.attempts[1:], strict=False)]
    assert len(gaps) == 4 == len(lost)
    for gap, delay in zip(gaps, [0.01, 0.02, 0.04, 0.04], strict=True):  # doubling, capped at max_s
        assert delay <= gap < delay + 0.25  # generous: a loaded machine oversleeps
    assert all(x >= 0.01 for x in lost)
    assert sum(lost) == pytest.approx(client.attempts[-1] - client.attempts[0], abs=0.05)


def test_gives_up_once_the_bound_would_pass() -> None:
    client = FlakyRedis(failures=10**6)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match=r"failed \d+ times over 0\.\ds .*from its last checkpoint"):
        execute_with_retry(client, [("get", ("k",), {})], FAST)
    assert time.monotonic() - started <= FAST.give_up_s + 0.25  # bounded: never sleeps past give_up_s
    assert 5 <= len(client.attempts) <= 16


def test_timeouts_are_retried_but_other_errors_are_not() -> None:
    assert execute_with_retry(FlakyRedis(1, redis.TimeoutError("slow")), [("get", ("k",), {})], FAST) == ["get"]
    client = FlakyRedis(1, redis.ResponseError("WRONGTYPE"))
    with pytest.raises(redis.ResponseError):
        execute_with_retry(client, [("get", ("k",), {})], FAST)
    assert len(client.attempts) == 1
