"""The pipeline loop: advance runs step by step through scheduler jobs, start scheduled and triggered runs.

Every pass reads the state from the catalog and writes each decision back before acting on the next, so the
loop keeps nothing in memory that a restart would lose: a control plane killed mid-run comes back, sees which
steps finished (their outputs are stored), which jobs are still running (the scheduler's local jobs outlive the
control plane) and carries on — finished steps are never run again.

A pass: for each active run, sync in-flight steps with their jobs (succeeded → outputs recorded and cached;
failed → the run fails once nothing is in flight; its remaining steps are skipped), then start every step whose
upstream steps are done — a cache hit records the cached outputs at once, anything else becomes a
``pipeline_step`` job. When this process also leads the scheduler, the pass runs a scheduling round right after
submitting, and inline steps wake the loop as they end, so light steps chain without waiting for an interval.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from recplane.auth import ADMIN, Principal
from recplane.catalog.tables import PipelineRecord, PipelineRunRecord, StepCacheRecord, StepRunRecord, utcnow
from recplane.config import Settings
from recplane.errors import NotFound, RecplaneError
from recplane.lake import DatasetService
from recplane.pipelines.cron import parse_cron
from recplane.pipelines.dag import dependencies
from recplane.pipelines.records import DONE_STEP_STATUSES, FINISHED_STEP_STATUSES
from recplane.pipelines.resolve import CodeDigests, prepare_step
from recplane.pipelines.spec import PipelineSpec, StepSpec
from recplane.pipelines.store import JobState, PipelineStore, aware, new_run_id
from recplane.scheduler import JobSpec, QueueSpec, Scheduler
from recplane.scheduler.leader import LeaderLock

__all__ = ["PipelineRunner", "inline_queue"]

log = logging.getLogger("recplane.pipelines")
_LEADER_KEY = 7_241_551_835  # any fixed 64-bit number; names "recplane pipelines leader"
_LOST_RESUBMITS = 3  # inline attempts lost with their process are submitted again this many times at most
_IN_FLIGHT = ("queued", "running")
_JOB_ENDED = ("succeeded", "failed", "cancelled")


def inline_queue(team: str) -> str:
    """The queue a team's inline steps run on (backend ``inline``)."""
    return f"{team}.inline"


