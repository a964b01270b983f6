"""Which dead letters ``rayml replay dlq`` sends back, where, and with which headers. Pure.

A dead letter (:mod:`rayml.protocol.dead_letters`) carries the original record's value and key,
untouched, and headers naming why it failed and where it came from (``rayml.source.topic``).
For each letter read, :func:`judge_letter` decides one of three things:

* **replay** it to the bulk lane of its source topic's tenant (``batch_topic``: a replay is
  bulk work, which must not queue interactive callers behind it; a letter from a bulk lane goes
  back there), or a training request back to its training topic (which has no lanes);
* **skip** it: the filter (``--error-type``, ``--since``, ``--until``) leaves it out;
* **refuse** it: its headers are not a dead letter's, or its source topic is not a request
  topic of these settings (:func:`replay_targets`). rayml writes a replayed letter only where
  a client could have sent it: a tenant's request topics (its inference topics, either lane,
  and its training topic; ``topics.input``, ``topics.input_batch`` and ``topics.jobs`` without
  tenants), never a result, dead-letter, models, registry or events topic, whatever a letter's
  headers say.

The filter is applied first, so ``--error-type`` can pass over letters that would be refused.

The replayed record keeps the letter's headers except rayml's own (every ``rayml.*`` header:
the ``rayml.error.*``/``rayml.source.*`` ones and those of an earlier replay), so a
``traceparent`` travels on, and gains :func:`replay_headers`' ``rayml.replay.*`` headers: where
it was replayed from (``<topic>/<partition>/<offset>``) and by which kind of replay.

Example:
    >>> from rayml.protocol.dead_letters import DeadLetter, dead_letter_headers
    >>> letter = DeadLetter(error_type="retries_exhausted", error_message="died",
    ...     source_topic="ml.pipeline.input", source_partition=0, source_offset=7)
    >>> headers = [("traceparent", b"00-ab-cd-01"), *dead_letter_headers(letter)]
    >>> targets = {"ml.pipeline.input": "ml.pipeline.input.batch"}
    >>> verdict = judge_letter(headers, 1_000, LetterFilter(), targets)
    >>> verdict.action, verdict.letter.source_topic, verdict.to
    ('replay', 'ml.pipeline.input', 'ml.pipeline.input.batch')
    >>> replay_headers(headers, kind="dlq", topic="ml.pipeline.dlq", partition=0, offset=3)
    [('traceparent', b'00-ab-cd-01'), ('rayml.replay.kind', b'dlq'), \
('rayml.replay.from', b'ml.pipeline.dlq/0/3')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import ValidationError

from rayml.config import Settings
from rayml.protocol.dead_letters import DeadLetter, dead_letter_from_headers
from rayml.tenancy.rules import Tenancy

__all__ = [
    "REPLAY_FROM",
    "REPLAY_KIND",
    "REPLAY_PIN",
    "LetterFilter",
    "Verdict",
    "header_value",
    "judge_letter",
    "replay_headers",
    "replay_targets",
]

#: Header of a replayed record: ``dlq`` or ``range``.
REPLAY_KIND: Final = "rayml.replay.kind"
#: Header of a replayed record: the record it copies, ``<topic>/<partition>/<offset>``.
REPLAY_FROM: Final = "rayml.replay.from"
#: Header of a range replay: the pinned ``MODEL@VERSION``.
REPLAY_PIN: Final = "rayml.replay.pin"

_OWN_PREFIX: Final = "rayml."
_TOPIC_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

RecordHeaders = Iterable[tuple[str, str | bytes | None]] | None


def replay_targets(settings: Settings) -> dict[str, str]:
    """The source topics a replayed letter may name, each with where its copy goes: every
    tenant's inference topics (either lane) to its bulk lane, its training topic to itself.
    Every destination is one of a tenant's request topics.

    Example:
        >>> from rayml.config import load_settings
        >>> replay_targets(load_settings())  # doctest: +NORMALIZE_WHITESPACE
        {'ml.pipeline.input': 'ml.pipeline.input.batch',
         'ml.pipeline.input.batch': 'ml.pipeline.input.batch',
         'ml.pipeline.jobs': 'ml.pipeline.jobs'}
    """
    tenancy = Tenancy(settings)
    targets = {topic: tenancy.of_topic(topic).bulk_topic for topic in tenancy.input_topics}
    targets.update({topic: topic for topic in tenancy.training_topics})
    return targets


@dataclass(frozen=True)
class LetterFilter:
    """Which letters to replay: by error type (any, when empty) and by record time.

    ``since_ms`` is inclusive and ``until_ms`` exclusive, both epoch milliseconds of the
    dead-letter record's own timestamp (when it was dead-lettered).

    Example:
        >>> f = LetterFilter(error_types=frozenset({"retries_exhausted"}), since_ms=100)
        >>> f.skip_reason("invalid_json", 150), f.skip_reason("retries_exhausted", 99)
        ('error_type', 'before_since')
        >>> f.skip_reason("retries_exhausted", 100) is None
        True
    """

    error_types: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def skip_reason(self, error_type: str, timestamp_ms: int) -> str | None:
        """Why a letter of ``error_type`` at ``timestamp_ms`` is left out (None: it is not)."""
        if self.error_types and error_type not in self.error_types:
            return "error_type"
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return "before_since"
        if self.until_ms is not None and timestamp_ms >= self.until_ms:
            return "at_or_after_until"
        return None


@dataclass(frozen=True)
class Verdict:
    """What to do with one letter, and why (``reason``: a short code for skips, a sentence
    for refusals; empty for a replay), and where a replay goes (``to``)."""

    action: Literal["replay", "skip", "refuse"]
    reason: str = ""
    letter: DeadLetter | None = None
    to: str = ""


def judge_letter(
    headers: RecordHeaders, timestamp_ms: int, letters: LetterFilter, targets: Mapping[str, str]
) -> Verdict:
    """Replay, skip or refuse the dead-letter record with ``headers`` (see the module doc);
    ``targets``: :func:`replay_targets`."""
    try:
        letter = dead_letter_from_headers(headers)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        return Verdict("refuse", f"not a dead letter: its rayml headers lack or garble {fields}")
    skip = letters.skip_reason(letter.error_type, timestamp_ms)
    if skip is not None:
        return Verdict("skip", skip, letter)
    topic = letter.source_topic
    if not _TOPIC_NAME.match(topic):
        return Verdict("refuse", f"source topic {topic!r} is not a topic name", letter)
    to = targets.get(topic)
    if to is None:
        return Verdict(
            "refuse",
            f"source topic {topic!r} is not a request topic of these settings "
            f"({', '.join(sorted(targets))})",
            letter,
        )
    return Verdict("replay", "", letter, to)


def replay_headers(
    headers: RecordHeaders,
    *,
    kind: Literal["dlq", "range"],
    topic: str,
    partition: int,
    offset: int,
    extra: Sequence[tuple[str, bytes]] = (),
) -> list[tuple[str, str | bytes | None]]:
    """The headers of a replayed copy of the record at ``topic``/``partition``/``offset``:
    its own without rayml's (``rayml.*``), then the replay's."""
    kept = [(name, value) for name, value in headers or () if not name.startswith(_OWN_PREFIX)]
    return [
        *kept,
        (REPLAY_KIND, kind.encode()),
        (REPLAY_FROM, f"{topic}/{partition}/{offset}".encode()),
        *extra,
    ]


def header_value(headers: RecordHeaders, name: str) -> str | None:
    """The last ``name`` header as text (None if absent).

    Example:
        >>> header_value([("a", b"1"), ("a", "2")], "a"), header_value(None, "a")
        ('2', None)
    """
    found: str | None = None
    for key, value in headers or ():
        if key == name and value is not None:
            found = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return found
