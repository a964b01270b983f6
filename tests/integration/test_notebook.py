"""notebooks/quickstart.ipynb runs top to bottom against the real broker and an in-process
executor on a real local Ray, and its plots render.

The notebook reads where to connect from ``RAYML_KAFKA__BOOTSTRAP_SERVERS``, its topic names
from ``RAYML_TOPICS__*``, the model store from ``RAYML_MODELS__ROOT`` (starting a rollout checks
the version there) and the rollout policy from ``RAYML_ROLLOUT__*``, exactly as a user's notebook
would; the test sets them to this test's broker, topics, store and executor's policy for the
kernel it starts. The policy decides after 150 labelled answers per version, as ``make notebook``
(notebooks/execute.py) has it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rayml.config import Settings
from tests.support.served import running_executor

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


@pytest.fixture
def running(settings: Settings, ray_runtime: str) -> Iterator[Settings]:
    tag = settings.topics.input.rsplit(".", 1)[0]
    topics = settings.topics.model_copy(update={"events": f"{tag}.events"})
    ex = settings.executor.model_copy(
        update={"worker_num_cpus": 0.5, "num_workers": 2, "drain_timeout_s": 10.0}
    )
    training = settings.training.model_copy(update={"progress_interval_s": 0.2})
    rollout = settings.rollout.model_copy(update={"min_labels": 150, "interval_s": 0.5})
    settings = settings.model_copy(
        update={"topics": topics, "executor": ex, "training": training, "rollout": rollout}
    )
    with running_executor(settings):
        yield settings


def test_quickstart_notebook_runs_and_renders_its_plots(
    running: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = running
    monkeypatch.setenv("RAYML_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    for role in ("input", "output", "jobs", "registry", "models", "events", "shadow", "feedback"):
        monkeypatch.setenv(f"RAYML_TOPICS__{role.upper()}", getattr(settings.topics, role))
    monkeypatch.setenv("RAYML_MODELS__ROOT", settings.models.root)
    for key, value in settings.rollout.model_dump().items():
        monkeypatch.setenv(f"RAYML_ROLLOUT__{key.upper()}", str(value))

    # The kernel imports this checkout's rayml, whatever is installed (as Ray workers do).
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Any cell that raises fails the test with the cell's traceback (CellExecutionError).
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3, "the latency histogram, the confusion matrix, live accuracy"
    (plot,) = [c for c in notebook.cells if "rollout-plot" in c.metadata.get("tags", [])]
    assert [o for o in plot.outputs if "image/png" in o.get("data", {})], "the rollout's plot"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "breast_cancer.predict" in text, "pipelines listed"
    assert "params.features: expected at least 30 items, got 2" in text
    assert "569 of 569 ok" in text, "the whole batch answered"

    # The rollout section: the stumps' version is held back by the gate, tried as a canary,
    # and aborted by the executor's monitor on the labels fed in (its live accuracy, ~0.91,
    # is below the served version's, ~0.99: over >= 150 labels each, never the other way in
    # practice), which the notebook shows from the models topic.
    assert "served by the promotion gate: False\n" in text
    assert "rollout_started - canary of 000002 started by hand at 0.3 of requests" in text
    table = re.search(
        r"^000001 +serving +(\d+) +(\d+) .*\n000002 +canary +(\d+) +(\d+) ", text, re.M
    )
    assert table, text
    assert min(int(n) for n in table.groups()) >= 150, "both versions had the labels needed"
    assert "served now: 000001" in text
    assert re.search(
        r"^decision: rollout_aborted: canary rollout of 000002: accuracy [\d.]+ < ", text, re.M
    ), text
