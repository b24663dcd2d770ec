"""A real Apache Kafka broker in KRaft mode (one combined broker+controller), from the Maven jars.

With ``scram_users`` its client listener is ``SASL_PLAINTEXT`` with SCRAM-SHA-256/512: the credentials are
added when the storage is formatted (``kafka-storage format --add-scram``), and no password ever appears on a
command line (the format runs from a 0600 Java argument file) or in a world-readable file.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from infra.jars import kafka_classpath
from infra.process import (
    PortTakenError,
    ServiceError,
    port_in_use,
    require_java,
    spawn,
    stop_pid,
    wait_until,
    write_private,
)

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
# Failed SASL authentications (wrong password, unknown user): one line each, the audit trail of refusals.
logger.auth.name = org.apache.kafka.common.network.Selector
logger.auth.level = INFO
"""


@dataclass
class KafkaBroker:
    """One broker: ``start()`` formats its storage once, launches it and waits until it serves metadata."""

    home: Path
    jars_dir: Path
    port: int
    controller_port: int
    heap: str = "512m"
    partitions: int = 2
    # Extra server.properties lines (e.g. SASL listeners), appended as given.
    extra_properties: dict[str, str] = field(default_factory=dict)
    # SCRAM users {name: password}. With any, the client listener is SASL_PLAINTEXT (SCRAM-SHA-256 and -512,
    # nobody else gets in) and the first user is also the broker's own identity on it; the controller
    # listener stays PLAINTEXT. Credentials are added when the storage is first formatted.
    scram_users: dict[str, str] = field(default_factory=dict)
    # The mechanism of the broker's own connections and of :meth:`client_config`.
    scram_mechanism: str = "SCRAM-SHA-256"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"

    @property
    def listener(self) -> str:
        """The client listener's name (and security protocol)."""
        return "SASL_PLAINTEXT" if self.scram_users else "PLAINTEXT"

    def client_config(self) -> dict[str, str]:
        """kafka-python settings to reach this broker (as its first SCRAM user, if any)."""
        if not self.scram_users:
            return {}
        name, password = next(iter(self.scram_users.items()))
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": self.scram_mechanism,
            "sasl_plain_username": name,
            "sasl_plain_password": password,
        }

    def _sasl_properties(self) -> dict[str, str]:
        if not self.scram_users:
            return {}
        for name, password in self.scram_users.items():
            unsafe = any(c in SCRAM_UNSAFE or ord(c) < 32 for c in password)
            if not SCRAM_NAME.fullmatch(name) or not password or unsafe:
                raise ScramCredentialError(name)
        admin, password = next(iter(self.scram_users.items()))
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{admin}" password="{password}";'
        )
        props = {
            "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
            "sasl.mechanism.inter.broker.protocol": self.scram_mechanism,
        }
        for mechanism in SCRAM_MECHANISMS:
            props[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = jaas
        return props

    def _properties(self) -> str:
        listener = self.listener
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{listener}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(self.partitions),
            # A single broker: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # The event log is retained: replays carry historical event times as record timestamps, which
            # time-based retention (7 days by default) would delete at the next check.
            "log.retention.ms": "-1",
            **self._sasl_properties(),
            **self.extra_properties,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout: float = 60.0) -> int:
        """Format (first time only), start, wait until ready; returns the broker's pid."""
        java = require_java("Kafka")
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise PortTakenError("Kafka", port)
        cp = kafka_classpath(self.jars_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        conf = self.home / "server.properties"
        write_private(conf, self._properties())  # with SCRAM it holds the broker's own password
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        jvm = [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", cp]
        if not (self.home / "data" / "meta.properties").is_file():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # StorageTool runs in its own JVM and exits: it writes meta.properties for KRaft.
            # `--cluster-id=ID`, not `-t ID`: a base64 id may start with "-" (1 in 64), which
            # the tool's argument parser would take for an option.
            fmt = [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(conf)]
            for name, password in self.scram_users.items():
                for mechanism in SCRAM_MECHANISMS:
                    fmt += ["--add-scram", f'{mechanism}=[name={name},password="{password}"]']
            self._format(fmt)
        pid = spawn([*jvm, "kafka.Kafka", str(conf)], self.log)
        wait_until("Kafka", f"serve on {self.bootstrap}", self.ready, pid, self.log, timeout)
        return pid

    def _format(self, cmd: list[str]) -> None:
        if not self.scram_users:
            with open(self.log, "ab") as out:
                subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)
            return
        # The passwords go through a Java argument file (`java @file`: the command line shows only the file's
        # name), and the tool's output, which echoes the SCRAM verifiers, stays out of the log.
        argfile = write_private(self.home / "format.args", "".join(_argfile_line(a) for a in cmd[1:]))
        try:
            proc = subprocess.run([cmd[0], f"@{argfile}"], capture_output=True, text=True)
        finally:
            argfile.unlink()
        with open(self.log, "a") as out:
            out.write(f"storage formatted with SCRAM users {', '.join(self.scram_users)} (exit {proc.returncode})\n")
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            for password in self.scram_users.values():
                output = output.replace(password, "***")
            raise ScramFormatError(proc.returncode, output)

    def ready(self) -> bool:
        """True once the broker answers a metadata request."""
        from kafka import KafkaAdminClient

        # Not listening yet (a start, or a restart on the same port): a client made now would back off for up
        # to 30 s before it tried again, long after the broker is up.
        if not port_in_use(self.port):
            return False
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=3000, reconnect_backoff_max_ms=500,
            **self.client_config(),
        )
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    @staticmethod
    def stop(pid: int | None) -> bool:
        """Controlled shutdown (SIGTERM), SIGKILL if it hangs."""
        return stop_pid(pid, timeout=30.0)


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Characters the format tool's `[name=...,password="..."]` syntax or the JAAS line cannot carry (a space,
# `=` or `]` inside the quotes is fine).
SCRAM_UNSAFE = frozenset(',"\\')
SCRAM_NAME = re.compile(r"[A-Za-z0-9._@-]+")


class ScramCredentialError(ServiceError):
    """A SCRAM user name or password the broker's configuration cannot carry."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Kafka SCRAM user {name!r}: the name must be letters, digits and . _ @ -, and the password non-empty, "
            "without control characters or any of , \" \\ (kafka.sasl_username / kafka.sasl_password)"
        )


class ScramFormatError(ServiceError):
    """kafka-storage format failed while adding SCRAM credentials."""

    def __init__(self, code: int, output: str) -> None:
        tail = "\n".join(output.splitlines()[-15:])
        super().__init__(f"Kafka storage format with SCRAM credentials exited {code} (passwords masked):\n{tail}")


def _argfile_line(arg: str) -> str:
    """One argument of a Java @argfile, quoted (backslash and quote escaped)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


# Record timestamps are event times (possibly years old): only size or an operator may drop the log.
RETAINED = {"retention.ms": "-1"}


def ensure_topics(
    bootstrap: str, topics: list[str], partitions: int, client_config: dict | None = None
) -> list[str]:
    """Create the topics that do not exist yet (idempotent); returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **(client_config or {}))
    try:
        missing = [t for t in topics if t not in set(admin.list_topics())]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, 1, topic_configs=RETAINED) for t in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        admin.close()
