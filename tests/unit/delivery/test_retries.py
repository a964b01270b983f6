"""Failing topics: backoff per topic, one probe at a time, logged once per interval. Fake clock."""

from __future__ import annotations

import doctest
import itertools
import logging

import pytest

import rayml.delivery.retries
from rayml.delivery.retries import FailingTopics, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def topics(clock: Clock, rng: float = 1.0, log_interval_s: float = 30.0) -> FailingTopics[str]:
    return FailingTopics(
        "ingest=t", 0.1, 30.0, log_interval_s, clock=clock, wall=lambda: 0.0, rng=lambda: rng
    )


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.delivery.retries).failed == 0


def test_the_delay_doubles_from_the_first_up_to_the_most_with_equal_jitter() -> None:
    full = [backoff_delay(n, 0.1, 30.0, rng=lambda: 1.0) for n in range(12)]
    assert full == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30, 30])
    half = [backoff_delay(n, 0.1, 30.0, rng=lambda: 0.0) for n in range(12)]
    assert half == pytest.approx([d / 2 for d in full])
    assert backoff_delay(10_000, 0.1, 30.0, rng=lambda: 0.5) == pytest.approx(22.5)


def test_one_probe_at_a_time_the_oldest_first_and_it_keeps_its_place() -> None:
    clock = Clock()
    t = topics(clock)
    for write in ("w1", "w2", "w3"):
        t.failed("out", "TOPIC_AUTHORIZATION_FAILED", write)
    assert t.hold("out", "w4")
    assert not t.hold("other", "x"), "a topic that did not fail is written at once"
    clock.now += 0.1
    assert t.due() == [("out", "w1")]
    clock.now += 50
    assert t.due() == [], "no second probe while one is out (within probe_lost_s, 60 s)"
    t.failed("out", "TOPIC_AUTHORIZATION_FAILED", "w1")  # the probe failed
    assert t.waiting == 4
    clock.now += 0.2
    assert t.due() == [("out", "w1")], "still the oldest"
    assert t.delivered("out") == ["w2", "w3", "w4"]
    assert t.waiting == 0
    assert "out" not in t


def test_failed_probes_back_off_exponentially_and_older_failures_do_not() -> None:
    clock = Clock()
    t = topics(clock)
    t.failed("out", "e", "w0")
    probe_times = []
    for _ in range(13):
        while not (due := t.due()):
            clock.now = round(clock.now + 0.05, 2)
        probe_times.append(clock.now)
        (_topic, probe) = due[0]
        t.failed("out", "e", "older write, sent before the topic failed")  # no effect on delay
        t.failed("out", "e", probe)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(probe_times)]
    assert gaps == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]


def test_the_failing_topic_is_logged_once_per_interval_not_per_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    t = topics(clock, log_interval_s=30.0)
    caplog.set_level(logging.WARNING, logger="rayml.delivery.retries")
    for n in range(1000):  # a burst of failures at once
        t.failed("out", "TOPIC_AUTHORIZATION_FAILED", f"w{n}")
    # 100 s of outage, the loop calling due() every 10 ms and every probe failing.
    for _ in range(10_000):
        clock.now += 0.01
        for topic, probe in t.due():
            t.failed(topic, "TOPIC_AUTHORIZATION_FAILED", probe)
    t.delivered("out")
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "delivery to out failed" in m]) == 1
    still = [m for m in lines if "still failing" in m]
    assert len(still) == 3, "at 30, 60 and 90 s"
    assert "1000 writes wait" in still[0]
    assert len([m for m in lines if "works again" in m]) == 1
    assert len(lines) == 5


def test_the_status_names_each_failing_topic_with_its_error_and_since() -> None:
    clock = Clock()
    t = FailingTopics[str]("ingest=t", 0.1, 30.0, 30.0, clock=clock, wall=lambda: 1_700_000_000.0)
    assert t.status == ()
    t.failed("out", "_UNKNOWN_PARTITION: Local: Unknown partition", "w1")
    t.failed("dlq", "TOPIC_AUTHORIZATION_FAILED: Broker: Topic authorization failed", "d1")
    t.hold("out", "w2")
    by_topic = {s["topic"]: s for s in t.status}
    assert by_topic["out"]["error"].startswith("_UNKNOWN_PARTITION")
    assert by_topic["out"]["since"] == "2023-11-14T22:13:20+00:00"
    assert by_topic["dlq"]["failures"] == 1
    t.delivered("dlq")
    assert [s["topic"] for s in t.status] == ["out"]


def test_forgotten_writes_leave_and_a_topic_with_nothing_to_write_stops_failing() -> None:
    clock = Clock()
    t = topics(clock)
    t.failed("out", "e", "p0:w1")
    t.failed("out", "e", "p1:w2")
    assert t.forget(lambda w: w.startswith("p0")) == 1
    assert t.waiting == 1
    assert t.forget(lambda w: True) == 1
    clock.now += 1
    assert t.due() == []
    assert "out" not in t
    assert t.status == ()


