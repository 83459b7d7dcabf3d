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
    log_served_features: bool = Field(
        False,
        description="Log every online feature lookup (as with log=True) to the served-feature log dataset, for "
        "train-serve skew reports (`recplane features skew`).",
    )
    feature_log_dataset: str = Field(
        "feature_log",
        pattern=r"^[a-z][a-z0-9_]{0,127}$",
        description="Dataset that logged lookups append to (created on first use); skew reports read it.",
    )
    feature_log_flush_ms: float = Field(
        500.0,
        gt=0,
        description="How often logged lookups are committed to the served-feature log; lookups never wait for it, "
        "so a crash loses at most this much of the log.",
    )
    registry_uri: str | None = Field(
        None,
        description="Where registered model versions' files are copied: a folder or any fsspec URL "
        "(s3://bucket/models, gs://..., memory://...). Default: HOME/artifacts/models.",
    )
    scheduler_loop: bool = Field(
        True, description="`recplane server` runs the job scheduler loop (one leader among servers on one catalog)."
    )
    scheduler_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="Seconds between scheduler rounds (admission, starts, exits, retries)."
    )
    scheduler_capacity_cpu: float | None = Field(
        None, ge=0, description="CPUs the local job backend may use at once. Default: this machine's CPU count."
    )
    scheduler_capacity_memory_gb: float | None = Field(
        None, ge=0, description="Memory (GB) the local job backend may use at once. Default: this machine's memory."
    )
    scheduler_capacity_gpu: float = Field(0.0, ge=0, description="GPUs the local job backend may use at once.")
    scheduler_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a job asked to stop (preempted, cancelled, timed out) gets before it is killed; "
        "training jobs save a checkpoint in that time.",
    )
    scheduler_ray_address: str | None = Field(
        None,
        description="Dashboard address of the Ray cluster that queues with `backend: ray` submit to "
        "(http://HOST:8265). Default: RAY_ADDRESS, else http://127.0.0.1:8265.",
    )
    scheduler_kubernetes_namespace: str = Field(
        "default", description="Namespace the kubernetes job backend creates its Jobs and PyTorchJobs in."
    )
    scheduler_kubernetes_image: str | None = Field(
        None, description="Container image (with recplane installed) the kubernetes job backend runs jobs in."
    )
    scheduler_kubernetes_context: str | None = Field(
        None, description="kubeconfig context of the kubernetes job backend. Default: the current one, or the "
        "in-cluster service account when running in a pod.",
    )
    price_cpu_hour: float = Field(0.04, ge=0, description="Price of one CPU-hour in usage reports.")
    price_gpu_hour: float = Field(2.50, ge=0, description="Price of one GPU-hour in usage reports.")
    price_memory_gb_hour: float = Field(0.005, ge=0, description="Price of one GB-hour of memory in usage reports.")
    price_currency: str = Field("USD", description="Currency the prices are in.")
    inline_worker_threads: int = Field(
        4, ge=1, le=256, description="Worker threads of the `inline` job backend (light jobs run in the scheduling "
        "process instead of a process each, e.g. pipeline steps marked inline)."
    )
    pipelines_loop: bool = Field(
        True,
        description="`recplane server` runs the pipeline loop (runs, schedules, triggers; one leader per catalog).",
    )
    pipelines_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="Seconds between pipeline loop passes (inline steps wake it at once)."
    )
    pipelines_trigger_seconds: float = Field(
        5.0, gt=0, le=3600, description="How often the pipeline loop checks schedules and dataset triggers."
    )
    pipelines_fuse_inline: bool = Field(
        True, description="Run a run's ready inline steps (and the inline steps after them) as one job that commits "
        "each step as it ends, instead of one job per step (light steps then cost no job start each)."
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

    @property
    def registry_root(self) -> str:
        """Root (path or fsspec URL) of the model registry's files; a version's are under ``<name>/<version>``."""
        return self.registry_uri or str(self.artifacts_root / "models")


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
