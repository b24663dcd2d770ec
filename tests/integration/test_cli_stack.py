"""`streamrec up | status --json | down` on free ports, and the clear error when a port is taken."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from infra.process import free_port

pytestmark = pytest.mark.integration


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "streamrec.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_up_status_down(tmp_path):
    kp, rp = free_port(), free_port()
    env = {
        **os.environ,
        "STREAMREC_STACK__RUN_DIR": str(tmp_path),
        "STREAMREC_STACK__KAFKA_PORT": str(kp),
        "STREAMREC_STACK__KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMREC_STACK__REDIS_PORT": str(rp),
        "STREAMREC_KAFKA__BOOTSTRAP": f"127.0.0.1:{kp}",
        "STREAMREC_REDIS__URL": f"redis://127.0.0.1:{rp}/0",
    }
    try:
        up = cli(env, "up")
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{kp}" in up.stdout and "log" in up.stdout
        st = json.loads(cli(env, "status", "--json").stdout)
        assert st["kafka"] == {**st["kafka"], "bootstrap": f"127.0.0.1:{kp}", "running": True}
        assert st["redis"]["url"] == f"redis://127.0.0.1:{rp}/0" and st["redis"]["running"] is True
        assert set(st) == {"kafka", "redis", "flink", "api"} and st["api"]["running"] is False
        again = cli(env, "up")  # idempotent: nothing restarted
        assert again.returncode == 0 and "started" not in again.stdout
    finally:
        down = cli(env, "down")
    assert down.returncode == 0
    st = json.loads(cli(env, "status", "--json").stdout)
    assert st["kafka"]["running"] is False and st["redis"]["running"] is False


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        env = {
            **os.environ,
            "STREAMREC_STACK__RUN_DIR": str(tmp_path),
            "STREAMREC_STACK__KAFKA_PORT": str(taken),
        }
        proc = cli(env, "up")
    assert proc.returncode == 1
    assert f"port {taken}" in proc.stderr and "already taken" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_java_missing_is_a_clear_error(tmp_path):
    env = {**os.environ, "STREAMREC_STACK__RUN_DIR": str(tmp_path), "STREAMREC_STACK__KAFKA_PORT": str(free_port()),
           "STREAMREC_STACK__KAFKA_CONTROLLER_PORT": str(free_port()), "PATH": str(tmp_path)}
    proc = cli(env, "up")
    assert proc.returncode == 1
    assert "needs Java 17+" in proc.stderr and "make setup" in proc.stderr
