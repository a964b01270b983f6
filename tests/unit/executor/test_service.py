"""Sizing the model workers, and the ingests, from the cluster when the settings leave it open."""

from __future__ import annotations

import doctest

import pytest

import rayml.executor.service
from rayml.config import load_settings
from rayml.errors import ConfigError
from rayml.executor.service import ingest_count, size_worker_cpus, with_sized_workers


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.executor.service).failed == 0


def test_a_training_task_fits_beside_the_pool() -> None:
    for cpus, workers in [(2, 2), (4, 2), (4, 6), (3, 8), (64, 16)]:
        share = size_worker_cpus(cpus, workers, reserve_cpus=1.0)
        assert 0.05 <= share <= 1.0
        assert cpus - share * workers >= 1.0


def test_unset_cpus_are_sized_and_a_set_value_is_kept() -> None:
    base = load_settings(executor={"num_workers": 2})
    assert base.executor.worker_num_cpus is None
    assert with_sized_workers(base, 2.0).executor.worker_num_cpus == 0.5
    fixed = load_settings(executor={"num_workers": 2, "worker_num_cpus": 1.0})
    assert with_sized_workers(fixed, 2.0) is fixed


def test_auto_ingests_follow_the_nodes_cores_and_never_outnumber_the_partitions() -> None:
    assert ingest_count([2.0, 2.0], 8) == 2  # one per node, however small
    assert ingest_count([8.0], 8) == 2  # one per 4 CPUs
    assert ingest_count([32.0, 32.0], 8) == 8  # capped at the partitions
    assert ingest_count([0.0], 8) == 1  # a head without CPUs serves nothing: still one


def test_ingest_actors_is_a_number_or_auto() -> None:
    assert load_settings(executor={"ingest_actors": "auto"}).executor.ingest_actors == "auto"
    assert load_settings(executor={"ingest_actors": "3"}).executor.ingest_actors == 3
    for bad in (0, 1025, "many"):
        with pytest.raises(ConfigError):
            load_settings(executor={"ingest_actors": bad})
