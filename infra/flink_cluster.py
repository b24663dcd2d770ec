"""A local standalone Flink cluster: a JobManager and a TaskManager as separate processes.

It runs the Flink distribution that ships inside the apache-flink wheel (``pyflink/bin``, ``pyflink/lib``),
with a config written to ``home/conf``; jobs are submitted to it with the Flink CLI (``flink run -py``).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.process import PortTakenError, port_in_use, require_java, spawn, stop_pid, wait_until


def python_path() -> str:
    """PYTHONPATH for Flink's Python: thread mode embeds the base interpreter, which does not see our venv.

    ``infra/embedded`` comes first: its ``sitecustomize`` prepares the embedded interpreter (see there).
    """
    here = Path(__file__).resolve().parent
    parts = [str(here / "embedded"), str(here.parent), *site.getsitepackages()]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(dict.fromkeys(parts))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def flink_home() -> Path:
    """The Flink distribution inside the installed apache-flink wheel."""
    import pyflink

    return Path(pyflink.__file__).parent


@dataclass
class FlinkCluster:
    """JobManager on rest_port/rpc_port, one TaskManager with ``slots`` slots."""

    home: Path
    rest_port: int
    rpc_port: int
    slots: int = 2
    python: str = sys.executable

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    def env(self) -> dict[str, str]:
        """Environment for bin/ scripts and the Flink CLI."""
        return {
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_LIB_DIR": str(self.lib_dir),
            "PYTHONPATH": python_path(),
        }

    def write_lib(self) -> None:
        """The wheel's lib/ plus opt/flink-python: the cluster runs Python operators, the wheel's lib lacks it."""
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        jars = [*(flink_home() / "lib").glob("*.jar"), *(flink_home() / "opt").glob("flink-python-*.jar")]
        for jar in jars:
            link = self.lib_dir / jar.name
            if not link.exists():
                link.symlink_to(jar)

    def write_conf(self) -> None:
        src = flink_home() / "conf"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f.name != "config.yaml":
                shutil.copy(f, self.conf_dir / f.name)
        # Keep the distribution's defaults (its JVM --add-opens among them), flattened to "a.b.c" keys.
        conf = _flatten(yaml.safe_load((src / "config.yaml").read_text()) or {})
        conf |= {
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.bind-host": "localhost",
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.bind-host": "localhost",
            "taskmanager.host": "localhost",
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "2048m",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": self.rest_port,
            "parallelism.default": 1,
            "python.executable": self.python,
            "python.client.executable": self.python,
            "env.java.opts.all": conf.get("env.java.opts.all", ""),
        }
        # config.yaml is YAML; flat "a.b: v" keys are accepted, and JSON is YAML.
        (self.conf_dir / "config.yaml").write_text(json.dumps(conf, indent=1) + "\n")

    def start(self, timeout: float = 90.0) -> tuple[int, int]:
        """Start JobManager then TaskManager; wait until a TaskManager registered. Returns both pids."""
        require_java("Flink")
        for port in (self.rest_port, self.rpc_port):
            if port_in_use(port):
                raise PortTakenError("Flink", port)
        self.write_conf()
        self.write_lib()
        bin_dir = flink_home() / "bin"
        jm_log = self.log_dir / "jobmanager.out"
        tm_log = self.log_dir / "taskmanager.out"
        jm = spawn(["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"], jm_log, env=self.env())
        wait_until("Flink JobManager", f"serve REST on {self.rest_url}", self._rest_up, jm, jm_log, timeout)
        tm = spawn(["bash", str(bin_dir / "taskmanager.sh"), "start-foreground"], tm_log, env=self.env())
        wait_until("Flink TaskManager", "register", self._tm_registered, tm, tm_log, timeout)
        return jm, tm

    def _get(self, path: str) -> dict:
        with urllib.request.urlopen(self.rest_url + path, timeout=3) as resp:
            return json.loads(resp.read())

    def _rest_up(self) -> bool:
        return "flink-version" in self._get("/config")

    def _tm_registered(self) -> bool:
        return len(self._get("/taskmanagers").get("taskmanagers", [])) > 0

    def ready(self) -> bool:
        try:
            return self._tm_registered()
        except OSError:
            return False

    def jobs(self) -> list[dict]:
        """Jobs known to the cluster: [{"id", "status"}]."""
        return list(self._get("/jobs").get("jobs", []))

    @staticmethod
    def stop(pids: tuple[int | None, int | None]) -> bool:
        jm, tm = pids
        stopped_tm = stop_pid(tm, timeout=20.0)
        return stop_pid(jm, timeout=20.0) or stopped_tm
