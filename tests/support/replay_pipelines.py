"""Pipelines for the replay tests (tests/integration/test_replay.py), on one small model.

``testing.replay_label`` answers the class the stored model predicts for each row, so two
versions of the model disagree on some rows. ``testing.replay_fragile`` ends its worker's
process while the file a row names exists (a bug in what the pipeline depends on): its
requests give up and are dead-lettered; once the test deletes the file (the fix), the same
requests, replayed, are answered.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from rayml.pipeline import inference

MODEL = "testing_replay"


class Row(BaseModel):
    features: list[float]


class FragileRow(BaseModel):
    features: list[float]
    broken_while: str | None = None


@inference("testing.replay_label", model=MODEL, params=Row)
def replay_label(model: Any, batch: list[Row]) -> list[int]:
    """The model's class of each row."""
    return [int(y) for y in model.predict([row.features for row in batch])]


@inference("testing.replay_fragile", model=MODEL, params=FragileRow)
def replay_fragile(model: Any, batch: list[FragileRow]) -> list[int]:
    """Ends its process while the file a row names exists; else the number of features."""
    if any(row.broken_while and os.path.exists(row.broken_while) for row in batch):
        os._exit(1)
    return [len(row.features) for row in batch]