def test_a_probe_whose_report_never_comes_back_is_let_go_and_the_next_write_probes() -> None:
    """The writer may take a probe's failed write elsewhere (parked, shrunk, moved to the
    result topic): the topic must not be left without a probe while writes wait for it."""
    clock = Clock()
    t = topics(clock)
    t.failed("out", "e", "w1")
    t.hold("out", "w2")
    clock.now += 0.1
    assert t.due() == [("out", "w1")]
    clock.now += t.probe_lost_s + 0.01
    assert t.due() == [("out", "w2")]
    assert t.waiting == 1, "w1 is the writer's now; only the new probe is held"


def test_the_status_of_a_flood_of_failing_topics_is_bounded_and_rebuilt_at_most_once_a_second() -> (
    None
):
    from rayml.delivery.retries import STATUS_TOPICS

    clock = Clock()
    t = topics(clock)
    for i in range(1_000):
        t.failed(f"reply-{i}", "e", f"w{i}")
    assert len(t.status) <= STATUS_TOPICS
    clock.now += 1.0
    t.due()
    assert len(t.status) == STATUS_TOPICS


def test_a_probe_refused_without_a_word_about_the_topic_is_released_and_the_next_probes_now() -> (
    None
):
    clock = Clock()
    t = topics(clock)
    t.failed("out", "e", "w1")
    t.hold("out", "w2")
    clock.now += 0.1
    assert t.due() == [("out", "w1")]
    t.release("out", "not the probe")  # only the probe is released
    assert t.due() == []
    t.release("out", "w1")
    assert t.due() == [("out", "w2")], "at once, no longer delay, no wait for probe_lost_s"
    assert t.waiting == 1
    t.failed("out", "e", "w2")
    clock.now += 0.15
    assert t.due() == [], "a released probe is no failed probe: the delay is still the first"
    clock.now += 0.05
    assert t.due() == [("out", "w2")]


def test_giving_up_on_a_topic_hands_back_its_waiting_writes_in_order_without_the_probe() -> None:
    clock = Clock()
    t = topics(clock)
    for write in ("w1", "w2", "w3"):
        t.failed("replies", "e", write)
    clock.now += 0.1
    assert t.due() == [("replies", "w1")]
    assert t.give_up("replies") == ["w2", "w3"], "w1 is out: its report comes to the caller"
    assert "replies" not in t
    assert (t.waiting, t.held_bytes) == (0, 0)
    assert t.give_up("replies") == []
    assert t.delivered("replies") == [], "the probe's late report finds nothing to end"


def test_exhausted_names_the_topics_past_either_bound_among_those_asked_about() -> None:
    clock = Clock()
    t = topics(clock)
    t.failed("replies", "e", "r1")
    t.failed("out", "e", "o1")
    for _ in range(2):  # two failed probes each
        while not (due := t.due()):
            clock.now += 0.05
        for topic, probe in due:
            t.failed(topic, "e", probe)
    assert t.exhausted(3, 60.0, lambda topic: True) == []
    while not (due := t.due()):
        clock.now += 0.05
    for topic, probe in due:
        t.failed(topic, "e", probe)  # the third failed probe
    assert t.exhausted(3, 60.0, lambda topic: topic != "out") == ["replies"]
    assert sorted(t.exhausted(3, 60.0, lambda topic: True)) == ["out", "replies"]
    fresh = topics(clock)
    fresh.failed("replies", "e", "r1")
    clock.now += 59.9
    assert fresh.exhausted(3, 60.0, lambda topic: True) == []
    clock.now += 0.1
    assert fresh.exhausted(3, 60.0, lambda topic: True) == ["replies"], "60 s without 3 probes"


def test_held_bytes_follow_the_writes_held_through_every_path() -> None:
    clock = Clock()
    t = FailingTopics[str](
        "ingest=t", 0.1, 30.0, 30.0, clock=clock, wall=lambda: 0.0, rng=lambda: 1.0, size_of=len
    )
    t.failed("out", "e", "p0:aaaa")  # each write weighs its length: 7 bytes
    t.hold("out", "p1:bbbbbbbb")
    t.failed("dlq", "e", "p0:c")
    assert t.held_bytes == 7 + 11 + 4
    clock.now += 0.1
    probes = dict(t.due())
    probe, dlq_probe = probes["out"], probes["dlq"]
    assert t.held_bytes == 22, "a probe out is still held until its report"
    t.failed("out", "e", probe)  # the probe failed: back in the queue, counted once
    assert t.held_bytes == 22
    assert t.forget(lambda w: w.startswith("p1")) == 1
    assert t.held_bytes == 11
    t.release("dlq", dlq_probe)  # the writer has it again
    assert t.held_bytes == 7
    clock.now += t.probe_lost_s + 1
    [(_, probe)] = t.due()  # out's probe again (dlq has nothing left)
    clock.now += t.probe_lost_s + 1
    assert t.due() == [], "out's lost probe let go: nothing waits"
    assert t.held_bytes == 0
    t.failed("out", "e", "p2:dd")
    assert t.delivered("out") == ["p2:dd"]
    t.failed("replies", "e", "p3:eee")
    t.give_up("replies")
    assert t.held_bytes == 0
