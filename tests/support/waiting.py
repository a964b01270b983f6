"""Waiting on a condition instead of sleeping: tests assert on a state, never on a delay."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], what: str, timeout_s: float = 30.0, every_s: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises:
        AssertionError: ``timeout_s`` passed first; the message names ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting until {what}")
        time.sleep(every_s)


class Budget:
    """One allowance for all the waits of a test, kept inside its pytest timeout.

    Each wait takes ``budget.left(cap_s)``: its own cap, or what is left if that is less. So the
    waits of a test never add up past its timeout: the wait that runs out fails with its own
    message (or returns, for helpers that leave the check to the caller's assertion) instead of
    pytest-timeout killing the test somewhere inside it.
    """

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self._deadline = time.monotonic() + total_s

    def left(self, cap_s: float) -> float:
        """Seconds the next wait may take: ``cap_s``, or what is left of the budget (>= 0)."""
        return max(0.0, min(cap_s, self._deadline - time.monotonic()))
