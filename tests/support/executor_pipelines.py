"""Pipelines that misbehave on purpose, for the executor's fault tests.

They use the example ``breast_cancer`` model so that the store fixture serves them too.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any

from pydantic import BaseModel

from rayml.pipeline import inference


class Row(BaseModel):
    features: list[float]


@inference("testing.poison", model="breast_cancer", params=Row)
def poison(model: Any, batch: list[Row]) -> list[dict[str, Any]]:
    """Raises for the whole batch if any row starts with a negative number."""
    if any(row.features[0] < 0 for row in batch):
        raise ValueError("poisoned row: features[0] < 0")
    return [{"n": len(row.features)} for row in batch]


@inference("testing.slow", model="breast_cancer", params=Row)
def slow(model: Any, batch: list[Row]) -> list[dict[str, Any]]:
    """Takes SLOW_PIPELINE_S (default 0.1 s) per batch, whatever its size."""
    time.sleep(float(os.environ.get("SLOW_PIPELINE_S", "0.1")))
    return [{"n": len(row.features)} for row in batch]


@inference("testing.pid", model="breast_cancer", params=Row)
def pid(model: Any, batch: list[Row]) -> list[int]:
    """Answers with the worker process id (to find and kill a worker)."""
    return [os.getpid()] * len(batch)


@inference("testing.killer", model="breast_cancer", params=Row)
def killer(model: Any, batch: list[Row]) -> list[dict[str, Any]]:
    """Ends its worker process (a segfault's stand-in) if any row starts with a negative number."""
    if any(row.features[0] < 0 for row in batch):
        os._exit(1)
    return [{"n": len(row.features)} for row in batch]


@inference("testing.hang", model="breast_cancer", params=Row)
def hang(model: Any, batch: list[Row]) -> list[dict[str, Any]]:
    """Never returns if any row starts with a negative number (a deadlock's stand-in)."""
    if any(row.features[0] < 0 for row in batch):
        threading.Event().wait()
    return [{"n": len(row.features)} for row in batch]


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@inference("testing.hog", model="breast_cancer", params=Row)
def hog(model: Any, batch: list[Row]) -> list[dict[str, Any]]:
    """Asks for 16 GiB at once if any row starts with a negative number, under an address-space
    limit of what the process holds plus 512 MiB (a runaway allocation's stand-in): the
    allocation is refused with ``MemoryError`` and the machine's memory is never at risk."""
    if any(row.features[0] < 0 for row in batch):
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_address_space_bytes() + 512 * 1024**2, hard))
        try:
            bytearray(16 * 1024**3)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return [{"n": len(row.features)} for row in batch]
