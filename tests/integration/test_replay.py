"""``rayml replay`` on the real broker (and, where requests must be answered, a real local Ray).

* ``replay dlq``: only the letters the filter chooses are replayed, to the bulk lane of their
  source topic's tenant (a training request to its training topic), with their value, key and
  headers (rayml's own replaced); a run of the same group never
  replays a letter twice; a letter naming a topic that is not a request topic is refused.
* Dead letters of a bug that is then fixed, replayed, are answered once, and a second replay
  sends nothing.
* A time range re-scored against two pinned versions, then ``replay diff``: the agreement and
  the changed labels it reports are those the test computes by predicting with both versions.

The command line runs in process (typer's runner), with the test's settings as ``RAYML_*``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result as CliResult
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from typer.testing import CliRunner

from rayml.cli.main import app
from rayml.config import Settings
from rayml.kafka.topics import create_topics
from rayml.models.store import ModelStore
from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
from rayml.protocol.envelopes import Result
from rayml.replay.dlq import transactional_id
from rayml.replay.errors import LetterRefusedError
from tests.support.executor_process import settings_env
from tests.support.kafka_io import CLIENT_LOG, ResultCollector, send_requests
from tests.support.replay_pipelines import MODEL
from tests.support.served import running_executor
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka]

HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def rayml(settings: Settings, *args: str, ok: bool = True) -> CliResult:
    """``rayml ARGS`` in this process, with ``settings`` as its environment."""
    done = CliRunner().invoke(app, list(args), env=settings_env(settings))
    if ok:
        assert done.exit_code == 0, (done.output, done.exception)
    return done


def rayml_json(settings: Settings, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(rayml(settings, *args, "--json").stdout)
    return out


def produce(settings: Settings, topic: str, records: list[dict[str, Any]]) -> None:
    """Produce ``records`` (``value``, ``key``, ``headers``, ``timestamp`` in ms) in order."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "logger": CLIENT_LOG}
    )
    for r in records:
        producer.produce(
            topic,
            value=r["value"],
            key=r.get("key"),
            headers=r.get("headers"),
            timestamp=r.get("timestamp", 0),
        )
    assert producer.flush(30) == 0


