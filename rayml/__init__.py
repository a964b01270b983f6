"""rayml: machine-learning pipelines on Ray, requested and answered over Kafka.

What users touch is exported here: the clients (:class:`Client`, :class:`AsyncClient`), the
pipeline API (:mod:`rayml.pipeline`: ``from rayml.pipeline import inference, training``), the
settings, and the errors they catch. Everything else lives in subpackages by role
(docs/architecture.md, "Layout") and is internal.

Nothing happens at import time: no ``ray.init``, no logging configuration, no network. The
clients (which load the Kafka client) and the pipeline API are imported on first use
(``rayml.Client``), so that processes which never send a request -- the executor's actors -- do
not load them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rayml.config import Settings, load_settings
from rayml.errors import (
    ConfigError,
    InfrastructureError,
    RaymlError,
    RecordError,
    RegistrationError,
)

if TYPE_CHECKING:
    from rayml import pipeline
    from rayml.client.async_client import AsyncClient
    from rayml.client.client import Client
    from rayml.client.errors import (
        BrokerUnreachableError,
        ClientClosedError,
        DeliveryFailedError,
        ResultTimeoutError,
    )

__all__ = [
    "AsyncClient",
    "BrokerUnreachableError",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "DeliveryFailedError",
    "InfrastructureError",
    "RaymlError",
    "RecordError",
    "RegistrationError",
    "ResultTimeoutError",
    "Settings",
    "__version__",
    "load_settings",
    "pipeline",
]
__version__ = "0.1.0"

# Names imported on first use, and the module that defines each.
_LAZY = {
    "Client": "rayml.client.client",
    "AsyncClient": "rayml.client.async_client",
    "BrokerUnreachableError": "rayml.client.errors",
    "ClientClosedError": "rayml.client.errors",
    "DeliveryFailedError": "rayml.client.errors",
    "ResultTimeoutError": "rayml.client.errors",
}


def __getattr__(name: str) -> object:
    if name == "pipeline":
        return importlib.import_module("rayml.pipeline")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rayml' has no attribute {name!r}")
