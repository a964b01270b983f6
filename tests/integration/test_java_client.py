"""Cross-language end to end: the Java client sends N requests to an in-process executor on the
real broker and receives N correct results on its own reply topic.

The runnable jar comes from ``make java-client`` (``mvn -B -q -f clients/java/pom.xml package``,
which also runs the Java client's schema tests); if it is missing or older than the Java sources,
this test builds it with Maven itself. Java and Maven are required: their absence fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from rayml.config import Settings
from tests.support.models import breast_cancer_rows, store_breast_cancer
from tests.support.otlp import OtlpReceiver, otlp_receiver
from tests.support.served import running_executor
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
JAVA_PROJECT = REPO / "clients" / "java"
JAR = JAVA_PROJECT / "target" / "rayml-client.jar"
N = 200
SUMMARY = re.compile(r"^received=(\d+) ok=(\d+) errors=(\d+) missing=(\d+) ")


def java_client_jar() -> Path:
    """The runnable jar, (re)built with Maven when missing or older than its sources."""
    if shutil.which("java") is None:
        pytest.fail("the Java client test needs Java 17+ on PATH (apt-get install openjdk-17-jdk)")
    sources = [JAVA_PROJECT / "pom.xml", *JAVA_PROJECT.glob("src/main/**/*")]
    newest = max(p.stat().st_mtime for p in sources if p.is_file())
    if JAR.is_file() and JAR.stat().st_mtime >= newest:
        return JAR
    mvn = shutil.which("mvn")
    if mvn is None:
        pytest.fail(
            f"{JAR} is missing and Maven is not on PATH to build it (apt-get install maven)"
        )
    build = subprocess.run(
        [mvn, "-B", "-q", "-f", str(JAVA_PROJECT / "pom.xml"), "-DskipTests", "package"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, f"mvn package failed:\n{build.stdout}\n{build.stderr}"
    return JAR


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture
def running(settings: Settings, ray_runtime: str, receiver: OtlpReceiver) -> Iterator[Settings]:
    """An executor tracing every request (sample ratio 1) to ``receiver``."""
    ex = settings.executor.model_copy(
        update={"worker_num_cpus": 0.5, "num_workers": 2, "drain_timeout_s": 10.0}
    )
    tracing = settings.tracing.model_copy(
        update={"otlp_endpoint": receiver.url, "sample_ratio": 1.0}
    )
    settings = settings.model_copy(update={"executor": ex, "tracing": tracing})
    with running_executor(settings):
        yield settings


def test_java_client_gets_n_correct_results(
    running: Settings, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    jar = java_client_jar()
    settings = running
    _version, model = store_breast_cancer(settings.models.root)
    rows = breast_cancer_rows(N, seed=7)
    proba = model.predict_proba(rows)
    params_file = tmp_path / "rows.jsonl"
    params_file.write_text("".join(json.dumps({"features": r.tolist()}) + "\n" for r in rows))

    run = subprocess.run(
        [
            "java",
            "-jar",
            str(jar),
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
            "--pipeline",
            "breast_cancer.predict",
            "--params-file",
            str(params_file),
            "--input-topic",
            settings.topics.input,
            "--timeout-s",
            "60",
            "--max-in-flight",
            "64",
            "--print-results",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, f"no output from the Java client:\n{run.stderr}"
    summary = SUMMARY.match(lines[-1])
    assert summary, f"no summary line in:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    received, ok, errors, missing = map(int, summary.groups())
    assert (received, ok, errors, missing) == (N, N, 0, 0), lines[-1]
    assert run.returncode == 0, run.stderr
    # Each request started a trace; each result came back in it, and rayml's spans are there.
    assert f" traced={N}" in lines[-1]
    (trace_line,) = [line for line in run.stderr.splitlines() if line.startswith("trace_ids=")]
    trace_ids = set(trace_line.removeprefix("trace_ids=").split(","))
    assert len(trace_ids) == 10
    wait_until(
        lambda: trace_ids <= {s.trace_id for s in receiver.spans if s.name == "rayml.request"},
        "the Java requests' spans are received",
        60,
    )

    seen: set[int] = set()
    ids: set[str] = set()
    for line in lines[:-1]:
        record = json.loads(line)
        i, result = record["index"], record["result"]
        assert result["status"] == "ok", result
        assert result["pipeline"] == "breast_cancer.predict"
        assert result["result"]["label"] == int(proba[i].argmax()), f"row {i}"
        assert result["result"]["probability"] == pytest.approx(float(proba[i].max()), abs=1e-6)
        seen.add(i)
        ids.add(result["id"])
    assert seen == set(range(N)), "every request answered"
    assert len(ids) == N, "exactly once"

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    leftovers = [
        t
        for t in admin.list_topics(timeout=10).topics
        if ".reply." in t and t.startswith(settings.topics.input)
    ]
    assert leftovers == [], "the Java client deletes its own reply topic on close"


def _java(jar: Path, settings: Settings, *args: str) -> tuple[list[dict], tuple[int, ...], int]:
    """Run the Java client; its printed results, summary numbers and exit status."""
    run = subprocess.run(
        [
            "java",
            "-jar",
            str(jar),
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
            "--input-topic",
            settings.topics.input,
            "--print-results",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    summary = SUMMARY.match(lines[-1]) if lines else None
    assert summary, f"no summary line in:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    results = [json.loads(line)["result"] for line in lines[:-1]]
    return results, tuple(map(int, summary.groups())), run.returncode


def test_java_client_trains_on_the_training_topic_and_is_refused_on_the_input_topic(
    running: Settings,
) -> None:
    jar = java_client_jar()
    settings = running
    train = ["--pipeline", "breast_cancer.train", "--params", '{"n_estimators": 3}']

    results, counts, status = _java(
        jar,
        settings,
        *train,
        "--train",
        "--training-topic",
        settings.topics.jobs,
        "--timeout-s",
        "240",
    )
    assert counts == (1, 1, 0, 0), results
    assert status == 0
    [trained] = results
    assert trained["model"]["name"] == "breast_cancer"
    assert trained["result"]["version"] == trained["model"]["version"]

    results, counts, status = _java(jar, settings, *train, "--timeout-s", "60")
    assert counts == (1, 0, 1, 0), results
    assert status == 1
    [refused] = results
    assert refused["error"]["type"] == "wrong_topic"
    assert refused["error"]["details"]["use"] == settings.topics.jobs


def test_java_client_sends_batch_priority_on_the_bulk_lane(running: Settings) -> None:
    jar = java_client_jar()
    settings = running
    store_breast_cancer(settings.models.root)
    row = json.dumps({"features": breast_cancer_rows(1)[0].tolist()})
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})

    def records(topic: str) -> int:
        probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "p"})
        try:
            parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(
                probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
            )
        finally:
            probe.close()

    before = records(settings.topics.input)
    results, counts, status = _java(
        jar,
        settings,
        *("--pipeline", "breast_cancer.predict", "--params", row, "--count", "20"),
        *("--priority", "batch", "--timeout-s", "60"),
    )
    assert counts == (20, 20, 0, 0), results
    assert status == 0
    # The bulk lane beside the input topic carried them; the interactive lane none of them.
    assert records(settings.topics.input_batch) == 20
    assert records(settings.topics.input) == before