def records_on(settings: Settings, topic: str) -> list[Message]:
    """Every committed record of ``topic`` now, partition by partition (a transaction's
    marker takes an offset but is no record: each partition is read to its end event)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "logger": CLIENT_LOG,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        found: list[Message] = []
        left = set(meta.partitions)
        while left:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic} {sorted(left)} could not be read to their end"
            if msg.error() is None:
                found.append(msg)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                left.discard(msg.partition())
        return sorted(found, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def letter(rid: str, error_type: str, source: str, at_ms: int) -> dict[str, Any]:
    """A dead-letter record as the executor writes one, with a ``traceparent`` of its own."""
    meta = DeadLetter(
        error_type=error_type,
        error_message="it failed",
        source_topic=source,
        source_partition=0,
        source_offset=7,
        request_id=rid,
    )
    return {
        "value": json.dumps({"id": rid, "pipeline": "x.y", "params": {}}).encode(),
        "key": rid.encode(),
        "headers": [("traceparent", f"00-{rid}-01".encode()), *dead_letter_headers(meta)],
        "timestamp": at_ms,
    }


def headers(msg: Message) -> dict[str, bytes]:
    return dict(msg.headers() or [])


# --- replay dlq: filters, headers, one replay per group ---------------------------------------


def test_replay_dlq_sends_only_the_chosen_letters_once_with_their_headers(
    settings: Settings,
) -> None:
    create_topics(settings.kafka, settings.topics)
    t, now = settings.topics, now_ms()
    letters = [
        letter("chosen-1", "retries_exhausted", t.input, now - 30 * 60_000),
        letter("too-old", "retries_exhausted", t.input, now - 3 * HOUR_MS),
        letter("other-type", "invalid_json", t.input, now - 10 * 60_000),
        letter("chosen-2", "retries_exhausted", t.jobs, now - 5 * 60_000),
        letter("too-new", "retries_exhausted", t.input, now + 60_000),
    ]
    produce(settings, t.dlq, letters)
    group = f"replay-{uuid.uuid4().hex[:8]}"
    until = datetime.fromtimestamp(now / 1000, tz=UTC).isoformat()
    args = ("replay", "dlq", "--error-type", "retries_exhausted", "--since", "-1h")
    report = rayml_json(settings, *args, "--until", until, "--group", group)

    assert report["read"] == 5
    assert report["replayed"] == 2
    # An inference request goes back on the bulk lane (a replay is bulk work); training stays.
    assert report["replayed_to"] == {t.input_batch: 1, t.jobs: 1}
    assert report["skipped"] == {"before_since": 1, "error_type": 1, "at_or_after_until": 1}
    assert report["committed"] == {f"{t.dlq}[0]": 5}
    assert records_on(settings, t.input) == []
    [on_bulk] = records_on(settings, t.input_batch)
    [on_jobs] = records_on(settings, t.jobs)
    for copy, original, to in ((on_bulk, letters[0], t.input_batch), (on_jobs, letters[3], t.jobs)):
        assert copy.topic() == to
        assert copy.value() == original["value"]
        assert copy.key() == original["key"]
        offset = letters.index(original)
        assert copy.headers() == [
            ("traceparent", original["headers"][0][1]),
            ("rayml.replay.kind", b"dlq"),
            ("rayml.replay.from", f"{t.dlq}/0/{offset}".encode()),
        ]

    # The same group again: nothing, not even the letters the filter left out.
    again = rayml_json(settings, "replay", "dlq", "--group", group)
    assert (again["read"], again["replayed"]) == (0, 0)
    # Another group starts over; a dry run writes and commits nothing.
    dry = rayml_json(settings, "replay", "dlq", "--group", f"{group}-b", "--dry-run")
    assert (dry["read"], dry["replayed"], dry["dry_run"]) == (5, 5, True)
    assert len(records_on(settings, t.input_batch)) == 1
    assert len(records_on(settings, t.jobs)) == 1
    later = rayml_json(settings, "replay", "dlq", "--group", f"{group}-b", "--dry-run")
    assert later["replayed"] == 5, "a dry run commits nothing"


def test_replay_dlq_stops_at_a_letter_whose_source_is_not_a_request_topic(
    settings: Settings,
) -> None:
    """A letter naming the result topic is refused: the run stops there, after the letters
    before it; ``--skip-refused`` commits past it; the result topic is never written."""
    create_topics(settings.kafka, settings.topics)
    t, now = settings.topics, now_ms()
    produce(
        settings,
        t.dlq,
        [
            letter("before", "retries_exhausted", t.input, now),
            letter("forged", "retries_exhausted", t.output, now),
            letter("after", "retries_exhausted", t.input, now),
        ],
    )
    group = f"replay-{uuid.uuid4().hex[:8]}"
    stopped = rayml(settings, "replay", "dlq", "--group", group, ok=False)
    assert isinstance(stopped.exception, LetterRefusedError)
    assert stopped.exception.offset == 1
    assert stopped.exception.reason.startswith(
        f"source topic {t.output!r} is not a request topic of these settings"
    )
    assert [m.key() for m in records_on(settings, t.input_batch)] == [b"before"]

    report = rayml_json(settings, "replay", "dlq", "--group", group, "--skip-refused")
    assert (report["read"], report["replayed"], sum(report["refused"].values())) == (2, 1, 1)
    assert sorted(m.key() for m in records_on(settings, t.input_batch)) == [b"after", b"before"]
    assert records_on(settings, t.output) == []


def test_a_run_that_died_mid_chunk_is_redone_and_its_copies_never_seen(
    settings: Settings,
) -> None:
    """A run that wrote a copy and the offset past its letter in a transaction, then died
    before committing: the next run fences it, its copy is aborted (a read_committed reader
    never sees it), and each letter reaches the bulk lane exactly once."""
    create_topics(settings.kafka, settings.topics)
    t, now = settings.topics, now_ms()
    letters = [letter(f"r{n}", "retries_exhausted", t.input, now) for n in range(2)]
    produce(settings, t.dlq, letters)
    group = f"replay-{uuid.uuid4().hex[:8]}"
    servers = settings.kafka.bootstrap_servers
    dead = Producer(
        {
            "bootstrap.servers": servers,
            "transactional.id": transactional_id(group, t.dlq),
            "logger": CLIENT_LOG,
        }
    )
    dead.init_transactions(30)
    dead.begin_transaction()
    dead.produce(t.input_batch, value=letters[0]["value"], key=letters[0]["key"])
    member = Consumer({"bootstrap.servers": servers, "group.id": group, "logger": CLIENT_LOG})
    dead.send_offsets_to_transaction(
        [TopicPartition(t.dlq, 0, 1)], member.consumer_group_metadata(), 30
    )
    dead.flush(30)  # the copy is on the broker, in a transaction never committed

    report = rayml_json(settings, "replay", "dlq", "--group", group)
    assert report["replayed"] == 2
    assert sorted(m.key() for m in records_on(settings, t.input_batch)) == [b"r0", b"r1"]
    with pytest.raises(KafkaException):
        dead.commit_transaction(30)  # fenced by the new run
    assert rayml_json(settings, "replay", "dlq", "--group", group)["replayed"] == 0
    member.close()


# --- with an executor: the fix, the replay, one answer -----------------------------------------


def _executor_settings(settings: Settings, **executor: Any) -> Settings:
    ex = settings.executor.model_copy(
        update={
            "worker_num_cpus": 0.5,
            "num_workers": 2,
            "drain_timeout_s": 10.0,
            "max_batch_wait_ms": 1.0,
            "pipeline_modules": ["tests.support.replay_pipelines"],
            **executor,
        }
    )
    return settings.model_copy(update={"executor": ex})


def _fit(labels_seed: int | None) -> Any:
    """A logistic regression on iris; with ``labels_seed``, on shuffled labels (another model)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    if labels_seed is not None:
        y = np.random.default_rng(labels_seed).permutation(y)
    return LogisticRegression(max_iter=500).fit(x, y)


