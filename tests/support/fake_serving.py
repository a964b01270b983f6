"""The serving records as a follower of the models topic would hold them, for unit tests of
the promotion gate (no Kafka)."""

from __future__ import annotations

from rayml.models.promotion import ServingRecord


class FakeServing:
    """A :class:`~rayml.training.serving.ServingSource` holding the records it is given."""

    def __init__(self, *records: ServingRecord, caught_up: bool = True) -> None:
        self.records = {r.name: r for r in records}
        self.caught_up = caught_up

    def get(self, model: str) -> ServingRecord | None:
        return self.records.get(model)

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self.caught_up
