"""The published JSON Schemas of the wire envelopes (``schemas/*.schema.json``).

They are generated from the envelope models, so the schemas and the code cannot drift; a unit
test checks that the committed files are up to date. Regenerate them with::

    python -m rayml.protocol.schemas [DIR]    # default: schemas/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from rayml.protocol.dead_letters import DeadLetter
from rayml.protocol.envelopes import ENVELOPE_VERSION, Request, Result

__all__ = ["main", "write_schemas"]


# The class docstrings are written for Python readers; the published schemas get their own words.
_SCHEMAS: Final[dict[str, tuple[type[BaseModel], str, str]]] = {
    "request.schema.json": (
        Request,
        "rayml request envelope",
        "A request to run one registered pipeline. JSON, UTF-8, produced to a request topic "
        "(inference or training) with the request id as the Kafka key. Unknown fields are "
        "rejected.",
    ),
    "result.schema.json": (
        Result,
        "rayml result envelope",
        "The one logical answer to a request, keyed by the request id: status 'ok' with "
        "'result', or status 'error' with 'error'. Fields without a value are left out.",
    ),
    "dead-letter.schema.json": (
        DeadLetter,
        "rayml dead-letter headers",
        "What a record on the dead-letter topic says about itself. The record's value and key "
        "are the original message's, untouched; each property travels as one UTF-8 Kafka "
        "header, named in its description, next to the original headers.",
    ),
}


def _schema_text(model: type[BaseModel], name: str, title: str, description: str) -> str:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:rayml:schema:v{ENVELOPE_VERSION}:{name}"
    schema["title"] = title
    schema["description"] = description
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write the envelopes' JSON Schemas into ``directory`` (created if needed).

    Returns:
        The paths written: ``request.schema.json``, ``result.schema.json``,
        ``dead-letter.schema.json``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, title, description) in _SCHEMAS.items():
        path = directory / name
        path.write_text(_schema_text(model, name, title, description), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rayml.protocol.schemas [DIR]`` (default ``schemas/``)."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path("schemas")
    for path in write_schemas(directory):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