def _store(settings: Settings, *estimators: Any) -> list[str]:
    store = ModelStore(settings.models.root)
    return [
        store.save(MODEL, est, pipeline="p", params={}, metrics={}).version for est in estimators
    ]


@pytest.fixture
def served(settings: Settings, ray_runtime: str) -> Iterator[Settings]:
    """An executor on the replay pipelines whose requests give up after one worker death."""
    settings = _executor_settings(settings, max_attempts=1, max_batches_per_worker=1)
    _store(settings, _fit(None))
    with running_executor(settings):
        yield settings


@pytest.mark.ray
@pytest.mark.slow
def test_dead_letters_fixed_and_replayed_are_answered_once(
    served: Settings, tmp_path: Path
) -> None:
    settings = served
    flag = tmp_path / "broken"
    flag.touch()
    broken = [f"broken-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    fine = [f"fine-{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
    params = {"features": [1.0, 2.0]}
    requests = [
        *(
            {
                "id": i,
                "pipeline": "testing.replay_fragile",
                "params": {**params, "broken_while": str(flag)},
            }
            for i in broken
        ),
        *({"id": i, "pipeline": "testing.replay_fragile", "params": params} for i in fine),
    ]
    collector = ResultCollector(settings)
    try:
        send_requests(settings, requests)
        first = collector.wait_for([*broken, *fine], timeout_s=180)
        errors = [r.error.type if r.error else r.status for r in (first[i][0] for i in broken)]
        assert errors == ["retries_exhausted"] * 3
        assert all(first[i][0].status == "ok" for i in fine)
        wait_until(lambda: len(records_on(settings, settings.topics.dlq)) == 3, "3 dead letters")

        flag.unlink()  # the fix
        group = f"replay-{uuid.uuid4().hex[:8]}"
        report = rayml_json(settings, "replay", "dlq", "--group", group)
        assert report["replayed"] == 3
        assert report["replayed_by_type"] == {"retries_exhausted": 3}

        def answered_again() -> bool:
            collector.poll()
            return all(len(collector.results.get(i, [])) == 2 for i in broken)

        wait_until(answered_again, "the replayed letters are answered", timeout_s=120)
        again = rayml_json(settings, "replay", "dlq", "--group", group)
        assert (again["read"], again["replayed"]) == (0, 0)
        collector.poll_until_quiet(2.0)
    finally:
        collector.close()
    for rid in broken:
        statuses = [(r.status, r.error.type if r.error else None) for r in collector.results[rid]]
        assert statuses == [("error", "retries_exhausted"), ("ok", None)], rid
    assert all(len(collector.results[i]) == 1 for i in fine)
    assert len(records_on(settings, settings.topics.input)) == len(requests)
    assert len(records_on(settings, settings.topics.input_batch)) == len(broken)


# --- a time range against two versions, and the diff -------------------------------------------


@pytest.fixture
def two_versions(settings: Settings, ray_runtime: str) -> Iterator[tuple[Settings, list[Any]]]:
    settings = _executor_settings(settings)
    models = [_fit(None), _fit(labels_seed=0)]
    assert _store(settings, *models) == ["000001", "000002"]
    with running_executor(settings):
        yield settings, models


@pytest.mark.ray
@pytest.mark.slow
def test_a_range_replayed_against_two_versions_diffs_as_computed(
    two_versions: tuple[Settings, list[Any]],
) -> None:
    from sklearn.datasets import load_iris

    settings, (v1, v2) = two_versions
    rows = load_iris().data[::2]  # 75 rows
    now = now_ms()
    tag = uuid.uuid4().hex[:6]
    in_range = [f"in-{n}-{tag}" for n in range(len(rows))]

    def request(rid: str, pipeline: str, row: Any, at_ms: int) -> dict[str, Any]:
        body = {"id": rid, "pipeline": pipeline, "params": {"features": row.tolist()}}
        return {"value": json.dumps(body).encode(), "key": rid.encode(), "timestamp": at_ms}

    produce(
        settings,
        settings.topics.input,
        [
            *(
                request(f"old-{n}-{tag}", "testing.replay_label", rows[n], now - 3 * HOUR_MS)
                for n in range(10)
            ),
            *(
                request(i, "testing.replay_label", row, now - 20 * 60_000)
                for i, row in zip(in_range, rows, strict=True)
            ),
            *(
                request(f"other-{n}-{tag}", "testing.replay_fragile", rows[n], now - 20 * 60_000)
                for n in range(10)
            ),
        ],
    )
    t1, t2 = f"{settings.topics.input}.v1-{tag}", f"{settings.topics.input}.v2-{tag}"
    until = datetime.fromtimestamp(now / 1000, tz=UTC).isoformat()
    common = ("--from", "-1h", "--to", until, "--pipeline", "testing.replay_label")
    first = rayml_json(
        settings, "replay", "range", *common, "--pin", f"{MODEL}@1", "--to-topic", t1
    )
    assert (first["read"], first["sent"], first["created_topic"]) == (85, 75, True)
    assert first["skipped"] == {"pipeline": 10}
    second = rayml(
        settings, "replay", "range", *common, "--pin", f"{MODEL}@000002", "--to-topic", t2
    )
    assert "sent 75" in second.stdout, second.output

    answers: dict[str, dict[str, list[Result]]] = {}
    for topic, version in ((t1, "000001"), (t2, "000002")):
        collector = ResultCollector(settings, topic=topic)
        try:
            got = collector.wait_for(in_range, timeout_s=120)
            collector.poll_until_quiet(1.0)
        finally:
            collector.close()
        assert set(collector.results) == set(in_range), "only the range, only this pipeline"
        assert all(len(rs) == 1 and rs[0].status == "ok" for rs in got.values())
        assert {rs[0].model.version for rs in got.values() if rs[0].model} == {version}
        answers[topic] = got

    # What the diff must say, computed here with both versions.
    left = [int(y) for y in v1.predict(rows)]
    right = [int(y) for y in v2.predict(rows)]
    agree = sum(a == b for a, b in zip(left, right, strict=True))
    changed = Counter((a, b) for a, b in zip(left, right, strict=True) if a != b)
    assert 0 < agree < len(rows), "the two versions must disagree on some rows, not all"

    diff = rayml_json(settings, "replay", "diff", t1, t2)
    assert (diff["both"], diff["only_left"], diff["only_right"]) == (75, 0, 0)
    assert (diff["both_ok"], diff["agree"]) == (75, agree)
    assert diff["agreement"] == pytest.approx(agree / 75)
    assert {(c["left"], c["right"]): c["count"] for c in diff["changed"]} == dict(changed)
    assert diff["models"] == {"left": {f"{MODEL}@000001": 75}, "right": {f"{MODEL}@000002": 75}}
    for side, topic in (("left", t1), ("right", t2)):
        totals = [rs[0].timings.total_ms for rs in answers[topic].values()]
        assert diff["mean_total_ms"][side] == pytest.approx(sum(totals) / len(totals))
    table = rayml(settings, "replay", "diff", t1, t2).stdout
    print("\n" + table)
    assert f"agreement (result): {agree}/75" in table

    # The copies are on the bulk lane now (both runs sent there), inside a window that reaches
    # now: a later range run, which reads both lanes, skips them and re-scores the originals
    # alone.
    assert first["sent_to"] == {settings.topics.input_batch: 75}
    assert len(records_on(settings, settings.topics.input_batch)) == 150
    t3 = f"{settings.topics.input}.v3-{tag}"
    third = rayml_json(
        settings,
        "replay",
        "range",
        *common[:2],
        "--to",
        "now",
        *common[4:],
        "--pin",
        f"{MODEL}@1",
        "--to-topic",
        t3,
    )
    assert third["skipped"] == {"pipeline": 10, "replayed": 150}
    assert third["sent"] == 75
