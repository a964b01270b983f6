"""rayml: machine-learning pipelines on Ray, requested and answered over Kafka.

Nothing happens at import time: no ``ray.init``, no logging configuration, no network.
"""

from rayml.config import Settings, load_settings
from rayml.errors import RaymlError

__all__ = ["RaymlError", "Settings", "load_settings"]
__version__ = "0.1.0"
