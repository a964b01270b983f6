"""What each version answered, as written to the shadow topic: the input vector for drift."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rayml.config import Settings
from rayml.executor.rollout_answers import RolloutAnswers
from rayml.executor.work import BatchOutcome, InFlight, ItemError, Pending
from rayml.pipeline import load_spec_by_path
from rayml.protocol.envelopes import Request
from rayml.protocol.rollouts import VersionAnswer


class FakeProducer:
    """Keeps what would go to the topic."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce(self, topic: str, *, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.values.append(value)

    def poll(self, timeout: float) -> int:
        return 0


def batch(params: list[dict[str, Any]], roles: list[str | None]) -> InFlight:
    spec = load_spec_by_path("pipelines.iris:predict")
    items = [
        Pending(("in", 0), i, b"raw", Request(id=f"r{i}", pipeline=spec.name, params=p), spec, 0.0)
        for i, p in enumerate(params)
    ]
    for item, role in zip(items, roles, strict=True):
        item.role = role
    return InFlight((spec.import_path, "iris", "000001"), items, "w0", 0.0)


@pytest.fixture
def answers() -> tuple[RolloutAnswers, FakeProducer]:
    out = RolloutAnswers(Settings(), "ingest-0")
    producer = FakeProducer()
    out._producer = producer  # type: ignore[assignment]
    return out, producer


def written(producer: FakeProducer) -> list[VersionAnswer]:
    return [VersionAnswer.model_validate_json(v) for v in producer.values]


def test_serving_and_canary_answers_carry_the_input_vector_a_shadow_does_not(
    answers: tuple[RolloutAnswers, FakeProducer],
) -> None:
    out, producer = answers
    row = [5.1, 3.5, 1.4, 0.2]
    sent = batch([{"features": row}] * 3, ["serving", "canary", None])
    outcome = BatchOutcome("iris", "000001", [{"label": 0}, ItemError("x", "y"), 1], 1.0, "w0")
    out.answered(sent, outcome)
    out.shadowed(sent, outcome)
    got = written(producer)
    assert [(a.role, a.inputs) for a in got] == [
        ("serving", row),
        ("canary", row),  # an error answer still says what it was asked
        ("shadow", None),
        ("shadow", None),
        ("shadow", None),
    ]
    assert got[1].status == "error"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"features": []},
        {"features": [1.0] * 257},
        {"a": [1.0], "b": [2.0]},
        {"features": [1.0, "2"]},
        {"features": [True, 1.0]},
        {"x": 1.0},
    ],
    ids=repr,
)
def test_params_without_exactly_one_vector_write_no_inputs(
    answers: tuple[RolloutAnswers, FakeProducer], params: dict[str, Any]
) -> None:
    out, producer = answers
    out.answered(batch([params], ["serving"]), BatchOutcome("iris", "000001", [0], 1.0, "w0"))
    (doc,) = [orjson.loads(v) for v in producer.values]
    assert "inputs" not in doc
    assert doc["status"] == "ok"


def test_requests_not_under_rollout_write_nothing(
    answers: tuple[RolloutAnswers, FakeProducer],
) -> None:
    out, producer = answers
    out.answered(
        batch([{"features": [1.0]}], [None]), BatchOutcome("iris", "000001", [0], 1.0, "w0")
    )
    assert producer.values == []


def test_above_the_budget_only_a_sample_of_request_ids_is_written() -> None:
    """A busy model under rollout costs the ingest a hash per request, not a record: the
    sample is the monitor's (the same hash of the id), so an id's answers stay together."""
    from rayml.config import load_settings
    from rayml.executor.rollout_answers import RolloutAnswers
    from rayml.protocol.rollouts import sample_share

    ra = RolloutAnswers(load_settings(rollout={"monitor_max_answers_per_s": 100}), "i0")
    assert ra.kept("anything")  # below the budget: every id
    ra._seen = 5_000  # 500 records a second over the last 10 s
    ra._since -= 10.0
    ra.poll()
    assert abs(ra.sample - 0.2) < 0.01
    ids = [f"r{i}" for i in range(5_000)]
    kept = [i for i in ids if ra.kept(i)]
    assert kept == [i for i in ids if sample_share(i.encode()) < ra.sample]
    assert 850 <= len(kept) <= 1_150  # about a fifth
