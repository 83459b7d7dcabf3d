"""The in-process platform: one catalog and the capability services over it.

Both the embedded ``Client()`` and ``recplane server`` run exactly this object, which is why the two behave
the same. It owns connections and writer threads, so close it (or use it as a context manager).
"""

from __future__ import annotations

from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

from recplane.catalog import Catalog
from recplane.config import Settings
from recplane.ingest import IngestService
from recplane.lake import DatasetService
from recplane.quality import QualityService

if TYPE_CHECKING:
    from recplane.features.materialize import Materializer
    from recplane.features.offline import TrainingSetBuilder
    from recplane.features.online import OnlineStore
    from recplane.features.registry import FeatureRegistry
    from recplane.features.served_log import ServedFeatureLog
    from recplane.features.serving import OnlineFeatureService
    from recplane.features.skew import SkewService
    from recplane.features.streaming import FeatureStream
    from recplane.pipelines import PipelineService
    from recplane.registry import ModelRegistry
    from recplane.scheduler import Scheduler
    from recplane.training.runs import RunStore
    from recplane.training.service import TrainingService

__all__ = ["Runtime"]


class Runtime:
    """Catalog + dataset, ingestion and quality services (and training runs) for one recplane home or database."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.settings.catalog_url)
        self.datasets = DatasetService(self.catalog, self.settings)
        self.ingestion = IngestService(self.catalog, self.datasets, self.settings)
        self.quality = QualityService(self.catalog, self.datasets)
        if self.settings.stream_features:
            self.ingestion.add_commit_listener(self._on_commit)

    def _on_commit(self, dataset: str, version: int) -> None:
        self.feature_stream.notify(dataset, version)

    @cached_property
    def feature_stream(self) -> FeatureStream:
        """Keeps materialized feature views fresh as ingestion commits rows to their sources."""
        from recplane.features.streaming import FeatureStream

        return FeatureStream(self.features, lambda: self.materializer)

    @cached_property
    def runs(self) -> RunStore:
        """Training runs, opened on first use."""
        from recplane.training.runs import RunStore

        return RunStore(self.catalog, self.settings.artifacts_root)

    @cached_property
    def training(self) -> TrainingService:
        """Training specs → recorded runs; imported on first use because the trainer loads torch (seconds)."""
        from recplane.training.service import TrainingService

        return TrainingService(self.datasets, self.runs, training_sets=lambda: self.training_sets)

    @cached_property
    def registry(self) -> ModelRegistry:
        """Registered model versions, their aliases and every alias move."""
        from recplane.registry import ModelRegistry

        return ModelRegistry(self.catalog, self.runs, self.settings, datasets=self.datasets)

    @cached_property
    def features(self) -> FeatureRegistry:
        """Feature definitions (entities, views, services) registered in the catalog."""
        from recplane.features.registry import FeatureRegistry

        return FeatureRegistry(self.catalog, self.datasets)

    @cached_property
    def training_sets(self) -> TrainingSetBuilder:
        """Point-in-time training sets over the registered feature views (DuckDB, imported on first use)."""
        from recplane.features.offline import TrainingSetBuilder

        return TrainingSetBuilder(self.features, self.datasets)

    @cached_property
    def online_store(self) -> OnlineStore:
        """The online feature store named by ``settings.online_store`` (embedded SQLite or Redis), opened on use."""
        from recplane.features.online import open_online_store

        return open_online_store(self.settings.online_store, home=self.settings.home)

    @cached_property
    def materializer(self) -> Materializer:
        """Writes the latest feature values per entity, computed by the offline engine, to the online store."""
        from recplane.features.materialize import Materializer

        return Materializer(self.features, self.datasets, self.online_store)

    @cached_property
    def online_features(self) -> OnlineFeatureService:
        """Online lookups of registered features (values, freshness, status per entity)."""
        from recplane.features.serving import OnlineFeatureService

        return OnlineFeatureService(
            self.features,
            self.datasets,
            self.online_store,
            served_log=self.served_feature_log,
            log_by_default=self.settings.log_served_features,
            log_dataset=self.settings.feature_log_dataset,
        )

    @cached_property
    def served_feature_log(self) -> ServedFeatureLog:
        """Appends what online lookups served to the served-feature log dataset, off the lookup path."""
        from recplane.features.served_log import ServedFeatureLog

        return ServedFeatureLog(
            self.datasets, self.ingestion, flush_seconds=self.settings.feature_log_flush_ms / 1000
        )

    @cached_property
    def feature_skew(self) -> SkewService:
        """Train-serve skew reports: logged served values against the training-set engine's values."""
        from recplane.features.skew import SkewService

        return SkewService(
            self.features,
            self.datasets,
            self.training_sets,
            served_log=self.served_feature_log,
            default_dataset=self.settings.feature_log_dataset,
        )

    @cached_property
    def scheduler(self) -> Scheduler:
        """Jobs, queues and usage; its loop runs only when started (``recplane server``, a worker, wait_job)."""
        from recplane.scheduler import Scheduler

        return Scheduler(self.catalog, self.settings)

    @cached_property
    def pipelines(self) -> PipelineService:
        """Pipelines and their runs; the loop runs only when started (``recplane server``, a worker, a wait)."""
        from recplane.pipelines import PipelineService

        service = PipelineService(self.catalog, self.settings, lambda: self.scheduler, self.datasets)
        self.ingestion.add_commit_listener(service.on_commit)  # dataset triggers fire without waiting for a poll
        return service

    def close(self) -> None:
        """Flush pending ingestion (and the feature updates it queued) and release connections."""
        if "pipelines" in self.__dict__:  # its loop ticks the scheduler: stop it first
            self.pipelines.close()
        if "scheduler" in self.__dict__:  # stop its loop first: it uses the catalog (jobs keep running)
            self.scheduler.close()
        if "served_feature_log" in self.__dict__:  # its last rows go through ingestion, so before it closes
            self.served_feature_log.close()
        self.ingestion.close()
        if "feature_stream" in self.__dict__:
            self.feature_stream.close()
        if "online_store" in self.__dict__:  # only if it was opened
            self.online_store.close()
        self.catalog.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
