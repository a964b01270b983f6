"""Where a job's result goes: a reply_to the broker does not have is never written (fakes)."""

from __future__ import annotations

from confluent_kafka import KafkaError

from rayml.training.replies import ReplyRoutes


class Broker:
    """Answers topic questions as topic_verdicts does; counts the rounds."""

    def __init__(self, topics: set[str]) -> None:
        self.topics = topics
        self.away = False
        self.rounds: list[list[str]] = []

    def ask(self, names: list[str]) -> dict[str, str | None]:
        self.rounds.append(list(names))
        if self.away:
            return {}
        return {n: None if n in self.topics else "the broker has no such topic" for n in names}


def test_a_reply_to_the_broker_does_not_have_goes_to_the_result_topic_asked_once() -> None:
    broker = Broker({"replies", "out"})
    routes = ReplyRoutes(broker.ask, {"out"})
    assert routes.topic_for("replies", "out") == "replies"
    for n in range(3):
        assert routes.topic_for("bogus", "out") == "out", n
    assert routes.topic_for(None, "out") == "out"
    assert routes.topic_for("out", "out") == "out"
    # One question per name (remembered), none for the result topic or no reply_to at all.
    assert broker.rounds == [["replies"], ["bogus"]]
    assert routes.rerouted == 3


def test_a_broker_that_does_not_answer_decides_nothing_the_write_is_tried() -> None:
    broker = Broker(set())
    broker.away = True
    routes = ReplyRoutes(broker.ask, {"out"})
    assert routes.topic_for("replies", "out") == "replies"
    assert routes.rerouted == 0


def test_an_error_that_blames_the_topic_reroutes_at_once() -> None:
    broker = Broker({"replies"})
    routes = ReplyRoutes(broker.ask, {"out"})
    assert routes.topic_for("replies", "out") == "replies"
    routes.learn("replies", KafkaError(KafkaError._UNKNOWN_TOPIC))  # produce() refused it
    assert routes.topic_for("replies", "out") == "out"
    assert len(broker.rounds) == 1  # learnt from the failure, not asked again


def test_a_timeout_makes_the_topic_suspect_and_the_broker_decides_at_settle() -> None:
    broker = Broker({"replies", "slow"})
    routes = ReplyRoutes(broker.ask, {"out"})
    routes.topic_for("replies", "out")
    routes.topic_for("slow", "out")
    # Both writes timed out (exactly-once: message.timeout.ms is capped at the transaction's):
    # the timeout alone blames neither topic.
    routes.learn("replies", KafkaError(KafkaError._MSG_TIMED_OUT))
    routes.learn("slow", KafkaError(KafkaError._MSG_TIMED_OUT))
    assert routes.topic_for("replies", "out") == "replies"
    broker.topics.discard("replies")  # deleted since it was first asked about
    assert routes.settle() == ["replies"]
    assert broker.rounds[-1] == ["replies", "slow"]  # one round for all the suspects
    assert routes.topic_for("replies", "out") == "out"
    assert routes.topic_for("slow", "out") == "slow"  # the broker has it: the broker was slow
    assert routes.settle() == []  # nothing suspect any more: nothing asked
    assert len(broker.rounds) == 3


def test_settle_with_the_broker_away_forgets_the_suspects() -> None:
    broker = Broker({"replies"})
    routes = ReplyRoutes(broker.ask, {"out"})
    routes.learn("replies", KafkaError(KafkaError._MSG_TIMED_OUT))
    broker.away = True
    assert routes.settle() == []
    assert routes.suspects == set()
    assert routes.topic_for("replies", "out") == "replies"


def test_result_topics_and_rayml_topics_are_never_learnt_as_unwritable() -> None:
    routes = ReplyRoutes(Broker(set()).ask, {"out", "tenant-b.out", "dlq"})
    routes.learn("tenant-b.out", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    routes.learn("dlq", KafkaError(KafkaError._UNKNOWN_TOPIC))
    routes.learn("out", KafkaError(KafkaError._MSG_TIMED_OUT))
    assert list(routes.unwritable) == []
    assert routes.suspects == set()
    # Other errors (a broker away) teach nothing either.
    routes.learn("replies", KafkaError(KafkaError._TRANSPORT))
    assert routes.suspects == set()
    assert "replies" not in routes.unwritable


def test_suspects_are_bounded_and_only_kept_where_someone_settles() -> None:
    routes = ReplyRoutes(Broker(set()).ask, {"out"})
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    routes.learn("replies", timeout, suspect_timeouts=False)  # at-least-once: never settled
    assert routes.suspects == set()
    for n in range(5_000):  # a flood of fresh names, each timing out
        routes.learn(f"bogus-{n}", timeout)
    assert len(routes.suspects) == 1_000


def test_exactly_once_gives_a_reply_to_one_try_whatever_its_error() -> None:
    """Each failed write costs an aborted transaction and a redo: a topic that refuses the
    result (too large, a bad timestamp, too few replicas) is not written again."""
    broker = Broker({"replies", "tiny"})
    routes = ReplyRoutes(broker.ask, {"out"})
    for topic, code in (
        ("tiny", KafkaError.MSG_SIZE_TOO_LARGE),
        ("replies", KafkaError.INVALID_TIMESTAMP),
    ):
        assert routes.topic_for(topic, "out") == topic
        routes.learn(topic, KafkaError(code), once=True)
        assert routes.topic_for(topic, "out") == "out", topic
    routes.learn("out", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), once=True)
    assert routes.topic_for(None, "out") == "out", "a result topic is never given up"


def test_exactly_once_gives_up_on_a_reply_to_whose_writes_keep_timing_out() -> None:
    """A topic that exists and never acknowledges (``min.insync.replicas`` above its replicas)
    is asked about and found; after 3 timed-out writes (3 aborted transactions) its results go
    to the result topic, until the memory of it expires (not refreshed by requests naming it)."""
    broker = Broker({"stuck"})
    routes = ReplyRoutes(broker.ask, {"out"})
    timeout = KafkaError(KafkaError._MSG_TIMED_OUT)
    for _ in range(2):
        routes.learn("stuck", timeout, once=True)
        routes.settle()  # the broker has it: no verdict
        assert routes.topic_for("stuck", "out") == "stuck"
    routes.learn("stuck", timeout, once=True)
    assert routes.topic_for("stuck", "out") == "out"
