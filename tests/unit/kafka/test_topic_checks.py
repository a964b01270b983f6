"""TopicChecks without a broker: rounds of metadata questions off the caller's thread."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from rayml.kafka.topic_checks import TopicChecks, topic_verdicts, unwritable_topics


class Metadata:
    """``list_topics`` as librdkafka answers it: known topics, errors, or no broker at all."""

    def __init__(self, known: set[str], refused: frozenset[str] = frozenset(), away: bool = False):
        self.known, self.refused, self.away = known, refused, away
        self.asked: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.asked.append(topic)
        self.gate.wait(timeout)
        if self.away:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        if topic in self.refused:
            error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
            return SimpleNamespace(topics={topic: SimpleNamespace(error=error)})
        known = {topic: SimpleNamespace(error=None)} if topic in self.known else {}
        return SimpleNamespace(topics=known)


def test_the_broker_blames_missing_and_refused_topics_only() -> None:
    broker = Metadata(known={"ok", "refused"}, refused=frozenset({"refused"}))
    verdicts = dict(unwritable_topics(broker, ["ok", "gone", "refused"], timeout_s=1.0))
    assert verdicts["ok"] is None
    assert verdicts["gone"] == "the broker has no such topic"
    assert "TOPIC_AUTHORIZATION_FAILED" in str(verdicts["refused"])


def test_a_broker_that_does_not_answer_blames_nothing_and_is_asked_once_per_round() -> None:
    broker = Metadata(known=set(), away=True)
    verdicts = unwritable_topics(broker, ["a", "b", "c"], timeout_s=1.0)
    assert verdicts == [("a", None), ("b", None), ("c", None)]
    assert broker.asked == ["a"], "one unanswered call is enough to know the broker is away"


def test_questions_asked_during_a_round_go_in_the_next_one() -> None:
    broker = Metadata(known={"b"})
    broker.gate.clear()  # the first round waits for the broker
    checks = TopicChecks(broker, timeout_s=5.0)
    checks.ask("a")
    checks.ask("a")
    checks.ask("b")
    checks.ask("c")
    assert checks.answered() == [], "nothing before the broker answers"
    assert checks.open == 3
    broker.gate.set()
    first = checks.answered(wait_s=5.0)
    second = checks.answered(wait_s=5.0)
    assert first == [("a", "the broker has no such topic")]
    assert second == [("b", None), ("c", "the broker has no such topic")]
    assert broker.asked == ["a", "b", "c"], "each topic asked once"
    assert checks.open == 0
    checks.close()
    checks.ask("d")
    assert checks.open == 0, "a closed TopicChecks asks nothing"


def test_a_round_that_raises_is_still_answered() -> None:
    class Broken:
        def list_topics(self, topic: str, timeout: float) -> Any:
            return None  # no .topics: the round raises AttributeError

    checks = TopicChecks(Broken(), timeout_s=1.0)
    checks.ask("x")
    assert checks.answered(wait_s=5.0) == [("x", None)]


class Listing(Metadata):
    """``list_topics`` with or without a topic: the listing of all topics counts as one ask."""

    def list_topics(self, topic: str | None = None, timeout: float = 1.0) -> Any:
        if topic is not None:
            return super().list_topics(topic, timeout)
        self.asked.append("*")
        if self.away:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return SimpleNamespace(topics={t: SimpleNamespace(error=None) for t in self.known})


def test_topic_verdicts_ask_a_few_names_one_by_one() -> None:
    broker = Listing(known={"a"})
    assert topic_verdicts(broker, ["a", "b"], timeout_s=1.0) == {
        "a": None,
        "b": "the broker has no such topic",
    }
    assert broker.asked == ["a", "b"]


def test_topic_verdicts_list_every_topic_once_for_a_flood_of_names() -> None:
    broker = Listing(known={"a"})
    names = ["a", *(f"bogus-{i}" for i in range(100))]
    verdicts = topic_verdicts(broker, names, timeout_s=1.0)
    assert broker.asked == ["*"]
    assert verdicts["a"] is None
    assert sum(v is not None for v in verdicts.values()) == 100


def test_topic_verdicts_decide_nothing_when_the_broker_is_away() -> None:
    assert topic_verdicts(Listing(known={"a"}, away=True), ["a"], timeout_s=1.0) == {}
    names = [f"t-{i}" for i in range(10)]
    assert topic_verdicts(Listing(known=set(), away=True), names, timeout_s=1.0) == {}
