"""The committed docs/openapi.json is the schema the server actually serves."""

from __future__ import annotations

import json
from pathlib import Path

from recplane.api.openapi import openapi_schema

DOC = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_committed_openapi_schema_is_current() -> None:
    committed = json.loads(DOC.read_text())
    assert committed == json.loads(json.dumps(openapi_schema())), (
        "docs/openapi.json is stale: python -m recplane.api.openapi > docs/openapi.json"
    )


def test_ingestion_route_documents_its_body_and_errors() -> None:
    operation = openapi_schema()["paths"]["/v1/datasets/{name}/events"]["post"]
    assert set(operation["requestBody"]["content"]) >= {"application/json", "application/x-ndjson"}
    assert {"413", "429", "200"} <= set(operation["responses"])
