"""The ingest's in-flight window: how many records it may poll now, and when it pauses. Pure.

Two budgets hold what the ingest keeps between a record's poll and its done offset: a count
(``executor.max_in_flight``) and bytes (``executor.max_in_flight_bytes``): the records' value
lengths, plus the results the writer holds for topics whose writes fail (waiting for their
topic, or parked while the broker is asked; :attr:`~rayml.delivery.result_writer.ResultWriter.
held_bytes`), which stay in memory as long as the topic fails. Over either, the ingest pauses its
partitions; it resumes once both have fallen to half
(:class:`~rayml.executor.batching.Backpressure`'s hysteresis, one per budget).

A record's size is known only once it is polled, so each poll asks for as many records as the
byte room holds at the size the window expects: a running average of the records seen (until
the first poll, the largest request accepted, ``executor.max_request_bytes``). For records of
similar sizes the held bytes stay within the budget, give or take one record; records larger
than the average can overshoot it by what one poll took beyond its estimate. With nothing held,
at least one record is taken, so a record larger than the whole budget proceeds on its own and
nothing deadlocks.

Example:
    >>> w = InFlightWindow(max_records=1_000, max_bytes=10_000, first_guess_bytes=1_000)
    >>> w.poll_limit(in_flight=0, held_bytes=0, most=500)    # room for ten of the guessed size
    10
    >>> w.observe(records=10, nbytes=1_000)                   # they were 100 bytes each
    >>> w.record_size
    820.0
    >>> w.poll_limit(in_flight=10, held_bytes=9_500, most=500), w.full(10, 9_500)
    (0, True)
    >>> w.should_resume(in_flight=10, held_bytes=5_000)
    True
    >>> huge = InFlightWindow(max_records=1_000, max_bytes=10_000, first_guess_bytes=50_000)
    >>> huge.poll_limit(0, 0, most=500), huge.poll_limit(1, 50_000, most=500)  # alone, then none
    (1, 0)
"""

from __future__ import annotations

from rayml.executor.batching import Backpressure

__all__ = ["InFlightWindow"]


class InFlightWindow:
    """A record budget and a byte budget for what the ingest holds, with hysteresis.

    Args:
        max_records: Records held at most (``executor.max_in_flight``).
        max_bytes: Bytes of record values held at most (``executor.max_in_flight_bytes``).
        first_guess_bytes: The size expected of a record before any was seen.
        resume_ratio: Resume once both budgets are used to this fraction or less.
        smoothing: Weight of one poll's mean size in the running average (0 < s <= 1).

    Raises:
        ValueError: a budget < 1, ``resume_ratio`` outside [0, 1) or ``smoothing`` outside
            (0, 1].
    """

    __slots__ = ("_bytes", "_records", "_size", "_smoothing")

    def __init__(
        self,
        max_records: int,
        max_bytes: int,
        first_guess_bytes: int,
        resume_ratio: float = 0.5,
        smoothing: float = 0.2,
    ) -> None:
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self._records = Backpressure(max_records, resume_ratio)
        self._bytes = Backpressure(max_bytes, resume_ratio)
        self._smoothing = smoothing
        self._size = float(min(max(first_guess_bytes, 1), max_bytes))

    @property
    def max_records(self) -> int:
        return self._records.max_in_flight

    @property
    def max_bytes(self) -> int:
        return self._bytes.max_in_flight

    @property
    def record_size(self) -> float:
        """The size the window expects of the next record (bytes)."""
        return self._size

    def observe(self, records: int, nbytes: int) -> None:
        """Fold one poll of ``records`` records weighing ``nbytes`` into the expected size.

        Kept between one byte and the whole budget: one giant record does not stop polling
        for longer than the budget's worth of records would.
        """
        if records <= 0:
            return
        self._size += self._smoothing * (nbytes / records - self._size)
        self._size = min(max(self._size, 1.0), float(self.max_bytes))

    def poll_limit(self, in_flight: int, held_bytes: int, most: int) -> int:
        """How many records to poll now: 0 when a budget has no room for one more.

        Args:
            in_flight: Records held (polled and not done).
            held_bytes: What they weigh, with the results held for failing topics.
            most: The most one poll may take (``executor.poll_max_messages``).
        """
        room = self.max_records - in_flight
        if room <= 0:
            return 0
        if held_bytes <= 0:
            # Nothing held: at least one, so that a record larger than the budget still runs.
            fits = max(1, int(self.max_bytes // self._size))
        else:
            fits = int((self.max_bytes - held_bytes) // self._size)
        return max(0, min(most, room, fits))

    def full(self, in_flight: int, held_bytes: int) -> bool:
        """Whether to pause: one budget has no room for another record."""
        return self.poll_limit(in_flight, held_bytes, 1) == 0

    def should_resume(self, in_flight: int, held_bytes: int) -> bool:
        """Whether paused partitions may resume: both budgets fell to their resume level, and
        there is room for a record (records larger than half the budget: once nothing is held,
        rather than resume and pause again at once)."""
        return (
            self._records.should_resume(in_flight)
            and self._bytes.should_resume(held_bytes)
            and not self.full(in_flight, held_bytes)
        )
