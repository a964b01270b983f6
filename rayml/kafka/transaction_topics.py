"""Whether a topic can be part of a transaction: its configuration must let the markers in.

A transaction ends (commit or abort) with a marker the transaction coordinator writes to every
partition the transaction wrote. A partition that refuses the marker leaves the transaction
half-ended for ever: the coordinator retries the marker without end, and every later call with
that ``transactional.id`` -- ``begin``, ``abort``, even a new producer's ``init_transactions``
-- is answered ``CONCURRENT_TRANSACTIONS``. A tenant may create topics under its reply prefix
(``Create`` ACL) *with any configuration*, and some configurations refuse markers:

* ``message.timestamp.before.max.ms`` (or the older ``message.timestamp.difference.max.ms``)
  smaller than the time a marker takes from the coordinator to the partition: the broker
  refuses it as ``INVALID_TIMESTAMP`` (``0`` refuses every marker);
* ``message.timestamp.after.max.ms`` smaller than the clock skew between brokers;
* ``max.message.bytes`` below a marker batch (78 bytes);
* ``min.insync.replicas`` above the partition's replicas (markers are written with
  ``acks=all``).

So in exactly-once, rayml asks for a ``reply_to`` topic's configuration (``DescribeConfigs``)
before writing to it in a transaction, and a topic that could refuse markers is not written: its
results go to the tenant's result topic with the reason (``reply_to`` here is the requester's
choice; rayml's own topics are configured by rayml). Topics whose configuration rayml may not
read are refused too: exactly-once fails closed.

This narrows, and cannot close, the window: a topic deleted and created again with another
configuration between the question and the transaction's end still wedges that
``transactional.id``; :meth:`rayml.delivery.transactions.TransactionalOutput.start` then goes
on under a fresh one. A broker-side ``create.topic.policy.class.name`` closes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

from rayml.kafka.topic_checks import topic_verdicts

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_TIMESTAMP_WINDOW_MS",
    "TRUSTED_S",
    "marker_refusal",
    "reply_topic_question",
    "transaction_verdicts",
]

#: How long a topic found fit for transactions is trusted without asking again (a topic may be
#: deleted and created again with another configuration meanwhile).
TRUSTED_S = 30.0

#: Smallest ``message.timestamp.before.max.ms`` taken: a marker may be retried for minutes
#: while a partition moves; an hour leaves room for that.
MIN_TIMESTAMP_WINDOW_MS = 3_600_000
#: Smallest ``message.timestamp.after.max.ms`` taken (clock skew between brokers).
MIN_FUTURE_WINDOW_MS = 60_000
#: Smallest ``max.message.bytes`` taken: a marker batch is 78 bytes.
MIN_MESSAGE_BYTES = 100

_CONFIGS = (
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.after.max.ms",
    "max.message.bytes",
    "min.insync.replicas",
)


def marker_refusal(configs: Mapping[str, str | None], replicas: int) -> str | None:
    """Why a topic with ``configs`` (name -> value) could refuse transaction markers, or None.

    ``replicas`` is the fewest replicas of any of its partitions.

    >>> marker_refusal({"message.timestamp.before.max.ms": "9223372036854775807"}, 1) is None
    True
    >>> print(marker_refusal({"message.timestamp.before.max.ms": "0"}, 1))
    its config message.timestamp.before.max.ms=0 refuses transaction markers (at least 3600000 ...
    >>> marker_refusal({"message.timestamp.type": "LogAppendTime",
    ...                 "message.timestamp.before.max.ms": "0"}, 1) is None
    True
    >>> print(marker_refusal({"min.insync.replicas": "2"}, 1))
    its config min.insync.replicas=2 is above its 1 replica(s): transaction markers cannot be ...
    """
    if configs.get("message.timestamp.type") != "LogAppendTime":  # else no timestamp is checked
        for name, least in (
            ("message.timestamp.before.max.ms", MIN_TIMESTAMP_WINDOW_MS),
            ("message.timestamp.difference.max.ms", MIN_TIMESTAMP_WINDOW_MS),
            ("message.timestamp.after.max.ms", MIN_FUTURE_WINDOW_MS),
            ("max.message.bytes", MIN_MESSAGE_BYTES),
        ):
            value = _int(configs.get(name))
            if value is not None and value < least:
                return (
                    f"its config {name}={value} refuses transaction markers "
                    f"(at least {least} is needed for exactly-once)"
                )
    else:
        value = _int(configs.get("max.message.bytes"))
        if value is not None and value < MIN_MESSAGE_BYTES:
            return (
                f"its config max.message.bytes={value} refuses transaction markers "
                f"(at least {MIN_MESSAGE_BYTES} is needed for exactly-once)"
            )
    min_isr = _int(configs.get("min.insync.replicas"))
    if min_isr is not None and min_isr > replicas:
        return (
            f"its config min.insync.replicas={min_isr} is above its {replicas} replica(s): "
            "transaction markers cannot be written"
        )
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def transaction_verdicts(
    client: Any, admin: Any, topics: list[str], timeout_s: float
) -> dict[str, str | None]:
    """As :func:`rayml.kafka.topic_checks.topic_verdicts`, and an existing topic whose
    configuration could refuse transaction markers (or that rayml may not read) is not writable.

    ``client`` has ``list_topics`` (a producer), ``admin`` ``describe_configs`` (an
    ``AdminClient``); both are asked once for all of ``topics``. Topics the broker did not
    answer about are left out (nothing is decided for them).
    """
    found: dict[str, Any] = {}
    verdicts = topic_verdicts(client, topics, timeout_s, found=found)
    existing = [t for t, why in verdicts.items() if why is None]
    if not existing:
        return verdicts
    resources = {t: ConfigResource(ResourceType.TOPIC, t) for t in existing}
    try:
        futures = admin.describe_configs(list(resources.values()), request_timeout=timeout_s)
    except KafkaException as exc:  # the broker is away: nothing is decided for these
        logger.warning("cannot describe the configs of %d reply topic(s): %s", len(existing), exc)
        return {t: why for t, why in verdicts.items() if why is not None}
    by_name = {resource.name: future for resource, future in futures.items()}
    for topic in existing:
        try:
            entries = by_name[topic].result(timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            verdicts[topic] = (
                f"rayml may not read its config ({err}), which exactly-once needs: "
                "grant the executor DescribeConfigs on it (rayml tenants apply)"
            )
            continue
        except Exception as exc:  # timed out: not decided
            logger.warning("cannot describe the config of reply topic %s: %s", topic, exc)
            del verdicts[topic]
            continue
        configs = {name: entry.value for name, entry in entries.items() if name in _CONFIGS}
        partitions = getattr(found.get(topic), "partitions", None) or {}
        replicas = min((len(p.replicas) for p in partitions.values()), default=1)
        verdicts[topic] = marker_refusal(configs, replicas)
    return verdicts


def reply_topic_question(
    client: Any, admin: Any | None, timeout_s: float
) -> Callable[[list[str]], dict[str, str | None]]:
    """How a writer asks about ``reply_to`` topics: whether they exist, and with ``admin`` (in
    exactly-once) whether their configuration lets transaction markers in."""
    if admin is None:
        return partial(topic_verdicts, client, timeout_s=timeout_s)
    return partial(transaction_verdicts, client, admin, timeout_s=timeout_s)
