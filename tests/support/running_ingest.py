"""An :class:`~rayml.executor.ingest.Ingest` in a thread of the test process, on the session's Ray.

For tests that need two ingests of one group with different settings, or the ingest's own
objects (its status, the error its loop raised), which an executor process hides.
"""

from __future__ import annotations

import threading
import time

from rayml.config import Settings
from rayml.executor.ingest import Ingest
from rayml.pipeline import Registry


class RunningIngest:
    """An :class:`Ingest` running in a thread; keeps what its loop raised."""

    def __init__(self, settings: Settings, ingest_id: str) -> None:
        registry = Registry()
        registry.discover(settings.executor.pipeline_modules)
        self.ingest = Ingest(settings, ingest_id, registry)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.ingest.run()
        except BaseException as exc:  # what the actor would exit on
            self.error = exc

    def wait_assigned(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ingest.status()["assignment"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.ingest.status()["assignment"], "no partitions assigned"
