"""The drift reference a training task stores with its version (rayml.training.reference)."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import rayml.training.reference
import rayml.training.task
from rayml.config import KafkaSettings
from rayml.models.store import ModelStore
from rayml.pipeline import load_spec_by_path
from rayml.rollouts.drift import DriftReference, label_key, reference_from_rows
from rayml.training.reference import DRIFT_KEY, inference_twin, vector_field
from rayml.training.task import (
    MODEL_ROLE,
    TRIAL_ROLE,
    TrialOutcome,
    TrialTask,
    promote_best,
    train_trial,
)


class SilentReporter:
    def __init__(self, *args: Any) -> None:
        pass

    def event(self, state: str, **fields: Any) -> None:
        pass

    def __call__(self, fraction: float, message: str) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rayml.training.task, "ProgressReporter", SilentReporter)


def task(root: Path, import_path: str, params: BaseModel, **overrides: Any) -> TrialTask:
    spec = load_spec_by_path(import_path)
    values: dict[str, Any] = {
        "job_id": "job-1",
        "pipeline": spec.name,
        "import_path": import_path,
        "model": spec.model,
        "trial": 0,
        "trials": 1,
        "attempt": 1,
        "params": params,
        "role": MODEL_ROLE,
        "num_cpus": 1,
        "num_gpus": 0,
        "store_root": str(root),
        "allow_pickle": False,
        "kafka": KafkaSettings(),
        "events_topic": "events",
        **overrides,
    }
    return TrialTask(**values)


def stored_reference(root: Path, model: str, version: str) -> Any:
    found = ModelStore(str(root)).describe(model, version)
    assert found is not None
    return found.metadata["extra"].get(DRIFT_KEY)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(rayml.training.reference).failed == 0


def test_a_trained_version_stores_the_reference_of_its_training_rows_and_predictions(
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from pipelines.breast_cancer import HELD_OUT, SPLIT_SEED, TrainParams

    outcome = train_trial(
        task(tmp_path, "pipelines.breast_cancer:train", TrainParams(n_estimators=5))
    )
    assert isinstance(outcome, TrialOutcome)
    raw = stored_reference(tmp_path, "breast_cancer", outcome.version)
    ref = DriftReference.model_validate(raw)

    # Exactly the reference of the training split and of what the stored version predicts
    # on it (the serving code's labels).
    x, y = load_breast_cancer(return_X_y=True)
    x_train, *_ = train_test_split(x, y, test_size=HELD_OUT, random_state=SPLIT_SEED, stratify=y)
    stored = ModelStore(str(tmp_path)).load("breast_cancer", outcome.version).model
    labels = stored.predict(x_train)
    assert ref == reference_from_rows(x_train, outputs=[int(v) for v in labels])
    assert ref.rows == len(x_train) == 426
    assert len(ref.features) == 30
    assert ref.outputs is not None
    assert set(ref.outputs) == {label_key(0), label_key(1)}
    assert sum(ref.outputs.values()) == pytest.approx(1.0, abs=1e-5)
    assert ref.outputs["1"] == pytest.approx(float(np.mean(labels == 1)), abs=1e-6)


def test_iris_stores_a_reference_with_its_three_labels(tmp_path: Path) -> None:
    from pipelines.iris import TrainParams

    outcome = train_trial(task(tmp_path, "pipelines.iris:train", TrainParams(n_estimators=5)))
    assert isinstance(outcome, TrialOutcome)
    ref = DriftReference.model_validate(stored_reference(tmp_path, "iris", outcome.version))
    assert (ref.rows, len(ref.features)) == (112, 4)
    assert ref.outputs is not None
    assert set(ref.outputs) == {"0", "1", "2"}


def test_a_sweeps_best_copy_keeps_the_trials_reference(tmp_path: Path) -> None:
    from pipelines.iris import TrainParams

    trial = train_trial(
        task(tmp_path, "pipelines.iris:train", TrainParams(n_estimators=3), role=TRIAL_ROLE)
    )
    assert isinstance(trial, TrialOutcome)
    best = promote_best(str(tmp_path), False, "iris", "job-1", trial, {"trials": []})
    assert best.version != trial.version
    assert stored_reference(tmp_path, "iris", best.version) == stored_reference(
        tmp_path, "iris", trial.version
    )


@pytest.mark.parametrize(
    ("import_path", "model", "has_reference"),
    [
        ("tests.support.drift_pipelines:train_raising_twin", "drift_raising", True),
        ("tests.support.drift_pipelines:train_no_twin", "drift_no_twin", True),
        ("tests.support.drift_pipelines:train_bad_rows", "drift_bad_rows", False),
        ("tests.support.training_pipelines:train_fast", "testing_fast", False),
    ],
)
def test_a_reference_never_fails_a_training(
    tmp_path: Path, import_path: str, model: str, has_reference: bool
) -> None:
    spec = load_spec_by_path(import_path)
    outcome = train_trial(task(tmp_path, import_path, spec.params()))
    assert isinstance(outcome, TrialOutcome)
    raw = stored_reference(tmp_path, model, outcome.version)
    if not has_reference:
        assert raw is None
        return
    ref = DriftReference.model_validate(raw)
    assert (ref.rows, len(ref.features)) == (50, 2)
    assert ref.outputs is None  # the twin failed, or there is none: inputs only


def test_the_inference_twin_is_the_one_predict_of_the_same_model_taking_one_vector() -> None:
    twin = inference_twin(load_spec_by_path("pipelines.breast_cancer:train"))
    assert twin is not None
    assert (twin[0].name, twin[1]) == ("breast_cancer.predict", "features")
    twin = inference_twin(load_spec_by_path("tests.support.drift_pipelines:train_raising_twin"))
    assert twin is not None
    assert twin[1] == "values"
    assert inference_twin(load_spec_by_path("tests.support.drift_pipelines:train_no_twin")) is None


def test_vector_field_is_the_only_required_field_and_a_list_of_numbers() -> None:
    class Two(BaseModel):
        a: list[float]
        b: list[int]

    class Required(BaseModel):
        features: list[float]
        name: str

    class Ints(BaseModel):
        features: list[int]
        scale: float = 1.0

    class Strings(BaseModel):
        features: list[str]

    assert vector_field(Two) is None
    assert vector_field(Required) is None
    assert vector_field(Ints) == "features"
    assert vector_field(Strings) is None
