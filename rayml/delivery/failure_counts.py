"""The result writer's failures, counted for the metrics under a bounded set of labels. Pure.

Two counts, both labelled by names that requests choose: failed deliveries by (topic, error)
(a request may name any ``reply_to``; the ``rayml_failed_deliveries`` metric) and error results
by (pipeline, error type) (a request names any pipeline, a pipeline raises its own type codes;
:attr:`rayml.delivery.result_writer.ResultWriter.error_results`). Each keeps at most
:data:`_MAX_LABELS` hostile labels by name and counts the rest under ``"_other"``; rayml's own
topics' failures are always counted by name, so a flood of bogus ``reply_to`` names never hides
them. Plain dicts, flushed on the ingest's timer.

Example:
    >>> counts = FailureCounts(own_topics=frozenset({"out", "dlq"}))
    >>> counts.failed_delivery("out", "_MSG_TIMED_OUT")
    >>> counts.error_result("p.predict", "invalid_params")
    >>> counts.failed_deliveries, counts.failed_total, counts.error_results
    ({('out', '_MSG_TIMED_OUT'): 1}, 1, {('p.predict', 'invalid_params'): 1})
"""

from __future__ import annotations

__all__ = ["FailureCounts"]

# Distinct (topic, error) pairs of topics other than rayml's own counted by name in
# failed_deliveries before "_other"; distinct (pipeline, error type) pairs in error_results.
_MAX_LABELS = 100
# Where error results beyond the first _MAX_LABELS (pipeline, type) pairs are counted.
_OTHER_ERROR = ("_other", "_other")


class FailureCounts:
    """Failed deliveries by (topic, error name) and error results by (pipeline, error type).

    Args:
        own_topics: rayml's own topics (result topics, DLQ): always counted by name.
    """

    def __init__(self, own_topics: frozenset[str]) -> None:
        self._own_topics = own_topics
        # Failed deliveries by (topic, error name): rayml's own topics always by name; at most
        # _MAX_LABELS other (topic, error) pairs, the rest counted under "_other".
        self.failed_deliveries: dict[tuple[str, str], int] = {}
        self._other_labels = 0
        self.failed_total = 0
        # Error results by (pipeline, error type): at most _MAX_LABELS pairs, the rest counted
        # under ("_other", "_other").
        self.error_results: dict[tuple[str, str], int] = {}

    def failed_delivery(self, topic: str, error: str) -> None:
        """Count a failed delivery by topic and error name: rayml's own topics always by name,
        others (any ``reply_to`` a request names) up to _MAX_LABELS pairs, then "_other"."""
        key = (topic, error)
        counts = self.failed_deliveries
        if key not in counts and topic not in self._own_topics:
            if self._other_labels >= _MAX_LABELS:
                key = ("_other", key[1])
            else:
                self._other_labels += 1
        counts[key] = counts.get(key, 0) + 1
        self.failed_total += 1

    def error_result(self, pipeline: str, error_type: str) -> None:
        """Count an error result by (pipeline, type): both are hostile (a request names any
        pipeline, a pipeline raises its own type codes): at most _MAX_LABELS pairs by name, the
        rest under ("_other", "_other")."""
        by_type = self.error_results
        pair = (pipeline, error_type)
        so_far = by_type.get(pair)
        if so_far is None and len(by_type) >= _MAX_LABELS:
            pair = _OTHER_ERROR
            so_far = by_type.get(pair)
        by_type[pair] = (so_far or 0) + 1
