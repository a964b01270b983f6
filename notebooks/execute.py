"""``make notebook``: run ``notebooks/quickstart.ipynb`` top to bottom and store it executed.

It starts what the notebook needs, as ``make demo`` does: a real Apache Kafka broker
(``.rayml/notebook-kafka``, a free port), a local Ray and an executor serving a fresh model store
(``.rayml/notebook-models``), with the rollout policy deciding after :data:`ROLLOUT`'s
``min_labels`` so the rollout section ends in seconds. The kernel gets the same settings through
``RAYML_*`` variables, as a user's notebook would. Then it writes the notebook back in place with
its outputs (plots included, no execution timings), saves the rollout section's live-accuracy
plot (the cell tagged ``rollout-plot``) as ``docs/rollouts.png``, and stops everything it
started. A cell that raises leaves both files as they were and exits non-zero.

Run as ``.venv/bin/python notebooks/execute.py`` from the repository root.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from rayml.config import load_settings
from rayml.localkafka import LocalBroker, free_port

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
PICTURE = REPO / "docs" / "rollouts.png"
PLOT_TAG = "rollout-plot"
# The rollout policy of this run (tests/integration/test_notebook.py uses the same): a decision
# after 150 labelled answers per version, looked for twice a second.
ROLLOUT = {"min_labels": "150", "interval_s": "0.5"}

logger = logging.getLogger("notebooks.execute")


def plot_png(notebook: nbformat.NotebookNode) -> bytes:
    """The PNG of the cell tagged :data:`PLOT_TAG`."""
    for cell in notebook.cells:
        if PLOT_TAG in cell.metadata.get("tags", []):
            for output in cell.get("outputs", []):
                if "image/png" in output.get("data", {}):
                    return base64.b64decode(output["data"]["image/png"])
    raise SystemExit(f"no image in the cell tagged {PLOT_TAG!r}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = load_settings()
    data_dir = base.state_dir / "notebook-kafka"
    models = (base.state_dir / "notebook-models").resolve()
    for path in (data_dir, models):
        shutil.rmtree(path, ignore_errors=True)
    broker = LocalBroker(data_dir, port=free_port(), state_dir=base.state_dir)
    broker.start()
    logger.info("Kafka broker ready at %s", broker.bootstrap_servers)
    env = {
        "RAYML_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "RAYML_MODELS__ROOT": str(models),
        **{f"RAYML_ROLLOUT__{key.upper()}": value for key, value in ROLLOUT.items()},
    }
    os.environ.update(env)  # for this process's executor and for the kernel alike
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    import ray

    from rayml.executor.service import Executor

    executor = None
    try:
        # A 2-core laptop: half a CPU per model worker leaves room for training tasks.
        settings = load_settings(executor={"worker_num_cpus": 0.5, "num_workers": 2})
        ray.init(
            address="local",
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        executor = Executor(settings)
        executor.start()
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        started = time.monotonic()
        NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        ).execute()
        logger.info("executed %s in %.1fs", NOTEBOOK.name, time.monotonic() - started)
    finally:
        if executor is not None:
            executor.drain(10)
        if ray.is_initialized():
            ray.shutdown()
        broker.stop()
        for path in (data_dir, models):
            shutil.rmtree(path, ignore_errors=True)
    png = plot_png(notebook)
    nbformat.write(notebook, NOTEBOOK)
    PICTURE.write_bytes(png)
    logger.info("wrote %s and %s", NOTEBOOK.relative_to(REPO), PICTURE.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
