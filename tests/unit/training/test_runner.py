"""The job runner's exactly-once bookkeeping without Kafka or Ray (fake clients).

* A transactional producer that failed fatally inside a write or a begin (fenced) makes the
  runner's next commit raise, so its loop crashes and Ray restarts the actor; it never trains
  on quietly, committing nothing, holding its partitions.
* An aborted transaction rewinds the partitions but keeps the jobs still running: their trials
  are not cancelled, their record polled again does not start them a second time, and the answer
  of one that finished before that waits for its record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from sklearn.linear_model import LogisticRegression

from rayml.config import Settings
from rayml.delivery.txn_errors import ProducerFencedError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.partitions import TP
from rayml.models.store import ModelStore
from rayml.pipeline import Registry
from rayml.protocol.envelopes import ErrorInfo, Request, decode_result
from rayml.training import publish as publish_module
from rayml.training.plan import Job, Trial
from rayml.training.runner import JobRunner
from rayml.training.task import request_hash
from tests.support.fake_serving import FakeServing
from tests.support.training_pipelines import FastParams

JOBS: TP = ("ml.pipeline.jobs", 0)
FENCED = KafkaError(KafkaError._FENCED, fatal=True)
FAILED = ErrorInfo(type="pipeline_failed", message="it raised")


class TxnProducer:
    """A transactional producer: records writes and transactional calls; ``fail`` makes a
    call of that name raise its error; write failures are reported at flush()."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sent: list[tuple[str, bytes]] = []
        self.fail: dict[str, KafkaError] = {}
        self.delivery_error: KafkaError | None = None
        self._reports: list[Any] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise KafkaException(self.fail[name])

    def init_transactions(self, *_: Any) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, *, value: bytes, on_delivery: Any, **_: Any) -> None:
        self._call("produce")
        self.sent.append((topic, value))
        self._reports.append((on_delivery, topic))

    def flush(self, *_: Any) -> int:
        reports, self._reports = self._reports, []
        for callback, topic in reports:
            callback(self.delivery_error, _Msg(topic))
        return 0

    def poll(self, *_: Any) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: list[Any], *_: Any) -> None:
        self._call("send_offsets")
        self.offsets = [(tp.topic, tp.partition, tp.offset) for tp in offsets]

    def commit_transaction(self, *_: Any) -> None:
        self._call("commit")

    def abort_transaction(self, *_: Any) -> None:
        self._call("abort")

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> Any:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))  # never asked in these tests


class _Msg:
    """A delivery report's message, or a polled record (``value``: its bytes)."""

    def __init__(self, topic: str, offset: int = 0, value: bytes = b"") -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def key(self) -> bytes:
        return b"job"

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


class Events:
    def produce(self, *_: Any, **__: Any) -> None:
        pass

    def poll(self, *_: Any) -> int:
        return 0

    def flush(self, *_: Any) -> int:
        return 0

    def purge(self, *_: Any, **__: Any) -> None:
        pass


class Consumer:
    """What the runner asks of its consumer here: group metadata, committed offsets, seeks."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> bytes:
        return b"meta"

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, 3) for p in parts]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


@pytest.fixture
def cancelled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(ray, "cancel", lambda ref, **_: calls.append(ref))
    return calls


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> JobRunner:
    producer, consumer = TxnProducer(), Consumer()
    monkeypatch.setattr(kafka_clients, "transactional_producer", lambda *a, **k: producer)
    monkeypatch.setattr(kafka_clients, "producer", lambda *a, **k: Events())
    monkeypatch.setattr(kafka_clients, "consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(publish_module, "ServingState", lambda *a: FakeServing())
    settings = Settings(
        executor={"delivery": "exactly_once"}, models={"root": str(tmp_path / "models")}
    )
    registry = Registry()
    registry.discover(["tests.support.training_pipelines"], entry_points=False)
    job_runner = JobRunner(settings, "r1", registry)
    assert job_runner.txn is not None
    job_runner.txn.start()
    job_runner._assigned = frozenset({JOBS})
    return job_runner


def producer_of(runner: JobRunner) -> TxnProducer:
    assert isinstance(runner.producer, TxnProducer)
    return runner.producer


def running_job(runner: JobRunner, offset: int, job_id: str) -> Job:
    """A job polled at ``offset`` whose trial's task is running (a stand-in ref)."""
    spec = runner.registry.get("testing.train_fast")
    request = Request(id=job_id, pipeline=spec.name, tenant="default")
    job = Job(JOBS, offset, b"{}", [], request, spec, [Trial(0, FastParams())], False, 0.0)
    assert runner.txn is not None
    runner.txn.track(JOBS, offset)
    runner.tracker.track(JOBS, offset)
    runner.trials.running[f"ref-{job_id}"] = (job, job.trials[0])
    return job


