"""A stand-in for a confluent-kafka ``Message`` in unit tests of pure logic (no broker)."""

from __future__ import annotations


class Record:
    """What the code under test reads of a polled record: topic, partition, offset, error,
    value."""

    def __init__(
        self,
        partition: int,
        offset: int = 0,
        topic: str = "in",
        error: object = None,
        value: bytes | None = b"",
    ):
        self._topic, self._partition, self._offset, self._error = topic, partition, offset, error
        self._value = value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> object:
        return self._error

    def value(self) -> bytes | None:
        return self._value
