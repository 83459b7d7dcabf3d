"""Print the REST API's OpenAPI schema: ``python -m recplane.api.openapi > docs/openapi.json``."""

from __future__ import annotations

import json
from typing import Any

from recplane.api.app import create_app

__all__ = ["openapi_schema"]


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document of the server, built without starting it."""
    return create_app().openapi()


if __name__ == "__main__":
    print(json.dumps(openapi_schema(), indent=2, sort_keys=True))
