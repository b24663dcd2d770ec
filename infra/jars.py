"""Java artifacts from Maven Central, copied once into the jars cache (git-ignored).

Run by ``make setup`` as ``python -m infra.jars DIR``; idempotent: a present jar set is not fetched again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from infra.process import ServiceError
from streamrec.config import PROJECT_ROOT

POMS = Path(__file__).parent / "maven"
# Flink's Kafka connector, as the sql fat jar PyFlink's KafkaSource/KafkaSink wrappers expect.
# 5.0.0-2.2 is the newest connector built against Flink 2.2 (our apache-flink==2.2.1); none exists for 2.3.
FLINK_KAFKA_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"


class JarsMissingError(ServiceError):
    """The Maven jars are not in the cache."""

    def __init__(self, what: str, where: Path) -> None:
        super().__init__(f"{what} jars are missing in {where}: run `make setup` (fetches them with Maven)")


def kafka_dir(jars_dir: Path) -> Path:
    """Folder holding the Kafka broker's classpath."""
    return jars_dir / "kafka"


def flink_connector_jar(jars_dir: Path) -> Path:
    """The Flink Kafka connector jar, or a clear error if `make setup` did not fetch it."""
    _, artifact, version = FLINK_KAFKA_CONNECTOR.split(":")
    jar = jars_dir / "flink" / f"{artifact}-{version}.jar"
    if not jar.is_file():
        raise JarsMissingError("Flink Kafka connector", jar.parent)
    return jar


# The job's own JVM operators (jobs/jvm, a Maven project), built into the jars cache by `make setup`.
JOB_SOURCES = PROJECT_ROOT / "jobs" / "jvm"
JOB_JAR = "streamrec-jobs.jar"


def _job_sources_digest() -> str:
    """A digest of everything the job jar is built from (sources, pom, the event rules it packages)."""
    h = hashlib.sha256()
    files = sorted(
        p for p in JOB_SOURCES.rglob("*") if p.is_file() and "target" not in p.relative_to(JOB_SOURCES).parts
    )
    for p in [*files, PROJECT_ROOT / "streamrec" / "event_rules.json"]:
        h.update(str(p.relative_to(PROJECT_ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def job_jar(jars_dir: Path) -> Path:
    """The job's operator jar, or a clear error when it is missing or older than its sources."""
    jar = jars_dir.resolve() / JOB_JAR
    stamp = jar.with_suffix(".sources")
    if not jar.is_file():
        raise JarsMissingError("The job's own", jars_dir)
    if not stamp.is_file() or stamp.read_text() != _job_sources_digest():
        msg = f"{jar} is older than jobs/jvm (or the event rules): run `make setup` to rebuild it"
        raise ServiceError(msg)
    return jar


def build_job_jar(jars_dir: Path, tests: bool = True) -> Path:
    """Build jobs/jvm with Maven (its unit tests included) into jars_dir; skipped when the sources are unchanged."""
    jars_dir = jars_dir.resolve()
    jar = jars_dir / JOB_JAR
    stamp = jar.with_suffix(".sources")
    digest = _job_sources_digest()
    if jar.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return jar
    _mvn("-f", str(JOB_SOURCES / "pom.xml"), "package", *([] if tests else ["-DskipTests"]))
    jars_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(JOB_SOURCES / "target" / JOB_JAR, jar)
    stamp.write_text(digest)
    return jar


def kafka_classpath(jars_dir: Path) -> str:
    """The broker's classpath, or a clear error."""
    folder = kafka_dir(jars_dir)
    if not any(folder.glob("kafka_2.13-*.jar")):
        raise JarsMissingError("Kafka broker", folder)
    return str(folder / "*")


def _mvn(*args: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        msg = "Maven (mvn) is not installed: run `make setup` (apt-get install maven)"
        raise ServiceError(msg)
    subprocess.run([mvn, "-q", "-B", *args], check=True)


def fetch(jars_dir: Path) -> None:
    """Copy the Kafka broker and the Flink connector jars into jars_dir (skips what is there)."""
    jars_dir = jars_dir.resolve()
    kdir = kafka_dir(jars_dir)
    stamp = kdir / ".complete"
    pom = POMS / "kafka-pom.xml"
    if not stamp.is_file() or stamp.read_text() != pom.read_text():
        shutil.rmtree(kdir, ignore_errors=True)
        _mvn(
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={kdir}",
            "-DincludeScope=runtime",
        )
        stamp.write_text(pom.read_text())
    try:
        flink_connector_jar(jars_dir)
    except JarsMissingError:
        _mvn(
            "dependency:copy",
            f"-Dartifact={FLINK_KAFKA_CONNECTOR}",
            f"-DoutputDirectory={jars_dir / 'flink'}",
        )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".cache/jars")
    fetch(target)
    build_job_jar(target)
    print("jars ready")
