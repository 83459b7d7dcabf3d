"""Every recplane setting, declared once, typed and documented.

Precedence (highest first): arguments passed to ``Settings(...)`` > ``RECPLANE_*`` environment variables >
``recplane.yaml`` (in the current directory, or the file named by ``RECPLANE_CONFIG``) > defaults.
``recplane config show`` prints each effective value and where it came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from recplane.errors import InvalidSpec

__all__ = ["Settings", "setting_sources"]

CONFIG_FILE_ENV = "RECPLANE_CONFIG"
DEFAULT_CONFIG_FILE = "recplane.yaml"


def _config_file() -> Path | None:
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise InvalidSpec(f"{CONFIG_FILE_ENV}={named} does not name a file.")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def _read_config_file() -> dict[str, Any]:
    path = _config_file()
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidSpec(f"{path} must hold a mapping of setting names to values.")
    return data


class _YamlSource(PydanticBaseSettingsSource):
    """Reads recplane.yaml; keys are the setting names without the RECPLANE_ prefix, any case."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        raw = {str(k).lower(): v for k, v in _read_config_file().items()}
        unknown = sorted(set(raw) - set(Settings.model_fields))
        if unknown:
            raise InvalidSpec(
                f"Unknown setting(s) in recplane.yaml: {', '.join(unknown)}. "
                "Run `recplane config show` to list the valid names."
            )
        return raw


class Settings(BaseSettings):
    """Effective configuration of one recplane client, server or job."""

    model_config = SettingsConfigDict(env_prefix="RECPLANE_", extra="forbid", validate_default=True)

    home: Path = Field(Path(".recplane"), description="Root folder of an embedded installation.")
    database_url: str | None = Field(
        None, description="Catalog database URL (SQLAlchemy). Default: SQLite at HOME/catalog.db."
    )
    lake_uri: str | None = Field(None, description="Where Delta tables live. Default: HOME/lake.")
    host: str = Field("127.0.0.1", description="Address `recplane server` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `recplane server` listens on.")
    url: str | None = Field(None, description="URL of a recplane server; set to make Client() remote.")
    token: str | None = Field(None, description="API token used by the remote client.")
    group_commit_max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Extra time an ingested batch may wait for others to share its commit. Batches that queue "
        "while the previous commit runs always share the next one; lingering longer rarely pays off here.",
    )
    group_commit_max_rows: int = Field(200_000, ge=1, description="Most rows merged into one commit.")
    ingest_queue_max_rows: int = Field(
        1_000_000, ge=1, description="Rows waiting to be committed per dataset before ingestion answers 429."
    )
    ingest_queue_max_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="Bytes of rows waiting to be committed per dataset before 429."
    )
    compact_check_every_commits: int = Field(
        16, ge=0, description="Ingestion asks for compaction every this many commits (0 = never)."
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest ingestion request body the server accepts."
    )
    compact_after_files: int = Field(
        32,
        ge=0,
        description="Compact a dataset automatically once it has this many small (<16 MiB) files (0 = never). "
        "Each Delta commit costs more the more files a table has, so real-time tables stay compact.",
    )
    movielens_path: Path | None = Field(
        None, description="MovieLens-100K source: RecBole wheel or folder, GroupLens ml-100k folder or zip."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Server log level.")
    stream_features: bool = Field(
        True,
        description="Update materialized feature views in the background as ingestion commits to their sources.",
    )
    online_store: str = Field(
        "embedded",
        description="Online feature store: 'embedded' (SQLite under HOME/online) or a Redis URL such as "
        "redis://host:6379/0.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @classmethod
    def for_home(cls, home: str | Path | None) -> Settings:
        """Settings from the environment, with HOME overridden when given."""
        return cls() if home is None else cls(home=Path(home))

    @property
    def catalog_url(self) -> str:
        """The catalog database URL, defaulting to SQLite inside HOME."""
        return self.database_url or f"sqlite:///{(self.home / 'catalog.db').resolve()}"

    @property
    def lake_root(self) -> str:
        """Root URI of the Delta tables."""
        return self.lake_uri or str((self.home / "lake").resolve())

    @property
    def artifacts_root(self) -> Path:
        """Where training runs keep their files (``HOME/artifacts``; a run's are under ``runs/<run id>``)."""
        return (self.home / "artifacts").resolve()


def setting_sources(overrides: dict[str, Any] | None = None) -> list[tuple[str, Any, str]]:
    """Each setting's effective value and its origin: argument, env, recplane.yaml or default."""
    overrides = overrides or {}
    settings = Settings(**overrides)
    from_file = {str(k).lower() for k in _read_config_file()}
    rows = []
    for name in Settings.model_fields:
        if name in overrides:
            origin = "argument"
        elif f"RECPLANE_{name.upper()}" in os.environ:
            origin = f"env RECPLANE_{name.upper()}"
        elif name in from_file:
            origin = str(_config_file())
        else:
            origin = "default"
        value = getattr(settings, name)
        if name == "token" and value:
            value = value[:8] + "…"
        rows.append((name, value, origin))
    return rows
