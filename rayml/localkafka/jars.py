"""The local broker's tools: Java 17+ and the Apache Kafka jars, resolved by Maven.

The jars come from Maven Central through ``pom.xml`` beside this file (``~/.m2`` caches them)
into a versioned folder of the state dir, marked complete only once Maven succeeded.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from rayml.errors import BrokerError, ToolMissingError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# The heap is small (a local broker), the collector options are Kafka's own defaults
# (kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS): G1 aiming at 20 ms pauses. Without the
# pause goal (G1's default is 200 ms) young collections of 75-200 ms were seen under load on a
# 2-core machine, each one a stall of every client's reads and writes.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

_JAVA_HINT = (
    "Install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME."
)
_MAVEN_HINT = "Install Apache Maven 3.8+ (e.g. `apt-get install maven`); it fetches the Kafka jars."


# --- tools and jars ----------------------------------------------------------------------------


def java_executable() -> str:
    """The ``java`` of ``JAVA_HOME``, or the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise ToolMissingError("java", _JAVA_HINT)
    return found


def _check_java_version(java: str) -> None:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr + out.stdout
    # `openjdk version "17.0.15"` / `"1.8.0_392"`: the first number is the major version from 9 on.
    for token in text.split('"')[1:2]:
        major = token.split(".")[0]
        if major.isdigit() and int(major) < 17:
            raise ToolMissingError("java 17+", f"Found Java {token}. {_JAVA_HINT}")


def resolve_jars(state_dir: Path) -> Path:
    """Return a folder holding the broker's jars, resolving them with Maven on first use.

    The folder is versioned (``kafka-libs-4.4.0``) and marked complete only after Maven
    succeeded, so an interrupted download is redone rather than half-used.
    """
    # Absolute: Maven resolves a relative output directory against the pom's folder.
    state_dir = Path(state_dir).resolve()
    libs = state_dir / f"kafka-libs-{KAFKA_VERSION}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise ToolMissingError("mvn", _MAVEN_HINT)
    _check_java_version(java_executable())
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kafka-libs-", dir=state_dir))
    with resources.as_file(resources.files("rayml.localkafka") / "pom.xml") as pom:
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
            f"-Dkafka.version={KAFKA_VERSION}",
        ]
        logger.info("resolving Kafka %s jars with Maven into %s", KAFKA_VERSION, libs)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(
            f"Maven could not resolve the Kafka {KAFKA_VERSION} jars "
            f"(exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    if not list(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        raise BrokerError(f"Maven finished but {staging} holds no kafka_2.13-{KAFKA_VERSION}.jar")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.touch()
    return libs
