"""The published JSON Schemas in ``schemas/`` match the envelope models they are generated from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayml.protocol.schemas import main, write_schemas

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
NAMES = ["request.schema.json", "result.schema.json", "dead-letter.schema.json"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("schemas")
    assert sorted(p.name for p in write_schemas(directory)) == sorted(NAMES)
    return directory


@pytest.mark.parametrize("name", NAMES)
def test_committed_schema_is_up_to_date(generated: Path, name: str) -> None:
    committed = SCHEMAS / name
    assert committed.is_file(), f"{committed} is missing: run `python -m rayml.protocol.schemas`"
    assert committed.read_text(encoding="utf-8") == (generated / name).read_text(
        encoding="utf-8"
    ), f"{committed} is out of date with the envelope models: run `python -m {main.__module__}`"


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_identified_and_formatted(generated: Path, name: str) -> None:
    text = (generated / name).read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["$id"].endswith(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"].startswith("rayml ")
    assert schema["additionalProperties"] is False
    # Sorted keys, 2-space indent, trailing newline: stable diffs for a file that is committed.
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_request_schema_names_what_a_client_must_send(generated: Path) -> None:
    schema = json.loads((generated / "request.schema.json").read_text(encoding="utf-8"))
    assert schema["required"] == ["id", "pipeline"]
    assert set(schema["properties"]) == {
        "v",
        "id",
        "pipeline",
        "params",
        "reply_to",
        "deadline",
        "model_version",
        "tenant",
        "sent_at_ms",
    }
    deadline_types = {
        alt.get("type") for alt in schema["properties"]["deadline"]["anyOf"][0]["anyOf"]
    }
    assert deadline_types == {"string", "integer"}
    assert schema["examples"]


def test_result_schema_names_what_a_consumer_may_rely_on(generated: Path) -> None:
    schema = json.loads((generated / "result.schema.json").read_text(encoding="utf-8"))
    assert set(schema["required"]) == {"id", "pipeline", "status"}
    assert schema["properties"]["status"]["enum"] == ["ok", "error"]
    assert set(schema["$defs"]) == {"ErrorInfo", "ModelRef", "Timings"}


def test_dead_letter_schema_names_the_headers(generated: Path) -> None:
    schema = json.loads((generated / "dead-letter.schema.json").read_text(encoding="utf-8"))
    descriptions = " ".join(p["description"] for p in schema["properties"].values())
    for header in ("rayml.error.type", "rayml.source.offset", "rayml.request.id"):
        assert header in descriptions


def test_main_writes_the_three_schemas(tmp_path: Path) -> None:
    assert main([str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["dead-letter.schema.json", "request.schema.json", "result.schema.json"]
