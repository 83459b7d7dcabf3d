"""Pipelines as a platform service: apply, list, run, backfill, cancel, inspect runs — and the loop behind them.

:class:`PipelineService` is what the SDK, the REST API and the CLI call. Applying stores a new version only when
the spec changed; running stores a run with every step pending and wakes the loop (:class:`PipelineRunner`),
which does the rest through scheduler jobs.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recplane.auth import ADMIN, Principal
from recplane.catalog import Catalog
from recplane.catalog.tables import PipelineRecord, utcnow
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.pipelines.cron import parse_cron
from recplane.pipelines.dag import dependencies
from recplane.pipelines.records import PipelineInfo, PipelineRun
from recplane.pipelines.runner import PipelineRunner
from recplane.pipelines.spec import Pipeline, PipelineSpec, check_functions, load_pipeline
from recplane.pipelines.standard import STANDARD_PIPELINES
from recplane.pipelines.store import PipelineStore, aware, run_of, step_of

if TYPE_CHECKING:
    from recplane.lake import DatasetService
    from recplane.scheduler import Scheduler

__all__ = ["PipelineService", "PipelineSource"]

PipelineSource = PipelineSpec | Pipeline | dict[str, Any] | str | Path
_MAX_BACKFILL_DAYS = 366


class PipelineService:
    """Pipelines and their runs over one catalog, plus the pipeline loop."""

    def __init__(self, catalog: Catalog, settings: Settings, scheduler: Callable[[], Scheduler],
                 datasets: DatasetService | None = None) -> None:
        self.catalog, self.settings = catalog, settings
        self.store = PipelineStore(catalog)
        self._scheduler = scheduler
        self._datasets = datasets
        self._runner: PipelineRunner | None = None

    @property
    def runner(self) -> PipelineRunner:
        """The loop's engine (built on first use: it needs the scheduler)."""
        if self._runner is None:
            self._runner = PipelineRunner(self.store, self._scheduler(), self.settings, self._datasets)
        return self._runner

    # Pipelines.

    def apply(self, source: PipelineSource, *, principal: Principal = ADMIN) -> PipelineInfo:
        """Validate a pipeline (its functions import and accept their inputs) and store it as a new version
        when it changed."""
        spec = load_pipeline(source)
        if not principal.is_admin and spec.team == "default":
            spec = spec.model_copy(update={"team": principal.team})
        principal.require(spec.team, f"Team {spec.team!r}'s pipelines")
        check_functions(spec)
        document = spec.model_dump(mode="json", by_alias=True)
        for _attempt in range(5):
            latest = self.store.latest(spec.name)
            if latest is not None:
                principal.require(latest.team, f"Pipeline {spec.name!r}")
                if latest.spec == document:
                    return self._info(latest)
            record = PipelineRecord(
                name=spec.name, version=(latest.version + 1) if latest else 1, team=spec.team,
                description=spec.description, spec=document, schedule=spec.schedule,
                triggers=[t.model_dump() for t in spec.triggers], trigger_baseline=self._baseline(spec),
                created_by=principal.name, created_at=utcnow(),
            )
            stored = self.store.add_version(record)
            if stored is not None:
                self.runner.wake()
                return self._info(stored)
        raise InvalidInput(f"Pipeline {spec.name!r} is being applied by several callers at once; try again.")

    def _baseline(self, spec: PipelineSpec) -> dict[str, int]:
        """Each trigger dataset's version now: only versions after this start runs."""
        if self._datasets is None:
            return {}
        found = {}
        for trigger in spec.triggers:
            try:
                found[trigger.dataset] = self._datasets.get(trigger.dataset, principal=ADMIN).current_version
            except NotFound:
                found[trigger.dataset] = -1  # created later: its first version starts a run
        return found

    def get(self, name: str, *, principal: Principal = ADMIN) -> PipelineInfo:
        """A pipeline's newest version."""
        return self._info(self._visible(name, principal))

    def list(self, *, principal: Principal = ADMIN) -> builtins.list[PipelineInfo]:
        """Every pipeline the caller may see (newest versions)."""
        teams = None if principal.is_admin else [str(principal.team)]
        return [self._info(record) for record in self.store.list_latest(teams)]

    def _visible(self, name: str, principal: Principal) -> PipelineRecord:
        record = self.store.latest(name)
        if record is None:
            raise NotFound(f"No pipeline {name!r}; apply it with `recplane pipelines apply FILE` "
                           "(`recplane pipelines list` shows the known ones).")
        principal.require(record.team, f"Pipeline {name!r}")
        return record

    def _info(self, record: PipelineRecord) -> PipelineInfo:
        spec = self.runner.spec_of(record.name, record.version)
        edges = [(upstream, item.name) for item in spec.steps for upstream in dependencies(item.needs, item.with_)]
        next_run = None
        if record.schedule:
            last = self.store.find_runs(pipeline=record.name, trigger="schedule", limit=1)
            since = (datetime.fromisoformat(last[0].trigger_detail["scheduled_for"]) if last
                     else aware(record.created_at) or utcnow())
            next_run = parse_cron(record.schedule).next_after(max(since, utcnow()))
        return PipelineInfo(
            name=record.name, version=record.version, team=record.team, description=record.description,
            params=spec.params, schedule=record.schedule, next_run_at=next_run, triggers=record.triggers,
            steps=spec.order(), edges=edges, spec=record.spec, created_by=record.created_by,
            created_at=aware(record.created_at) or utcnow(),
        )

    # Runs.

    def run(self, pipeline: str | PipelineSource, *, params: Mapping[str, Any] | None = None,
            principal: Principal = ADMIN, trigger: str = "manual",
            detail: Mapping[str, Any] | None = None) -> PipelineRun:
        """Start a run of a pipeline (a name, or a spec/Pipeline/file, applied first) with params over its
        defaults."""
        name = pipeline if isinstance(pipeline, str) and self.store.latest(pipeline) else None
        if name is None and isinstance(pipeline, str) and pipeline in STANDARD_PIPELINES:
            pipeline = STANDARD_PIPELINES[pipeline]  # shipped with recplane: applied on its first run
        if name is None:
            name = self.apply(pipeline, principal=principal).name
        record = self._visible(name, principal)
        spec = self.runner.spec_of(record.name, record.version)
        given = dict(params or {})
        unknown = sorted(set(given) - set(spec.params))
        if unknown:
            raise InvalidInput(f"Pipeline {name!r} has no param(s) {unknown}; its params are "
                               f"{sorted(spec.params) or 'none'}.")
        run = self.runner.create_run(record, {**spec.params, **given}, trigger=trigger, detail=dict(detail or {}),
                                     created_by=principal.name)
        assert run is not None  # no dedup key: cannot collide
        return self.get_run(run.id, principal=principal)

    def backfill(self, name: str, start: date, end: date, *, param: str = "date",
                 params: Mapping[str, Any] | None = None, principal: Principal = ADMIN) -> builtins.list[PipelineRun]:
        """One run per day from ``start`` to ``end`` (inclusive), the day (ISO) given as param ``param``."""
        if end < start:
            raise InvalidInput(f"Backfill ends ({end}) before it starts ({start}).")
        days = (end - start).days + 1
        if days > _MAX_BACKFILL_DAYS:
            raise InvalidInput(f"A backfill covers at most {_MAX_BACKFILL_DAYS} days; split {days} days into parts.")
        spec = self.runner.spec_of(name, self._visible(name, principal).version)
        if param not in spec.params:
            raise InvalidInput(f"Pipeline {name!r} has no param {param!r} to backfill over; declare it under "
                               f"params (it has {sorted(spec.params) or 'none'}).")
        runs = []
        for offset in range(days):
            day = (start + timedelta(days=offset)).isoformat()
            runs.append(self.run(name, params={**(params or {}), param: day}, principal=principal,
                                 trigger="backfill", detail={"param": param, "value": day}))
        return runs

    def list_runs(self, *, principal: Principal = ADMIN, pipeline: str | None = None, status: str | None = None,
                  limit: int = 50) -> builtins.list[PipelineRun]:
        """Runs the caller may see, newest first (without their steps)."""
        teams = None if principal.is_admin else [str(principal.team)]
        return [run_of(record) for record in self.store.find_runs(pipeline=pipeline, status=status, teams=teams,
                                                                   limit=limit)]

    def get_run(self, run_id: str, *, principal: Principal = ADMIN) -> PipelineRun:
        """One run with every step: status, job, inputs, outputs, cache use, and the DAG's edges."""
        record = self.store.run(run_id)
        principal.require(record.team, f"Pipeline run {run_id}")
        spec = self.runner.spec_of(record.pipeline, record.pipeline_version)
        steps = [step_of(item, dependencies(spec.step(item.step).needs, spec.step(item.step).with_),
                         spec.step(item.step).inline) for item in self.store.steps(run_id)]
        return run_of(record, steps)

    def cancel_run(self, run_id: str, *, principal: Principal = ADMIN) -> PipelineRun:
        """Cancel a run: pending steps never start, running step jobs are cancelled."""
        record = self.store.run(run_id)
        principal.require(record.team, f"Pipeline run {run_id}")
        if not principal.is_admin and record.team != principal.team:
            raise Forbidden(f"Pipeline run {run_id} belongs to team {record.team!r}.")
        self.store.update_run(run_id, ("queued", "running"), cancel_requested=True)
        self.runner.wake()
        return self.get_run(run_id, principal=principal)

    def wait(self, run_id: str, *, principal: Principal = ADMIN, timeout: float | None = None) -> PipelineRun:
        """Block until the run finished; TimeoutError past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.store.run(run_id)
            if run.status not in ("queued", "running"):
                return self.get_run(run_id, principal=principal)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Pipeline run {run_id} is still {run.status} after {timeout:g} s.")
            time.sleep(0.02 if self._runner is not None and self._runner.running else 0.2)

    # The loop.

    def on_commit(self, dataset: str, version: int) -> None:
        """Ingestion committed a dataset version in this process: let the loop check triggers now."""
        if self._runner is not None:
            self._runner.on_commit(dataset, version)

    def start(self) -> None:
        """Run the pipeline loop in a background thread (it stands by while another process leads)."""
        self.runner.start()

    def close(self) -> None:
        """Stop the loop."""
        if self._runner is not None:
            self._runner.close()
