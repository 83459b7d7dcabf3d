"""The REST API (FastAPI): one router per capability under api/routes."""

from recplane.api.app import create_app

__all__ = ["create_app"]