def poll_again(runner: JobRunner, offset: int, job_id: str = "") -> None:
    """The rewound partition's record at ``offset`` is polled again (what step() does)."""
    assert runner.txn is not None
    runner.txn.track(JOBS, offset)
    runner.tracker.track(JOBS, offset)
    value = Request(id=job_id or "x", pipeline="testing.train_fast").model_dump_json()
    runner._accept(_Msg(JOBS[0], offset, value.encode()), JOBS, offset)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["produce", "begin"])
def test_a_producer_fenced_inside_a_write_makes_the_next_commit_raise(
    runner: JobRunner, where: str
) -> None:
    job = running_job(runner, 3, "job-1")
    producer_of(runner).fail[where] = FENCED
    runner.trials.running.clear()
    runner._fail(job, FAILED)  # staged: the write (or the begin) fails fatally, swallowed there
    assert runner.txn is not None
    assert not runner.txn.usable
    with pytest.raises(ProducerFencedError):
        runner.commit()  # raised, not skipped: the loop crashes and Ray restarts the actor
    assert "commit" not in producer_of(runner).calls


def test_a_loop_whose_commit_raises_fenced_leaves_the_group(runner: JobRunner) -> None:
    """What the actor relies on: the loop stops on the error instead of training on."""
    producer_of(runner).fail["begin"] = FENCED
    job = running_job(runner, 3, "job-1")
    runner.trials.running.clear()
    runner._fail(job, FAILED)
    closed: list[bool] = []
    runner.consumer = type(  # type: ignore[assignment]
        "C",
        (Consumer,),
        {
            "subscribe": lambda self, *a, **k: None,
            "close": lambda self: closed.append(True),
        },
    )()
    turns: list[int] = []

    def step() -> None:  # a turn that only commits; stops the loop after a few
        turns.append(1)
        if len(turns) >= 3:
            runner._stop.set()
        runner.commit()

    runner.step = step  # type: ignore[method-assign]
    with pytest.raises(ProducerFencedError):
        runner.run()
    assert (len(turns), closed) == (1, [True])  # the first commit ends the loop


def test_an_abort_keeps_running_jobs_and_redoes_only_the_answers(
    runner: JobRunner, cancelled: list[Any]
) -> None:
    producer = producer_of(runner)
    answered = running_job(runner, 3, "answered")
    running = running_job(runner, 4, "running")
    runner.trials.running.pop("ref-answered")
    runner._fail(answered, FAILED)  # its answer enters the transaction...
    producer.delivery_error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    runner.commit()  # ...whose write fails: aborted, rewound to the committed offset (3)
    assert "abort" in producer.calls
    assert runner.consumer.seeks == [(JOBS[0], 0, 3)]  # type: ignore[attr-defined]
    # The running job's trial goes on: not cancelled, not abandoned.
    assert cancelled == []
    assert not running.abandoned
    assert runner.trials.running == {"ref-running": (running, running.trials[0])}

    # Polled again: the running job is not started a second time.
    producer.delivery_error = None
    poll_again(runner, 4)
    assert runner.trials.waiting == type(runner.trials.waiting)()
    assert list(runner.trials.running) == ["ref-running"]
    assert runner._kept == {}


