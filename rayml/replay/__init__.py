"""Replay: re-send dead letters, re-score a time range against a pinned version, compare results.

``rayml replay`` (:mod:`rayml.cli.replay`) parses and prints; the work is here, callable from
Python:

* :mod:`~rayml.replay.dlq` -- :func:`~rayml.replay.dlq.replay_dlq`: dead letters back to their
  source topics, each once per consumer group (a transaction per chunk writes the copies and
  commits the offsets);
* :mod:`~rayml.replay.ranges` -- :func:`~rayml.replay.ranges.replay_range`: a time range of the
  request topics re-sent, pinned, with ``reply_to`` a side topic, through the executor;
* :mod:`~rayml.replay.compare` -- :func:`~rayml.replay.compare.diff_topics`: two result topics
  joined by request id.

Their pure rules, without Kafka: :mod:`~rayml.replay.letters` (which letters, where, which
headers), :mod:`~rayml.replay.rewrite` (which requests of a range, and their copies),
:mod:`~rayml.replay.diff` (the statistics), :mod:`~rayml.replay.times` (the time options). The
Kafka side: :mod:`~rayml.replay.reading` (bounded reads of partitions) and
:mod:`~rayml.replay.topics` (the side topic, the producers' size limit). docs/service.md,
"Replay and backfill", states the guarantees.
"""
