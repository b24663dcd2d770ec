"""Debian's redis-server on its own port and data dir, optionally with a password and ACL users.

The settings go in ``redis.conf`` and the users in an ACL file (``users.acl``: SHA-256 hashes of the passwords,
never the passwords), both written with mode 0600 before each start: no password is on the command line.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from infra.process import PortTakenError, ServiceError, port_in_use, spawn, stop_pid, wait_until, write_private


class RedisMissingError(ServiceError):
    """redis-server is not installed."""

    def __init__(self) -> None:
        super().__init__("redis-server is not installed: run `make setup` (apt-get install redis-server)")


class AclUserError(ServiceError):
    """An ACL user that cannot be created as asked."""


@dataclass(frozen=True)
class AclUser:
    """A Redis ACL user: name, password, and rules in ACL syntax (e.g. ``-@all +get ~rec:*``)."""

    name: str
    password: str
    rules: str

    def line(self) -> str:
        """The user's line in an ACL file (the password as its SHA-256)."""
        if not ACL_NAME.fullmatch(self.name) or self.name == "default":
            msg = f"Redis ACL user {self.name!r}: use letters, digits and . _ @ - (and not 'default', the admin)"
            raise AclUserError(msg)
        if not self.password:
            msg = f"Redis ACL user {self.name!r} has no password: set it in the config"
            raise AclUserError(msg)
        return f"user {self.name} reset on #{_sha256(self.password)} {self.rules}\n"


ACL_NAME = re.compile(r"[A-Za-z0-9._@-]+")


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass
class RedisServer:
    """One Redis: append-only file in home, bound to 127.0.0.1.

    ``password`` is the admin's (Redis' ``default`` user, every command); ``users`` are least-privilege ACL
    users, which need it (else anyone would connect as ``default`` without a password).
    """

    home: Path
    port: int
    password: str | None = None
    users: list[AclUser] = field(default_factory=list)

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
        pid = spawn([binary, str(self._write_config())], self.log)
        wait_until("Redis", f"answer PING on {self.port}", self.ready, pid, self.log, timeout)
        return pid

    def _write_config(self) -> Path:
        conf = [f"port {self.port}", "bind 127.0.0.1", f'dir "{self.home}"', "daemonize no", "appendonly yes"]
        conf.append('save ""')
        if self.users and not self.password:
            names = ", ".join(u.name for u in self.users)
            msg = f"Redis ACL users ({names}) need an admin password: set stack.redis_password"
            raise AclUserError(msg)
        if self.password:
            acl = f"user default on #{_sha256(self.password)} ~* &* +@all\n"
            acl += "".join(u.line() for u in self.users)
            conf.append(f'aclfile "{write_private(self.home / "users.acl", acl)}"')
        return write_private(self.home / "redis.conf", "".join(f"{line}\n" for line in conf))

    def client(self):  # noqa: ANN201 - redis.Redis
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2)

    def ready(self) -> bool:
        return bool(self.client().ping())

    @staticmethod
    def stop(pid: int | None) -> bool:
        return stop_pid(pid, timeout=10.0)
