"""Which model version is served, changed by hand: promote a version, roll a model back.

``rayml models promote|rollback`` and :meth:`rayml.Client.promote` / :meth:`~rayml.Client.rollback`
use these. A promotion or rollback is a new **serving record** written straight to the
compacted models topic (key = model name, :mod:`rayml.models.promotion`); every executor follows
that topic and serves the record's version within about a second. No executor is asked: so
only a principal with **Write on the models topic** can change what is served (Kafka's ACLs
decide, as for any other write), and a promotion also needs write access to the model store,
where the version is marked promoted first (the workers check pins against that mark).

A record holds the whole state of its model (the version served and the ones served before), so
each change reads the current record and writes the next one; two changes of one model at the
same instant keep the last.

Example:
    >>> from rayml.config import Settings
    >>> promote(Settings(), "iris", "000004")                            # doctest: +SKIP
    ServingRecord(name='iris', version='000004', ..., action='promoted', ...)
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from confluent_kafka import KafkaError, KafkaException

from rayml.client.kafka import read_to_end
from rayml.config import Settings
from rayml.errors import RaymlError
from rayml.kafka import clients as kafka_clients
from rayml.kafka.auth_errors import refusal
from rayml.models.promotion import (
    NothingToRollBackError,
    ServingRecord,
    decode_serving,
    encode_serving,
    rolled_back,
    served,
)
from rayml.models.store import ModelStore, ModelVersion
from rayml.models.versions import VersionNotFoundError, newest_servable
from rayml.protocol.model_names import validate_model_name, validate_version

logger = logging.getLogger(__name__)

__all__ = ["promote", "rollback", "serving_records", "write_serving_record"]

_WHO_MAY_PROMOTE = "only principals with Write on the models topic may promote or roll back"


def serving_records(settings: Settings, timeout_s: float = 30.0) -> dict[str, ServingRecord]:
    """Every model's serving record, read from the models topic (name -> record).

    Raises:
        RaymlError: The topic could not be read to its end within ``timeout_s``.
    """
    found: dict[str, ServingRecord] = {}
    topic = settings.topics.models
    try:
        latest = read_to_end(settings.kafka, topic, timeout_s)
    except KafkaException as exc:
        raise RaymlError(f"cannot read the serving records on {topic!r}: {exc}") from exc
    for key, value in latest.items():
        record = decode_serving(value)
        if record is not None and key == record.name.encode():
            found[record.name] = record
    return found


def promote(
    settings: Settings,
    model: str,
    version: str | int,
    *,
    reason: str | None = None,
    timeout_s: float = 30.0,
) -> ServingRecord:
    """Serve ``version`` of ``model`` from now on (whatever the gate said of it).

    The version is marked promoted in the store; then, once any refusal of it a worker may
    remember has expired (``models.version_check_ttl_s``, 2 s: only for a version not marked
    before), its serving record is written. The version served until now is listed in the
    record as served before, for ``rollback``.

    Returns:
        The record written (or the current one, if ``version`` is served already).

    Raises:
        VersionNotFoundError: No such version in the store.
        RaymlError: The models topic could not be read or written (a refusal names the
            principal and the topic).
    """
    model = validate_model_name(model)
    version = validate_version(version)
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    found = store.describe(model, version)
    if found is None:
        raise VersionNotFoundError(model, version)
    current = serving_records(settings, timeout_s).get(model)
    if current is not None and current.version == version:
        return current
    fallback = None
    if current is None:
        base = newest_servable(store, model, other_than=version)
        fallback = base.version if base is not None else None
    why = reason or "promoted by hand"
    if store.promotion(model, version) is None:
        store.mark_promoted(
            model,
            version,
            {
                "at": dt.datetime.now(dt.UTC).isoformat(),
                "by": "rayml models promote",
                "reason": why,
            },
        )
        # A worker that refused this version (version_not_allowed) remembers that for
        # version_check_ttl_s; serving it before that has passed would have such a worker refuse
        # the served version for the rest of it.
        time.sleep(settings.models.version_check_ttl_s)
    extra = _extra(found)
    record = served(
        current,
        name=model,
        version=version,
        metrics=found.metrics,
        action="promoted",
        reason=why,
        fallback=fallback,
        created_at=found.created_at,
        pipeline=_str(found.metadata.get("pipeline")),
        job_id=_str(extra.get("job_id")),
        promoted_from=_str(extra.get("promoted_from")),
    )
    write_serving_record(settings, record, timeout_s)
    logger.info("model=%s version=%s promoted by hand", model, version)
    return record


def rollback(settings: Settings, model: str, *, timeout_s: float = 30.0) -> ServingRecord:
    """Serve the version served before the current one again (skipping deleted ones).

    Returns:
        The record written.

    Raises:
        NothingToRollBackError: The model has no serving record, or none of the versions
            served before it is left in the store.
        RaymlError: The models topic could not be read or written.
    """
    model = validate_model_name(model)
    current = serving_records(settings, timeout_s).get(model)
    if current is None:
        raise NothingToRollBackError(model, f"it has no serving record on {settings.topics.models}")
    store = ModelStore(settings.models.root, allow_pickle=settings.models.allow_pickle)
    # From the newest of them back to the first that is still stored.
    present: dict[str, ModelVersion] = {}
    for earlier in reversed(current.previous):
        found = store.describe(model, earlier)
        if found is not None:
            present[earlier] = found
            break
    record = rolled_back(current, {v: found.metrics for v, found in present.items()})
    target = present[record.version]
    extra = _extra(target)
    record = record.model_copy(
        update={
            "created_at": target.created_at,
            "pipeline": _str(target.metadata.get("pipeline")),
            "job_id": _str(extra.get("job_id")),
            "promoted_from": _str(extra.get("promoted_from")),
        }
    )
    write_serving_record(settings, record, timeout_s)
    logger.info("model=%s rolled back from %s to %s", model, current.version, record.version)
    return record


def write_serving_record(settings: Settings, record: ServingRecord, timeout_s: float) -> None:
    """Write ``record`` to the models topic, waiting for the broker's acknowledgement.

    Raises:
        RaymlError: Not written within ``timeout_s``, or refused (naming the principal).
    """
    topic = settings.topics.models
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    producer = kafka_clients.producer(settings.kafka)
    producer.produce(
        topic, key=record.name.encode(), value=encode_serving(record), on_delivery=delivered
    )
    if producer.flush(timeout_s) != 0:
        raise RaymlError(
            f"the serving record of model {record.name!r} was not written to {topic!r} within "
            f"{timeout_s:g}s"
        )
    if failed:
        refused = refusal(failed[0], settings.kafka, "Write", f"topic {topic!r}", _WHO_MAY_PROMOTE)
        why = str(refused) if refused is not None else failed[0].str()
        raise RaymlError(
            f"the serving record of model {record.name!r} was not written to {topic!r}: {why}"
        ) from refused


def _extra(version: ModelVersion) -> dict[str, object]:
    extra = version.metadata.get("extra")
    return extra if isinstance(extra, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
