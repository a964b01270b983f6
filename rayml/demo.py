"""``make demo``: rayml end to end on a local Kafka broker and a local Ray, then clean up.

Starts everything it needs (a broker in ``.rayml/demo-kafka``, a local Ray), creates the topics,
prints how to connect, and stops what it started, so it can run any number of times.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from rayml.config import load_settings
from rayml.localkafka import LocalBroker, free_port
from rayml.topics import create_topics

logger = logging.getLogger("rayml.demo")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = load_settings()
    data_dir = settings.state_dir / "demo-kafka"
    shutil.rmtree(data_dir, ignore_errors=True)
    broker = LocalBroker(data_dir, port=free_port(), state_dir=settings.state_dir)
    t0 = time.monotonic()
    broker.start()
    logger.info(
        "Kafka broker ready at %s in %.1fs", broker.bootstrap_servers, time.monotonic() - t0
    )
    try:
        settings = load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers})
        for name, what in create_topics(settings.kafka, settings.topics).items():
            logger.info("topic %s: %s", name, what)
        import ray

        ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        logger.info("local Ray up: %s", ray.cluster_resources())
        ray.shutdown()
    finally:
        broker.stop()
        shutil.rmtree(Path(data_dir), ignore_errors=True)
        logger.info("stopped the broker and Ray this demo started")
    return 0


if __name__ == "__main__":
    sys.exit(main())
