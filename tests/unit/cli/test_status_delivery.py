"""`rayml status`: the bytes in flight and the topics whose writes fail, from the ingests."""

from __future__ import annotations

import doctest

from rayml.cli import status
from rayml.cli.status import delivery_lines, summarize


def test_docstring_examples_run() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for function in (status.delivery_summary, status.delivery_lines):
        for test in finder.find(function):
            runner.run(test)
    assert runner.failures == 0


def test_failing_topics_of_every_ingest_are_listed_with_their_ingest() -> None:
    failing = {
        "topic": "ml.pipeline.output",
        "error": "TOPIC_AUTHORIZATION_FAILED: Broker: Topic authorization failed",
        "since": "2025-11-26T10:00:00+00:00",
        "failures": 12,
        "waiting": 300,
    }
    ingests = [
        {"ingest_id": "ex-1-i0", "in_flight_bytes": 2**20, "max_in_flight_bytes": 2**28},
        {
            "ingest_id": "ex-1-i1",
            "in_flight_bytes": 2**20,
            "max_in_flight_bytes": 2**28,
            "failed_deliveries": 12,
            "failing_topics": [failing],
        },
    ]
    ex = summarize([], ingests)["executors"]
    assert ex["in_flight_bytes"] == 2 * 2**20
    assert ex["failed_deliveries"] == 12
    assert ex["failing_topics"] == [{"ingest_id": "ex-1-i1", **failing}]
    lines = delivery_lines(ex)
    assert lines[0] == "in flight 2.0 MiB of 512 MiB"
    assert "ml.pipeline.output since 2025-11-26T10:00:00+00:00 (ingest ex-1-i1)" in lines[1]
    assert "TOPIC_AUTHORIZATION_FAILED" in lines[1]
    assert "300 writes wait" in lines[1]
