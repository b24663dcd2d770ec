"""Debian's redis-server on its own port and data dir, optionally with a password."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.process import PortTakenError, ServiceError, port_in_use, spawn, stop_pid, wait_until


class RedisMissingError(ServiceError):
    """redis-server is not installed."""

    def __init__(self) -> None:
        super().__init__("redis-server is not installed: run `make setup` (apt-get install redis-server)")


@dataclass
class RedisServer:
    """One Redis: append-only file in home, bound to 127.0.0.1."""

    home: Path
    port: int
    password: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.home / "redis.log"

    def start(self, timeout: float = 20.0) -> int:
        """Start and wait for PING; returns the pid."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissingError()
        if port_in_use(self.port):
            raise PortTakenError("Redis", self.port)
        self.home.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.home)]
        args += ["--daemonize", "no", "--appendonly", "yes", "--save", ""]
        if self.password:
            args += ["--requirepass", self.password]
        pid = spawn(args, self.log)
        wait_until("Redis", f"answer PING on {self.port}", self.ready, pid, self.log, timeout)
        return pid

    def client(self):  # noqa: ANN201 - redis.Redis
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def ready(self) -> bool:
        return bool(self.client().ping())

    @staticmethod
    def stop(pid: int | None) -> bool:
        return stop_pid(pid, timeout=10.0)
