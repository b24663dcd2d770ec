"""Background service processes: spawn with a log file, wait until they listen, stop them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ServiceError(Exception):
    """A local service could not be started or stopped; the message says what to do."""


class PortTakenError(ServiceError):
    """Another process listens on the port a service needs."""

    def __init__(self, name: str, port: int) -> None:
        super().__init__(
            f"{name}: port {port} on 127.0.0.1 is already taken by another process; "
            f"stop it or choose another port (config stack.*_port or STREAMREC_STACK__*_PORT)"
        )


class JavaMissingError(ServiceError):
    """No java on PATH."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name} needs Java 17+, and no `java` is on PATH: run `make setup` (installs a JDK)"
        )


class ServiceExitedError(ServiceError):
    """A service process died while starting."""

    def __init__(self, name: str, log: Path) -> None:
        super().__init__(f"{name} exited while starting; its log is {log}:\n{log_tail(log)}")


class StartTimeoutError(ServiceError):
    """A service did not become ready in time."""

    def __init__(self, name: str, what: str, timeout: float, log: Path) -> None:
        super().__init__(f"{name} did not {what} within {timeout:.0f}s; its log is {log}:\n{log_tail(log)}")


def log_tail(log: Path, lines: int = 25) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def require_java(name: str) -> str:
    """Path of the java binary, or a clear error."""
    java = shutil.which("java")
    if java is None:
        raise JavaMissingError(name)
    return java


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start cmd in its own session (it outlives the caller), stdout+stderr appended to log; returns the pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def pid_alive(pid: int | None) -> bool:
    """Whether pid is a live (non-zombie) process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def wait_until(name: str, what: str, ready: object, pid: int, log: Path, timeout: float) -> None:
    """Poll ready() until it is true; fail fast with the log tail if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise ServiceExitedError(name, log)
        try:
            if ready():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the client says
            pass
        time.sleep(0.2)
    raise StartTimeoutError(name, what, timeout, log)


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> float:
    """Poll ``check()`` every ``every`` seconds until it is true; returns the seconds it took.

    Raises:
        TimeoutError: ``check()`` was not true within ``timeout`` seconds (the message names ``what``).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(every)
    msg = f"timed out after {timeout:.0f}s waiting for {what}"
    raise TimeoutError(msg)


def stop_pid(pid: int | None, timeout: float = 20.0) -> bool:
    """SIGTERM the process group of pid, SIGKILL it after timeout; True if something was stopped."""
    if not pid_alive(pid):
        return False
    assert pid is not None
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.2)
    return True


def write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read (mode 0600 from creation: secrets never sit world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
