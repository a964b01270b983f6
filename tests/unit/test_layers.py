"""What importing a layer loads: the pure layers load neither Ray nor the Kafka client, the
client never loads Ray, and importing ``rayml`` loads neither (nothing happens at import time).

import-linter (``make lint``) checks the import graph; this checks ``sys.modules`` in a fresh
interpreter, which also catches a heavy import hidden behind a package ``__init__``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PURE = [
    "rayml.protocol",
    "rayml.pipeline",
    "rayml.autoscaling.policy",
    "rayml.delivery.offsets",
    "rayml.delivery.reorder",
    "rayml.delivery.sink",
    "rayml.delivery.screening",
    "rayml.delivery.recent",
    "rayml.delivery.reply_topics",
    "rayml.delivery.retries",
    "rayml.delivery.result_routes",
    "rayml.delivery.failure_counts",
    "rayml.kafka.partitions",
    "rayml.kafka.records",
    "rayml.models.versions",
    "rayml.executor.batching",
    "rayml.executor.routing",
    "rayml.executor.membership",
    "rayml.executor.work",
    "rayml.executor.triage",
    "rayml.executor.answers",
    "rayml.executor.isolation",
    "rayml.executor.window",
    "rayml.executor.intake",
    "rayml.executor.ready",
    "rayml.training.watch",
    "rayml.tenancy.rules",
    "rayml.models.promotion",
    "rayml.replay.times",
    "rayml.replay.letters",
    "rayml.replay.rewrite",
    "rayml.replay.diff",
    "rayml.rollouts.quality",
    "rayml.rollouts.policy",
    "rayml.rollouts.drift",
]


def loaded_after_import(module: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after importing ``module`` in a new process."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_neither_ray_nor_confluent_kafka(module: str) -> None:
    assert {"ray", "confluent_kafka"} & loaded_after_import(module) == set()


def test_the_client_never_loads_ray() -> None:
    loaded = loaded_after_import("rayml.client")
    assert "ray" not in loaded
    assert "confluent_kafka" in loaded  # the check itself sees what was imported


def test_importing_rayml_loads_neither() -> None:
    assert {"ray", "confluent_kafka"} & loaded_after_import("rayml") == set()


def test_the_runtime_does_load_ray() -> None:
    # The probe is not blind: a module of the runtime layer does load Ray.
    assert "ray" in loaded_after_import("rayml.executor.dispatch")


def test_the_list_matches_the_import_linter_contract() -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    contracts = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"
    ]
    pure = [
        c for c in contracts if set(c.get("forbidden_modules", [])) == {"ray", "confluent_kafka"}
    ]
    assert len(pure) == 1
    assert sorted(pure[0]["source_modules"]) == sorted(PURE)


def test_every_public_name_of_rayml_resolves() -> None:
    import rayml

    missing = [name for name in rayml.__all__ if getattr(rayml, name, None) is None]
    assert missing == []
    assert rayml.pipeline.inference is not None
    assert issubclass(rayml.ResultTimeoutError, rayml.RaymlError)
