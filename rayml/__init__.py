"""rayml: machine-learning pipelines on Ray, requested and answered over Kafka.

Nothing happens at import time: no ``ray.init``, no logging configuration, no network. The
clients are imported on first use (``rayml.Client``), so that processes which never send a
request -- the executor's actors -- do not load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rayml.config import Settings, load_settings
from rayml.errors import RaymlError

if TYPE_CHECKING:
    from rayml.client.async_client import AsyncClient
    from rayml.client.client import Client

__all__ = ["AsyncClient", "Client", "RaymlError", "Settings", "load_settings"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "Client":
        from rayml.client.client import Client

        return Client
    if name == "AsyncClient":
        from rayml.client.async_client import AsyncClient

        return AsyncClient
    raise AttributeError(f"module 'rayml' has no attribute {name!r}")
