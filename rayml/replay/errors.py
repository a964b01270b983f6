"""The errors ``rayml replay`` raises; each names what it was reading or writing."""

from __future__ import annotations

from rayml.errors import RaymlError

__all__ = ["LetterRefusedError", "ReadStalledError", "ReplayError"]


class ReplayError(RaymlError):
    """Raised when a replay or a diff cannot go on (bad option, missing topic, failed write)."""


class LetterRefusedError(ReplayError):
    """Raised when ``replay dlq`` meets a letter it may not replay (and ``skip_refused`` is off);
    the letters before it are replayed and committed, it and those after it are not."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"dead letter {topic}[{partition}]@{offset} refused: {reason}; stopped there "
            "(what came before it is replayed and committed). Fix the settings, or pass "
            "--skip-refused to commit past refused letters without replaying them"
        )


class ReadStalledError(ReplayError):
    """Raised when partitions stop advancing before the offset a read must reach (an open
    transaction holds read_committed readers back, or the broker is away)."""

    def __init__(self, what: dict[str, tuple[int, int]], stall_s: float) -> None:
        self.what = what
        self.stall_s = stall_s
        parts = ", ".join(f"{tp} at {pos} of {stop}" for tp, (pos, stop) in sorted(what.items()))
        super().__init__(f"no progress for {stall_s:g}s reading {parts}")
