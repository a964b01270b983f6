"""One logging format for the CLI's process and the Ray actors rayml starts.

A Ray actor is a process of its own: without a handler, its INFO lines (assignments,
revocations, drains) are dropped and its warnings lose their timestamps. Ray forwards an
actor's stderr to the driver (``log_to_driver``) and to ``<session>/logs/worker-*.err``.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    """Send rayml's records at ``level`` and above to stderr (once per process)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT)
    # A process Ray configured first keeps its root level; rayml's own loggers get ``level``.
    logging.getLogger("rayml").setLevel(level.upper())
