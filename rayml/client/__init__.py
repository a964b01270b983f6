"""The Python client of rayml: submit requests over Kafka and read their results.

This subpackage owns everything a caller's process needs to talk to rayml -- :class:`Client` and
its asyncio form :class:`AsyncClient`, the futures and training jobs they hand back, the param
checks done before sending, the per-client reply topic and its reader thread -- and nothing that
runs a pipeline. It never imports ``ray`` (only Kafka, through ``confluent_kafka``), so it can be
installed and used where no Ray runtime exists.

The names below are the public surface; the modules behind them are implementation detail.
Modules inside this subpackage import from the defining modules, never from this facade.

Example:
    >>> from rayml.client import Client, ResultTimeoutError
    >>> with Client("127.0.0.1:9092") as client:                          # doctest: +SKIP
    ...     try:
    ...         print(client.submit("iris.predict", features=[5.1, 3.5, 1.4, 0.2]).result(30))
    ...     except ResultTimeoutError:
    ...         print("no answer yet")
"""

from __future__ import annotations

from rayml.client.async_client import AsyncClient
from rayml.client.client import Client
from rayml.client.errors import (
    BrokerUnreachableError,
    ClientClosedError,
    DeliveryFailedError,
    PipelineNotServedError,
    ResultTimeoutError,
)
from rayml.client.futures import RequestFuture
from rayml.client.pipelines import PipelineInfo
from rayml.client.training import TrainingJob

__all__ = [
    "AsyncClient",
    "BrokerUnreachableError",
    "Client",
    "ClientClosedError",
    "DeliveryFailedError",
    "PipelineInfo",
    "PipelineNotServedError",
    "RequestFuture",
    "ResultTimeoutError",
    "TrainingJob",
]