def test_a_kept_job_that_finishes_before_it_is_polled_again_is_answered_then(
    runner: JobRunner, cancelled: list[Any]
) -> None:
    producer = producer_of(runner)
    head = running_job(runner, 3, "head")
    job = running_job(runner, 4, "job-1")
    runner.trials.running.pop("ref-head")
    runner._fail(head, FAILED)
    producer.fail["commit"] = KafkaError(KafkaError._STATE, txn_requires_abort=True)
    runner.commit()  # aborted: rewound to offset 3, "job-1" kept
    del producer.fail["commit"]
    sent = len(producer.sent)
    runner.trials.running.clear()
    runner._fail(job, FAILED)  # it finishes before its record is read again: the answer waits
    assert len(producer.sent) == sent
    assert runner.counters.jobs_failed == 1  # the head's, before the abort
    poll_again(runner, 3, "head")  # the head had finished: not kept, redone (queued again)
    ((redo, _trial),) = runner.trials.waiting
    assert redo is not head
    poll_again(runner, 4)  # held back: the reorder buffer has it now, behind the head
    runner.trials.waiting.clear()
    runner._fail(redo, FAILED)  # the redo of the head fails again: both answers go out
    ids = [decode_result(v).id for t, v in producer.sent[sent:] if t == "ml.pipeline.output"]
    assert ids == ["head", "job-1"]
    assert runner.counters.jobs_failed == 3
    assert cancelled == []


def test_a_revoked_partition_drops_its_kept_jobs(runner: JobRunner, cancelled: list[Any]) -> None:
    producer = producer_of(runner)
    head = running_job(runner, 3, "head")
    job = running_job(runner, 4, "job-1")
    runner.trials.running.pop("ref-head")
    runner._fail(head, FAILED)
    producer.fail["commit"] = KafkaError(KafkaError._STATE, txn_requires_abort=True)
    runner.commit()
    assert set(runner._kept) == {(JOBS, 4)}
    runner.let_go({JOBS})  # revoked: the new owner redoes it
    assert runner._kept == {}
    assert job.abandoned
    assert cancelled == ["ref-job-1"]


@pytest.mark.parametrize("whose", ["other tenant", "other params"])
def test_a_replayed_job_id_of_another_tenant_or_other_params_runs_as_new(
    runner: JobRunner, whose: str
) -> None:
    """job-5's id is public: a request reusing it is not answered with job-5's version (its
    params, metrics, trials) but runs as a job of its own; the same job again is answered
    from the store."""
    tenant = runner.tenancy.of_topic(JOBS[0]).name
    digest = request_hash("testing.train_fast", {})
    ModelStore(runner.settings.models.root).save(
        "testing_fast",
        LogisticRegression().fit([[0.0], [1.0]], [0, 1]),
        pipeline="testing.train_fast",
        params={},
        metrics={"accuracy": 0.9},
        extra={
            "job_id": "job-5",
            "role": "model",
            "tenant": "team-b" if whose == "other tenant" else tenant,
            "request_hash": digest if whose == "other tenant" else request_hash("x", {}),
        },
    )
    poll_again(runner, 5, "job-5")
    assert runner.counters.jobs_reused == 0
    assert [job.request.id for job, _trial in runner.trials.waiting] == ["job-5"]


def test_the_same_job_redelivered_is_answered_from_the_store(runner: JobRunner) -> None:
    ModelStore(runner.settings.models.root).save(
        "testing_fast",
        LogisticRegression().fit([[0.0], [1.0]], [0, 1]),
        pipeline="testing.train_fast",
        params={},
        metrics={"accuracy": 0.9},
        extra={
            "job_id": "job-5",
            "role": "model",
            "tenant": runner.tenancy.of_topic(JOBS[0]).name,
            "request_hash": request_hash("testing.train_fast", {}),
        },
    )
    poll_again(runner, 5, "job-5")
    assert runner.counters.jobs_reused == 1
    assert not runner.trials.waiting