class PipelineRunner:
    """Advances pipeline runs, fires schedules and dataset triggers; one leader per catalog."""

    def __init__(self, store: PipelineStore, scheduler: Scheduler, settings: Settings,
                 datasets: DatasetService | None = None) -> None:
        self.store, self.scheduler, self.settings, self.datasets = store, scheduler, settings, datasets
        self.leader = LeaderLock(store.catalog, role="pipelines", key=_LEADER_KEY)
        self._wake = threading.Event()
        self._pass_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._specs: dict[tuple[str, int], PipelineSpec] = {}
        self._upstream: dict[tuple[str, int], dict[str, list[str]]] = {}
        self._orders: dict[tuple[str, int], list[str]] = {}
        self._steps: dict[str, dict[str, StepRunRecord]] = {}  # while leading, only this process writes steps
        self.code_of = CodeDigests()
        self._queues: set[str] = set()
        self._last_fire = 0.0
        self._listening = False
        self._triggered: set[str] = set()  # datasets some pipeline triggers on, read again every second (on_commit)
        self._triggered_at = self._woken_at = -1e9
        self.leading_since = utcnow()  # runs older than this may have steps whose job id was never recorded

    def wake(self) -> None:
        """Make the loop pass now (an inline step ended, a run was created)."""
        self._wake.set()

    def on_commit(self, dataset: str, version: int) -> None:
        """An ingestion commit in this process: if a pipeline triggers on ``dataset``, check triggers at the next pass,
        woken at once but at most every 0.2 s (steady ingestion commits dozens of times a second; a commit that does
        not wake the loop is checked at its next pass). Commits to other datasets cost a set lookup."""
        now = time.monotonic()
        if now - self._triggered_at >= 1.0:  # pipelines applied since are seen within a second
            self._triggered_at = now
            self._triggered = {t["dataset"] for record in self.store.list_latest() for t in record.triggers or ()}
        if dataset not in self._triggered:
            return
        self._last_fire = 0.0
        if now - self._woken_at >= 0.2:
            self._woken_at = now
            self._wake.set()

    def _listen_to_inline(self) -> None:
        if self._listening:
            return
        backend = self.scheduler.backends.get("inline")
        if backend is not None and hasattr(backend, "add_listener"):
            backend.add_listener(self.wake)
            self._listening = True

    def run_pass(self, now: datetime | None = None) -> bool:
        """One pass (schedules and triggers when due, runs, scheduling rounds in-process); True if it acted."""
        with self._pass_lock:
            now = now or utcnow()
            if time.monotonic() - self._last_fire >= self.settings.pipelines_trigger_seconds:
                self._last_fire = time.monotonic()
                self.fire_schedules(now)
                self.fire_triggers()
            schedules = self.scheduler.is_leader
            if schedules:
                self.scheduler.tick()
            acted = self.advance()
            if acted and schedules:
                self.scheduler.tick()
            return acted

    def advance(self) -> bool:
        """Advance every active run once; True when a step or run changed."""
        acted = False
        for run in self.store.active_runs():
            try:
                acted |= _RunPass(self, run).advance()
            except Exception:  # one broken run must not stop the others; the next pass retries it
                log.exception("pipeline run %s could not advance", run.id)
        return acted

    def spec_of(self, name: str, version: int) -> PipelineSpec:
        """A pipeline version's spec (cached: versions never change)."""
        key = (name, version)
        if key not in self._specs:
            self._specs[key] = PipelineSpec.model_validate(self.store.version(name, version).spec)
        return self._specs[key]

    def upstream_of(self, name: str, version: int) -> dict[str, list[str]]:
        """Each step's upstream steps in a pipeline version (cached)."""
        key = (name, version)
        if key not in self._upstream:
            spec = self.spec_of(name, version)
            self._upstream[key] = {item.name: dependencies(item.needs, item.with_) for item in spec.steps}
        return self._upstream[key]

    def order_of(self, name: str, version: int) -> list[str]:
        """A pipeline version's steps in dependency order (cached)."""
        key = (name, version)
        if key not in self._orders:
            self._orders[key] = self.spec_of(name, version).order()
        return self._orders[key]

    def steps_of(self, run_id: str) -> dict[str, StepRunRecord]:
        """A run's step records: read once, then kept current by this leader's own writes."""
        if run_id not in self._steps:
            self._steps[run_id] = {record.step: record for record in self.store.steps(run_id)}
        return self._steps[run_id]

    def forget(self, run_id: str) -> None:
        """Drop a finished run's cached step records."""
        self._steps.pop(run_id, None)

    def dataset_version(self, name: str) -> int:
        """A dataset's newest version (how unpinned dataset inputs get pinned)."""
        if self.datasets is None:
            raise NotFound(f"Dataset {name!r} cannot be read here: this runner has no dataset service.")
        return int(self.datasets.get(name, principal=ADMIN).current_version)

    def ensure_inline_queue(self, team: str) -> str:
        """The team's inline queue, created on first use."""
        name = inline_queue(team)
        if name not in self._queues:
            if self.scheduler.store.queue(name) is None:
                spec = QueueSpec(name=name, team=team, backend="inline",
                                 nominal={"cpu": float(self.settings.inline_worker_threads)})
                self.scheduler.apply_queues(spec, principal=ADMIN)
            self._queues.add(name)
            self._listen_to_inline()
        return name

    def create_run(self, record: PipelineRecord, params: dict[str, Any], *, trigger: str, detail: dict[str, Any],
                   created_by: str, dedup_key: str | None = None) -> PipelineRunRecord | None:
        """Store a new run of a pipeline version with all its steps pending (None: the dedup key ran already)."""
        spec = self.spec_of(record.name, record.version)
        run = PipelineRunRecord(
            id=new_run_id(), pipeline=record.name, pipeline_version=record.version, team=record.team,
            params=params, status="queued", trigger=trigger, trigger_detail=detail, dedup_key=dedup_key,
            cancel_requested=False, created_by=created_by, created_at=utcnow(),
        )
        created = self.store.create_run(run, [item.name for item in spec.steps])
        if created is not None:
            self.wake()
        return created

    def fire_schedules(self, now: datetime) -> list[str]:
        """Start the runs whose cron slot has come (missed slots collapse into the newest); returns their ids."""
        started = []
        for record in self.store.list_latest():
            if not record.schedule:
                continue
            last = self.store.find_runs(pipeline=record.name, trigger="schedule", limit=1)
            since = (datetime.fromisoformat(last[0].trigger_detail["scheduled_for"]) if last
                     else aware(record.created_at) or now)
            due = parse_cron(record.schedule).latest_due(since, now)
            if due is None:
                continue
            spec = self.spec_of(record.name, record.version)
            run = self.create_run(record, dict(spec.params), trigger="schedule",
                                  detail={"scheduled_for": due.isoformat()}, created_by=record.created_by,
                                  dedup_key=f"schedule:{record.name}:{due.isoformat()}")
            if run is not None:
                started.append(run.id)
        return started

    def fire_triggers(self) -> list[str]:
        """Start a run for every trigger dataset with a version newer than the last one that started a run."""
        started: list[str] = []
        if self.datasets is None:
            return started
        for record in self.store.list_latest():
            if not record.triggers:
                continue
            spec = self.spec_of(record.name, record.version)
            for trigger in spec.triggers:
                run_id = self._fire_trigger(record, spec, trigger.dataset, trigger.params)
                if run_id is not None:
                    started.append(run_id)
        return started

    def _fire_trigger(self, record: PipelineRecord, spec: PipelineSpec, dataset: str,
                      params: dict[str, Any]) -> str | None:
        assert self.datasets is not None
        try:
            current = self.datasets.get(dataset, principal=ADMIN).current_version
        except NotFound:
            return None
        seen = int(record.trigger_baseline.get(dataset, -1))
        for earlier in self.store.find_runs(pipeline=record.name, trigger="dataset", limit=100):
            if earlier.trigger_detail.get("dataset") == dataset:
                seen = max(seen, int(earlier.trigger_detail.get("version", -1)))
                break
        if current <= seen:
            return None
        run = self.create_run(record, {**spec.params, **params}, trigger="dataset",
                              detail={"dataset": dataset, "version": current}, created_by=record.created_by,
                              dedup_key=f"dataset:{record.name}:v{record.version}:{dataset}@{current}")
        return None if run is None else run.id

    # The loop.

    def run_forever(self, interval: float | None = None, *, stop: threading.Event | None = None) -> None:
        """Pass every ``interval`` seconds (or at once when woken) while this process leads."""
        interval = self.settings.pipelines_interval_seconds if interval is None else interval
        stop = stop or self._stop
        try:
            while not stop.is_set():
                self._wake.clear()
                if not self.leader.held and self.leader.try_acquire():
                    self.leading_since = utcnow()  # the previous leader may have died mid-submit
                    self._steps.clear()  # another leader may have written steps meanwhile
                if self.leader.held:
                    self._listen_to_inline()
                    try:
                        self.run_pass()  # an inline step ending during the pass sets the wake flag again
                    except Exception:  # a failed pass must not end the loop: the next one retries
                        log.exception("pipeline pass failed")
                self._wake.wait(interval)
        finally:
            self.leader.release()

    def start(self, interval: float | None = None) -> None:
        """Run the loop in a background thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, kwargs={"interval": interval},
                                        name="recplane-pipelines", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the loop thread runs in this process."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the loop (runs go on when a loop runs again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.leader.release()


class _RunPass:
    """One pass over one run: sync in-flight steps, start ready ones, finish the run when all are done."""

    def __init__(self, runner: PipelineRunner, run: PipelineRunRecord) -> None:
        self.runner, self.run, self.store = runner, run, runner.store
        self.spec = runner.spec_of(run.pipeline, run.pipeline_version)
        self.upstream = runner.upstream_of(run.pipeline, run.pipeline_version)
        self.steps = runner.steps_of(run.id)
        self.acted = False

    def _set(self, record: StepRunRecord, expected: tuple[str, ...], cache: StepCacheRecord | None = None,
             **fields: Any) -> None:
        if self.store.update_step(self.run.id, record.step, expected, cache=cache, **fields):
            for key, value in fields.items():
                setattr(record, key, value)
            self.acted = True

    def advance(self) -> bool:
        if self.run.status == "queued":
            self.store.update_run(self.run.id, ("queued",), status="running", started_at=utcnow())
            self.acted = True
        if self.run.cancel_requested:
            self._cancel()
        else:
            self._sync()
            self._start_ready()
        self._finish_if_done()
        return self.acted

    # In-flight steps.

    def _sync(self) -> None:
        waiting = [record for record in self.steps.values() if record.status in _IN_FLIGHT]
        jobs = self.store.jobs(list({record.job_id for record in waiting if record.job_id}))
        finished_segments = [job for job in jobs.values() if job.segment and job.status in _JOB_ENDED]
        if finished_segments:  # their job wrote the steps: read them back, then settle what it left undone
            self.runner.forget(self.run.id)
            self.steps = self.runner.steps_of(self.run.id)
            for job in finished_segments:
                self._settle_segment(job)
        started: dict[str, list[StepRunRecord]] = {}
        for stale in waiting:
            record, state = self.steps[stale.step], jobs.get(stale.job_id or "")
            if state is not None and not state.segment:
                self._sync_one(record, state)
            elif state is not None and state.status == "running" and record.status == "queued":
                started.setdefault(state.id, []).append(record)
        for records in started.values():  # a segment's steps show as running while its job runs
            self._mark(records, ("queued",), status="running", started_at=utcnow())

    def _settle_segment(self, job: JobState) -> None:
        """Steps a finished segment job did not finish: cancelled with it, handed over again when the job was
        lost (or ended early), skipped after a failure — or failed with the job's error when it failed outside
        any step."""
        left = [r for r in self.steps.values() if r.job_id == job.id and r.status in _IN_FLIGHT]
        if not left:
            return
        now = utcnow()
        if job.status == "cancelled":
            self._mark(left, _IN_FLIGHT, status="cancelled", finished_at=now, error=f"job {job.id} was cancelled")
        elif self._blocked():
            self._mark(left, _IN_FLIGHT, status="skipped", finished_at=now, error="an upstream step failed")
        elif (job.status == "succeeded" or job.exit_code == -9) and max(r.attempts for r in left) < _LOST_RESUBMITS:
            self._mark(left, _IN_FLIGHT, status="pending", job_id=None)
        else:
            error = next((r.error for r in left if r.error), None) or job.error or f"job {job.id} failed"
            self._mark(left, _IN_FLIGHT, status="failed", finished_at=now, error=error)

    def _sync_one(self, record: StepRunRecord, job: JobState) -> None:
        item = self.spec.step(record.step)
        now = utcnow()
        if job.status == "succeeded":
            outputs = (job.result or {}).get("outputs")
            cache = None
            if item.cache and record.cache_key:
                cache = StepCacheRecord(cache_key=record.cache_key, pipeline=self.run.pipeline, step=record.step,
                                        outputs=outputs, run_id=self.run.id, created_at=now)
            self._set(record, _IN_FLIGHT, cache=cache, status="succeeded", outputs=outputs, error=None,
                      attempts=_attempts(record, job), finished_at=now)
        elif job.status == "failed":
            lost = job.backend == "inline" and job.exit_code == -9
            if lost and record.attempts < _LOST_RESUBMITS:  # its worker died with a control plane: run it again
                self._submit(record, item, record.inputs, record.cache_key)
                return
            self._set(record, _IN_FLIGHT, status="failed", attempts=_attempts(record, job), finished_at=now,
                      error=job.error or f"job {job.id} failed (exit code {job.exit_code})")
        elif job.status == "cancelled":
            self._set(record, _IN_FLIGHT, status="cancelled", finished_at=now, error=f"job {job.id} was cancelled")
        elif job.status == "running" and record.status == "queued":
            self._set(record, ("queued",), status="running", started_at=now)

    # Ready steps.

    def _blocked(self) -> bool:
        return any(record.status in ("failed", "cancelled") for record in self.steps.values())

    def _start_ready(self) -> None:
        fuse = self.runner.settings.pipelines_fuse_inline
        progress = True
        while progress and not self._blocked():  # a cache hit can make further steps ready in the same pass
            progress = False
            for item in self.spec.steps:
                record = self.steps[item.name]
                if record.status == "pending" and self._ready(item) and not (fuse and item.inline):
                    self._start(record, item)
                    progress = progress or record.status in DONE_STEP_STATUSES
            if fuse and not self._blocked():
                self._start_segment()
        if self._blocked():
            for record in self.steps.values():
                if record.status == "pending":
                    self._set(record, ("pending",), status="skipped", finished_at=utcnow(),
                              error="an upstream step failed")

    def _start_segment(self) -> None:
        """Hand every ready inline step, and the pending inline steps that need only them, to one job."""
        done = {name for name, record in self.steps.items() if record.status in DONE_STEP_STATUSES}
        segment: list[str] = []
        for name in self.runner.order_of(self.run.pipeline, self.run.pipeline_version):
            item, record = self.spec.step(name), self.steps[name]
            if record.status == "pending" and item.inline and all(
                    up in done or up in segment for up in self.upstream[name]):
                segment.append(name)
        if segment:
            self._submit_segment(segment)

    def _ready(self, item: StepSpec) -> bool:
        return all(self.steps[name].status in DONE_STEP_STATUSES for name in self.upstream[item.name])

    def _start(self, record: StepRunRecord, item: StepSpec) -> None:
        outputs = {name: step.outputs for name, step in self.steps.items() if step.status in DONE_STEP_STATUSES}
        try:
            inputs, key = prepare_step(item, pipeline=self.run.pipeline, params=self.run.params, outputs=outputs,
                                       code=self.runner.code_of, dataset_version=self.runner.dataset_version)
        except RecplaneError as exc:
            self._set(record, ("pending",), status="failed", finished_at=utcnow(), error=exc.message)
            return
        hit = self.store.cached(key) if item.cache else None
        if hit is not None:
            now = utcnow()
            self._set(record, ("pending",), status="cached", inputs=inputs, outputs=hit.outputs, cache_key=key,
                      cached_from=hit.run_id, submitted_at=now, finished_at=now)
            return
        self._submit(record, item, inputs, key)

    def _submit(self, record: StepRunRecord, item: StepSpec, inputs: Any, key: str | None) -> None:
        created = aware(self.run.created_at) or utcnow()
        if created < self.runner.leading_since and record.status == "pending" and self._adopt(record, inputs, key):
            return
        queue = item.queue or (self.runner.ensure_inline_queue(self.run.team) if item.inline else "default")
        resources = item.resources or ({"cpu": 0.0, "memory_gb": 0.0} if item.inline else {})
        spec = JobSpec(
            kind="pipeline_step", name=f"{self.run.pipeline}.{item.name}", team=self.run.team, queue=queue,
            resources=resources, max_retries=item.max_retries, backoff_seconds=item.backoff_seconds,
            timeout_seconds=item.timeout_seconds, pipeline=self.run.pipeline,
            args={"run_id": self.run.id, "pipeline": self.run.pipeline, "step": item.name, "uses": item.target,
                  "inputs": inputs, "params": self.run.params, "trigger": self.run.trigger_detail},
        )
        expected = (record.status,)
        try:
            job = self.runner.scheduler.submit(spec, principal=self._acting())
        except RecplaneError as exc:
            self._set(record, expected, status="failed", finished_at=utcnow(), error=exc.message)
            return
        self._set(record, expected, status="queued", inputs=inputs, cache_key=key, job_id=job.id,
                  submitted_at=utcnow(), attempts=record.attempts + 1)

    def _submit_segment(self, names: list[str]) -> None:
        records = [self.steps[name] for name in names]
        created = aware(self.run.created_at) or utcnow()
        if created < self.runner.leading_since:  # after a restart: the segment may have a job already
            job_id = self.store.job_of_step(self.run.pipeline, self.run.id, names[0],
                                            created - timedelta(seconds=5))
            if job_id is not None:
                self._mark(records, ("pending",), status="queued", job_id=job_id, submitted_at=utcnow())
                return
        items = [self.spec.step(name) for name in names]
        spec = JobSpec(
            kind="pipeline_step", team=self.run.team, queue=self.runner.ensure_inline_queue(self.run.team),
            name=f"{self.run.pipeline}.{names[0]}" + (f"+{len(names) - 1}" if len(names) > 1 else ""),
            resources={"cpu": 0.0, "memory_gb": 0.0}, max_retries=max(i.max_retries for i in items),
            backoff_seconds=min(i.backoff_seconds for i in items), pipeline=self.run.pipeline,
            args={"run_id": self.run.id, "pipeline": self.run.pipeline, "version": self.run.pipeline_version,
                  "segment": names, "params": self.run.params, "trigger": self.run.trigger_detail},
        )
        try:
            job = self.runner.scheduler.submit(spec, principal=self._acting())
        except RecplaneError as exc:
            self._mark(records, ("pending",), status="failed", finished_at=utcnow(), error=exc.message)
            return
        self._mark(records, ("pending",), status="queued", job_id=job.id, submitted_at=utcnow(),
                   attempts=max(r.attempts for r in records) + 1)

    def _mark(self, records: list[StepRunRecord], expected: tuple[str, ...], **fields: Any) -> None:
        """Set fields of several steps in one statement (and in memory)."""
        if self.store.update_steps(self.run.id, [r.step for r in records], expected, **fields):
            for record in records:
                if record.status in expected:
                    for key, value in fields.items():
                        setattr(record, key, value)
            self.acted = True

    def _acting(self) -> Principal:
        """Steps act for whoever started the run: the administrator's runs as administrator, others as the team."""
        return ADMIN if self.run.created_by == ADMIN.name else Principal(team=self.run.team)

    def _adopt(self, record: StepRunRecord, inputs: Any, key: str | None) -> bool:
        """After a restart: a pending step may have a job already (the control plane died after submitting it and
        before recording its id); adopt it instead of running the step twice."""
        since = aware(self.run.started_at or self.run.created_at) or utcnow()
        job_id = self.store.job_of_step(self.run.pipeline, self.run.id, record.step, since - timedelta(seconds=5))
        if job_id is None:
            return False
        self._set(record, ("pending",), status="queued", inputs=inputs, cache_key=key, job_id=job_id,
                  submitted_at=utcnow(), attempts=1)
        return True

    # The run as a whole.

    def _cancel(self) -> None:
        now = utcnow()
        for record in self.steps.values():
            if record.status == "pending":
                self._set(record, ("pending",), status="cancelled", finished_at=now, error="the run was cancelled")
            elif record.status in _IN_FLIGHT and record.job_id:
                self.runner.scheduler.cancel(record.job_id, principal=ADMIN)
        self._sync()

    def _finish_if_done(self) -> None:
        statuses = [record.status for record in self.steps.values()]
        if not all(status in FINISHED_STEP_STATUSES for status in statuses):
            return
        failed = [record for record in self.steps.values() if record.status == "failed"]
        if self.run.cancel_requested:
            status, error = "cancelled", "cancelled"
        elif failed:
            status, error = "failed", f"step {failed[0].step!r} failed: {failed[0].error}"
        else:
            status, error = "succeeded", None
        if self.store.update_run(self.run.id, ("queued", "running"), status=status, error=error,
                                 finished_at=utcnow()):
            self.acted = True
        self.runner.forget(self.run.id)


def _attempts(record: StepRunRecord, job: JobState) -> int:
    """Attempts over all of a step's jobs: ``record.attempts`` counts jobs submitted until the last one ends."""
    return max(record.attempts, 1) - 1 + job.attempts
