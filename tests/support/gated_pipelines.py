"""A pipeline that holds its batches back until the test lets them run.

For scenarios whose timing must not be left to chance: the test creates a gate file, sends
requests naming it, and the worker waits while the file exists. So the ingest's in-flight
window fills and stays full (backpressure pauses it) until the test deletes the file.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pydantic import BaseModel

from rayml.pipeline import inference

GATE_MAX_WAIT_S = 120.0  # a test that never opens its gate does not hang its worker for good


class GatedRow(BaseModel):
    features: list[float]
    gate: str  # a file path: the batch waits while it exists


@inference("testing.gated", model="breast_cancer", params=GatedRow)
def gated(model: Any, batch: list[GatedRow]) -> list[dict[str, Any]]:
    """Waits while any row's gate file exists (at most ``GATE_MAX_WAIT_S``), then takes
    SLOW_PIPELINE_S (default 0.1 s) per batch like ``testing.slow``. A file, because the worker
    is another process."""
    deadline = time.monotonic() + GATE_MAX_WAIT_S
    gates = {row.gate for row in batch}
    while any(os.path.exists(gate) for gate in gates) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(float(os.environ.get("SLOW_PIPELINE_S", "0.1")))
    return [{"n": len(row.features)} for row in batch]
