"""Where the executor puts its ingest actors (the spread case needs a cluster: test_cluster.py)."""

from __future__ import annotations

import pytest

from rayml.config import load_settings
from rayml.errors import ConfigError
from rayml.executor.service import ingest_placements


def test_default_placement_leaves_it_to_ray() -> None:
    settings = load_settings(executor={"ingest_placement": "default"})
    assert ingest_placements(settings, 3) == ["DEFAULT"] * 3


def test_spread_is_the_default_and_other_values_are_refused() -> None:
    assert load_settings().executor.ingest_placement == "spread"
    with pytest.raises(ConfigError, match=r"executor\.ingest_placement"):
        load_settings(executor={"ingest_placement": "everywhere"})
