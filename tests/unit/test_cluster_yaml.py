"""cluster.yaml and cluster-local.yaml pass Ray's own offline validation (no network, no Ray).

``prepare_config`` (merge with the provider's defaults) and ``validate_config`` (the launcher's
JSON schema and cross-field checks) are Ray's private API, the same the launcher runs in
``ray up``; a Ray upgrade that changes them shows up here first.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import (
    fill_node_type_min_max_workers,
    merge_setup_commands,
    prepare_config,
    validate_config,
)

REPO = Path(__file__).resolve().parents[2]


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / name).read_text())
    return config


def prepared_local(config: dict[str, Any]) -> dict[str, Any]:
    # prepare_config would merge in the fake provider's defaults file, which the wheel does not
    # ship; the local file spells every key out instead, so the other steps are enough.
    config = copy.deepcopy(config)
    merge_setup_commands(config)
    fill_node_type_min_max_workers(config)
    return config


def test_cluster_yaml_passes_offline_validation() -> None:
    config = prepare_config(load("cluster.yaml"))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}, "model workers must not land on the head"
    workers = {name: t for name, t in types.items() if name != head}
    assert workers, "at least one worker node type"
    for node in workers.values():
        assert 0 <= node["min_workers"] <= node["max_workers"]
    assert sum(t["min_workers"] for t in workers.values()) <= config["max_workers"]


def test_cluster_yaml_installs_rayml_and_starts_the_executor() -> None:
    config = prepare_config(load("cluster.yaml"))
    assert any("pip install" in c and "rayml" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config" in head_start
    assert "rayml serve --ray-address auto" in head_start
    assert "ray:2.60.0-py311" in config["docker"]["image"], "Ray and Python pinned as rayml's"


def test_cluster_yaml_keeps_ray_token_authentication_on() -> None:
    """``ray start`` without a token or RAY_AUTH_MODE=token starts an open cluster."""
    config = prepare_config(load("cluster.yaml"))
    assert "~/.ray/auth_token" in config["file_mounts"], "the token reaches every node"
    starts = [*config["head_start_ray_commands"], *config["worker_start_ray_commands"]]
    for command in starts:
        if "ray start" in command or "rayml serve" in command:
            assert "RAY_AUTH_MODE=token" in command, command


def test_cluster_local_yaml_passes_offline_validation() -> None:
    config = prepared_local(load("cluster-local.yaml"))
    validate_config(config)
    provider = config["provider"]
    assert provider["type"] == "fake_multinode"
    assert provider["use_node_id_as_ip"]
    assert provider["disable_node_updaters"]
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    worker = types["ray.worker.cpu"]
    assert worker["resources"]["CPU"] == 1
    assert worker["max_workers"] >= 2, "the autoscaling test needs room to add nodes"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_validation_catches_mistakes(name: str) -> None:
    # The checks above are worth something only if the validator rejects broken files.
    prepare = prepare_config if name == "cluster.yaml" else prepared_local
    unknown = load(name)
    unknown["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare(unknown))
    bad_head = load(name)
    bad_head["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare(bad_head))
    too_few = load(name)
    worker = next(
        t for n, t in too_few["available_node_types"].items() if n != too_few["head_node_type"]
    )
    worker["min_workers"] = too_few["max_workers"] + 1
    worker["max_workers"] = too_few["max_workers"] + 1
    with pytest.raises(ValueError, match="min_workers"):
        validate_config(prepare(too_few))
