"""The registry shows what is served (rayml.protocol.leases), on the real broker and Ray: each
executor holds a lease on its pipelines; one killed without a goodbye stops counting once its
lease lapses, and a request to a pipeline nothing serves gets a clear error instead of waiting
in Kafka for ever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from rayml.cli.main import app
from rayml.client import Client, PipelineNotServedError
from rayml.config import Settings
from rayml.executor.service import Executor
from rayml.kafka.topics import create_topics
from tests.support.executor_process import ExecutorProcess, settings_env
from tests.support.models import breast_cancer_rows, store_breast_cancer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

EXTRA = "tests.support.executor_pipelines"  # served by the process executor only
ONLY_THERE = "testing.pid"


@pytest.fixture
def leased(settings: Settings) -> Settings:
    ex = settings.executor.model_copy(
        update={"registry_lease_s": 3.0, "num_workers": 1, "worker_num_cpus": 0.5}
    )
    s = settings.model_copy(update={"executor": ex})
    store_breast_cancer(s.models.root)
    create_topics(s.kafka, s.topics)
    return s


@pytest.fixture
def in_process(leased: Settings, ray_runtime: str) -> Iterator[Executor]:
    executor = Executor(leased)
    executor.start()
    try:
        yield executor
    finally:
        executor.drain(10)


def served_by(client: Client) -> dict[str, list[str] | None]:
    return {p.name: p.served_by for p in client.pipelines()}


def test_a_killed_executors_pipelines_stop_counting_once_its_lease_lapses(
    leased: Settings, in_process: Executor, ray_runtime: str
) -> None:
    extra = leased.model_copy(
        update={
            "executor": leased.executor.model_copy(update={"pipeline_modules": [EXTRA]}),
        }
    )
    process = ExecutorProcess(extra, ray_runtime).start()
    try:
        with Client(settings=leased) as client:
            both = wait_until(
                lambda: (s := served_by(client)).get(ONLY_THERE) and s,
                "the process executor's lease lists its pipelines",
                30,
            )
            assert both["breast_cancer.predict"] is not None
            assert in_process.instance_id in both["breast_cancer.predict"]
            assert len(both["breast_cancer.predict"]) == 2
            assert in_process.instance_id not in (both[ONLY_THERE] or [])
            process.kill()  # no drain, no tombstone: only the lease's lapse tells
            after = wait_until(
                lambda: (s := served_by(client)).get(ONLY_THERE) == [] and s,
                "the killed executor's lease lapses",
                30,
            )
            assert after["breast_cancer.predict"] == [in_process.instance_id]
            with pytest.raises(PipelineNotServedError, match="no running executor serves it"):
                client.submit(ONLY_THERE, features=breast_cancer_rows(1)[0].tolist())
            # What the other executor serves is still answered.
            ok = client.submit("breast_cancer.predict", features=breast_cancer_rows(1)[0].tolist())
            assert ok.result(60).status == "ok"
    finally:
        process.kill()

    run = CliRunner().invoke(app, ["pipelines", "--json"], env=settings_env(leased))
    assert run.exit_code == 0, run.output
    listed = {p["name"]: p for p in json.loads(run.output)}
    assert listed[ONLY_THERE]["live"] is False
    assert listed[ONLY_THERE]["served_by"] == []
    assert listed["breast_cancer.predict"]["live"] is True


def test_a_stopped_executor_withdraws_its_lease_at_once(leased: Settings, ray_runtime: str) -> None:
    executor = Executor(leased)
    executor.start()
    with Client(settings=leased) as client:
        assert served_by(client)["breast_cancer.predict"] == [executor.instance_id]
        executor.drain(10)
        # The tombstone: no lease left at all, so liveness is unknown again (as before leases
        # existed): clients still send, and the requests wait in Kafka for the next executor.
        assert served_by(client)["breast_cancer.predict"] is None
