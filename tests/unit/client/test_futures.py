"""Correlating results to requests by id, and the client's errors (no Kafka, no Ray)."""

from __future__ import annotations

import concurrent.futures
import doctest
import threading

import pytest

import rayml.client.batch
import rayml.client.futures
from rayml.client.client import resolve_settings
from rayml.client.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    DeliveryFailedError,
    ResultTimeoutError,
)
from rayml.client.futures import PendingReplies, RequestFuture
from rayml.config import load_settings
from rayml.errors import ConfigError, InfrastructureError, RaymlError
from rayml.protocol.envelopes import ErrorInfo, Result


def test_doctests() -> None:
    assert doctest.testmod(rayml.client.futures).failed == 0
    assert doctest.testmod(rayml.client.batch).failed == 0


def test_each_result_completes_only_its_own_future() -> None:
    table = PendingReplies()
    futures = {f"r{i}": table.add(f"r{i}", "p") for i in range(100)}
    for i in reversed(range(100)):  # any order
        assert table.complete(Result.ok(f"r{i}", "p", i))
    for rid, future in futures.items():
        assert future.result(0).result == int(rid[1:])
        assert future.latency_s is not None
    assert table.stats() == {"in_flight": 0, "completed": 100, "duplicates": 0, "foreign": 0}


def test_duplicates_and_foreign_results_are_counted_and_dropped() -> None:
    table = PendingReplies()
    future = table.add("mine", "p")
    assert not table.complete(Result.ok("someone-else", "p", 0))
    assert table.complete(Result.ok("mine", "p", 1))
    assert not table.complete(Result.ok("mine", "p", 2)), "at-least-once redelivery"
    assert future.result(0).result == 1
    assert (table.duplicates, table.foreign) == (1, 1)


def test_error_results_are_returned_not_raised() -> None:
    table = PendingReplies()
    future = table.add("r", "p")
    table.complete(Result.failed("r", "p", ErrorInfo(type="invalid_params", message="x")))
    result = future.result(0)
    assert result.status == "error"
    assert result.error is not None
    assert result.error.type == "invalid_params"


def test_timeout_is_a_rayml_error_and_a_timeout_error_and_may_be_retried() -> None:
    table = PendingReplies()
    future = table.add("slow", "demo.p")
    with pytest.raises(ResultTimeoutError) as excinfo:
        future.result(timeout=0.01)
    assert isinstance(excinfo.value, TimeoutError)
    assert isinstance(excinfo.value, RaymlError)
    assert "'slow'" in str(excinfo.value)
    assert "'demo.p'" in str(excinfo.value)
    table.complete(Result.ok("slow", "demo.p", 7))
    assert future.result(timeout=0.01).result == 7


def test_close_fails_waiting_futures_and_refuses_new_ones() -> None:
    table = PendingReplies()
    future = table.add("r", "p")
    assert table.close() == 1
    with pytest.raises(ClientClosedError, match="'r'"):
        future.result(0)
    with pytest.raises(ClientClosedError):
        table.add("r2", "p")


def test_delivery_failure_fails_only_that_future() -> None:
    table = PendingReplies()
    a, b = table.add("a", "p"), table.add("b", "p")
    assert table.fail("a", DeliveryFailedError("a", "in", "boom"))
    assert not table.fail("a", DeliveryFailedError("a", "in", "again"))
    with pytest.raises(DeliveryFailedError, match="boom"):
        a.result(0)
    assert not b.done()
    assert isinstance(DeliveryFailedError("a", "t", "x"), InfrastructureError)


def test_duplicate_in_flight_ids_are_refused() -> None:
    table = PendingReplies()
    table.add("r", "p")
    with pytest.raises(ValueError, match="already in flight"):
        table.add("r", "p")


def test_futures_work_with_concurrent_futures_tools_and_threads() -> None:
    table = PendingReplies()
    futures = [table.add(f"r{i}", "p") for i in range(50)]

    def answer() -> None:
        for i in range(50):
            table.complete(Result.ok(f"r{i}", "p", i))

    threading.Thread(target=answer).start()
    done, not_done = concurrent.futures.wait(futures, timeout=5)
    assert len(done) == 50
    assert not not_done
    assert isinstance(futures[0], RequestFuture)
    assert isinstance(futures[0], concurrent.futures.Future)


def test_broker_unreachable_names_the_servers() -> None:
    exc = BrokerUnreachableError("k1:9092,k2:9092", 2.0, "timed out")
    assert "k1:9092,k2:9092" in str(exc)
    assert exc.bootstrap_servers == "k1:9092,k2:9092"
    assert isinstance(exc, InfrastructureError)


def test_settings_override_of_bootstrap_servers() -> None:
    base = load_settings()
    assert resolve_settings("h1:1,h2:2", base).kafka.bootstrap_servers == "h1:1,h2:2"
    assert resolve_settings(None, base) is base
    with pytest.raises(ConfigError, match="not-an-address"):
        resolve_settings("not-an-address", base)
