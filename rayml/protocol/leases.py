"""Which pipelines are served now: the executors' liveness leases on the registry topic.

Each executor publishes its pipelines' descriptions on the compacted registry topic (key = the
pipeline's name) and, beside them, a **lease** under the key ``_lease/<executor instance>``:
the pipelines it serves and until when (``lease_until_ms``). It renews the lease well before
that time while it runs, and writes a tombstone for the key when it stops. A pipeline is *live*
while some unexpired lease lists it; a description with no live lease was published by
executors that are gone (stopped, crashed, or upgraded without it).

Registries written before leases existed have no lease at all: then liveness is unknown and
every published pipeline counts as live, as before. The same holds when every lease is
withdrawn (all executors stopped cleanly: a restart must not turn clients away) or lapsed more
than :data:`RECENT_MS` ago (a crash long past says nothing about today). Pure.

Example:
    >>> lease = ServingLease(instance="ex-1", pipelines=["iris.predict"], lease_until_ms=2000)
    >>> records = {b"iris.predict": b"{}", lease_key("ex-1"): encode_lease(lease)}
    >>> live_pipelines(records, now_ms=1000), live_pipelines(records, now_ms=30_000)
    ({'iris.predict': ['ex-1']}, {})
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "CLOCK_SLACK_MS",
    "LEASE_PREFIX",
    "RECENT_MS",
    "ServingLease",
    "encode_lease",
    "has_leases",
    "is_lease_key",
    "lease_key",
    "live_pipelines",
]

LEASE_PREFIX: Final = "_lease/"
#: A lease that lapsed longer ago than this no longer counts as evidence of liveness.
RECENT_MS: Final = 3_600_000
#: Clocks of the executor and the reader may differ: a lease counts this much past its end.
CLOCK_SLACK_MS: Final = 15_000
_PREFIX: Final = LEASE_PREFIX.encode()


class ServingLease(BaseModel):
    """One executor's pipelines, live until ``lease_until_ms``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    instance: str = Field(min_length=1, max_length=200)
    pipelines: list[str] = Field(max_length=10_000)
    lease_until_ms: int
    at_ms: int | None = None


def lease_key(instance: str) -> bytes:
    return (LEASE_PREFIX + instance).encode()


def is_lease_key(key: bytes | str | None) -> bool:
    if key is None:
        return False
    return key.startswith(_PREFIX) if isinstance(key, bytes) else key.startswith(LEASE_PREFIX)


def encode_lease(lease: ServingLease) -> bytes:
    return lease.model_dump_json(exclude_none=True).encode()


def _leases(records: Mapping[bytes, bytes | None]) -> Iterator[ServingLease]:
    """The lease records that parse (tombstones, other keys and junk aside)."""
    for key, value in records.items():
        if not is_lease_key(key) or value is None:
            continue
        try:
            yield ServingLease.model_validate_json(value)
        except ValidationError:
            continue


def has_leases(records: Mapping[bytes, bytes | None], now_ms: int) -> bool:
    """Whether liveness is known: some lease is live, or lapsed within :data:`RECENT_MS`
    (tombstones, junk and long-lapsed leases aside)."""
    return any(lease.lease_until_ms > now_ms - RECENT_MS for lease in _leases(records))


def live_pipelines(records: Mapping[bytes, bytes | None], now_ms: int) -> dict[str, list[str]]:
    """Each pipeline some unexpired lease lists, with the executors that serve it."""
    live: dict[str, list[str]] = {}
    for lease in _leases(records):
        if lease.lease_until_ms + CLOCK_SLACK_MS <= now_ms:
            continue
        for name in lease.pipelines:
            live.setdefault(name, []).append(lease.instance)
    return {name: sorted(set(ids)) for name, ids in live.items()}
