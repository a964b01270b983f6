"""ReplyTopics without a broker: which reply topics exist, asked once per name and bounded."""

from __future__ import annotations

from rayml.delivery.reply_topics import ReplyTopics


class Broker:
    def __init__(self, topics: set[str], away: bool = False) -> None:
        self.topics, self.away = topics, away
        self.rounds: list[list[str]] = []

    def ask(self, names: list[str]) -> dict[str, str | None]:
        self.rounds.append(names)
        if self.away:
            return {}
        return {n: None if n in self.topics else "the broker has no such topic" for n in names}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unknown_names_are_asked_in_one_round_and_remembered() -> None:
    broker = Broker({"replies"})
    rt = ReplyTopics(broker.ask)
    assert rt.check(["replies", "bogus-1", "bogus-2", "replies", ""]) == 3
    assert broker.rounds == [["bogus-1", "bogus-2", "replies"]]
    assert rt.missing("replies") is None
    assert rt.missing("bogus-1") == "the broker has no such topic"
    assert rt.check(["replies", "bogus-1"]) == 0
    assert len(broker.rounds) == 1


def test_a_missing_topic_is_asked_again_after_missing_s_so_a_created_one_is_written() -> None:
    clock = Clock()
    broker = Broker(set())
    rt = ReplyTopics(broker.ask, missing_s=30.0, clock=clock)
    rt.check(["later"])
    assert rt.missing("later")
    broker.topics.add("later")
    clock.now = 31.0
    assert rt.missing("later") is None
    assert rt.check(["later"]) == 1
    assert rt.missing("later") is None


def test_a_broker_that_does_not_answer_decides_nothing_and_is_not_asked_again_at_once() -> None:
    """Broker away: the write is tried; the name is asked about again only after undecided_s,
    so an outage costs one metadata timeout per round, not one per result."""
    clock = Clock()
    broker = Broker(set(), away=True)
    rt = ReplyTopics(broker.ask, undecided_s=5.0, clock=clock)
    rt.check(["t"])
    assert rt.missing("t") is None
    assert rt.check(["t"]) == 0
    assert len(broker.rounds) == 1
    clock.now += 5.1
    broker.away = False
    assert rt.check(["t"]) == 1
    assert rt.missing("t") == "the broker has no such topic"


def test_a_question_that_raises_decides_nothing() -> None:
    def ask(names: list[str]) -> dict[str, str | None]:
        raise RuntimeError("boom")

    rt = ReplyTopics(ask)
    assert rt.check(["t"]) == 1
    assert rt.missing("t") is None


def test_hostile_names_do_not_grow_memory() -> None:
    rt = ReplyTopics(Broker(set()).ask, max_topics=100)
    for i in range(100):
        rt.check([f"bogus-{i}-{j}" for j in range(100)])
    assert len(list(rt._missing_set)) <= 100
    assert len(rt._missing) <= 200
