"""A real Apache Kafka broker in KRaft mode (one combined broker+controller), from the Maven jars."""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from infra.jars import kafka_classpath
from infra.process import PortTakenError, port_in_use, require_java, spawn, stop_pid, wait_until

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

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"

    def _properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
        conf.write_text(self._properties())
        log4j = self.home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        jvm = [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", cp]
        if not (self.home / "data" / "meta.properties").is_file():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            with open(self.log, "ab") as out:
                # StorageTool runs in its own JVM and exits: it writes meta.properties for KRaft.
                subprocess.run(
                    # `--cluster-id=ID`, not `-t ID`: a base64 id may start with "-" (1 in 64), which
                    # the tool's argument parser would take for an option.
                    [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(conf)],
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        pid = spawn([*jvm, "kafka.Kafka", str(conf)], self.log)
        wait_until("Kafka", f"serve on {self.bootstrap}", self.ready, pid, self.log, timeout)
        return pid

    def ready(self) -> bool:
        """True once the broker answers a metadata request."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    @staticmethod
    def stop(pid: int | None) -> bool:
        """Controlled shutdown (SIGTERM), SIGKILL if it hangs."""
        return stop_pid(pid, timeout=30.0)


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
