"""The rollout reader's sample of request ids (its Kafka side is tested in
tests/integration/test_rollouts.py)."""

from __future__ import annotations

import time
import uuid

from rayml.rollouts.reading import RolloutReader, id_share


def test_an_ids_share_is_stable_and_spread_evenly() -> None:
    ids = [uuid.uuid4().hex.encode() for _ in range(20_000)]
    assert all(id_share(i) == id_share(i) for i in ids[:100])
    below = sum(id_share(i) < 0.25 for i in ids)
    assert 4_600 <= below <= 5_400  # binomial(20,000, 0.25): mean 5,000, sd ~61


def reader(budget: float | None) -> RolloutReader:
    r = RolloutReader.__new__(RolloutReader)  # the sampling logic alone, no consumer
    r.max_answers_per_s = budget
    r.sample = 1.0
    r._seen = 0
    r._since = time.monotonic() - 10.0
    return r


def test_the_sample_keeps_the_answer_rate_within_the_budget() -> None:
    r = reader(2_000.0)
    r._seen = 100_000  # 10,000 answer records a second over the last 10 s
    r._resample()
    assert abs(r.sample - 0.2) < 0.01
    r._since = time.monotonic() - 10.0
    r._seen = 5_000  # traffic fell to 500 a second: every one again
    r._resample()
    assert r.sample == 1.0


def test_without_a_budget_every_answer_is_kept() -> None:
    r = reader(None)
    r._seen = 10_000_000
    r._resample()
    assert r.sample == 1.0
