"""Inline segments: several inline steps of one run executed by one ``pipeline_step`` job, each step committed.

Starting a job costs a few catalog transactions (submit, admit, start, finish, ledger), which is most of the
time of a light step. So the runner hands every pending inline step of a run whose upstream steps are done or in
the same hand-over to one job (a *segment*). The job walks them in dependency order and, for each: resolves its
inputs, checks the cache, calls the function, and commits the step's status, outputs and cache entry in one
transaction before it moves on. A step that fails marks itself failed on the job's last attempt (earlier attempts
leave it queued and the scheduler retries the job, which skips the steps already done); steps after it stay
queued and the runner skips them. A segment whose job died with its process is handed over again.
"""

from __future__ import annotations

import traceback
from typing import Any

from recplane.auth import ADMIN
from recplane.catalog.tables import StepCacheRecord, utcnow
from recplane.errors import RecplaneError
from recplane.pipelines.dag import dependencies, topological_order
from recplane.pipelines.execution import StepContext, call_step
from recplane.pipelines.records import DONE_STEP_STATUSES
from recplane.pipelines.resolve import CodeDigests, prepare_step
from recplane.pipelines.spec import PipelineSpec
from recplane.pipelines.store import PipelineStore
from recplane.scheduler.context import JobContext, JobStopped

__all__ = ["run_segment"]

_CODES = CodeDigests()  # one per worker process: inline segments share it across jobs
_IN_FLIGHT = ("queued", "running")


def run_segment(context: JobContext) -> dict[str, Any]:
    """Run the job's segment; returns how many steps ran and how many came from the cache."""
    args = context.job.args
    store = PipelineStore(context.store.catalog)
    run_id, pipeline = str(args["run_id"]), str(args["pipeline"])
    spec = PipelineSpec.model_validate(store.version(pipeline, int(args["version"])).spec)
    records = {record.step: record for record in store.steps(run_id)}
    outputs = {name: record.outputs for name, record in records.items() if record.status in DONE_STEP_STATUSES}
    segment = set(args["segment"])
    graph = {item.name: [n for n in dependencies(item.needs, item.with_) if n in segment]
             for item in spec.steps if item.name in segment}
    last_attempt = context.attempt > context.job.max_retries
    ran = cached = 0
    for name in topological_order(graph, pipeline=pipeline):
        if records[name].status in DONE_STEP_STATUSES:
            continue  # an earlier attempt of this job finished it
        if context.stop_requested.is_set():  # cancelled (or preempted): stop between steps, the done ones stay
            raise JobStopped(f"stopped by the scheduler before step {name!r}")
        item = spec.step(name)
        now = utcnow()
        try:
            inputs, key = prepare_step(item, pipeline=pipeline, params=args.get("params") or {}, outputs=outputs,
                                       code=_CODES, dataset_version=_datasets(context))
        except RecplaneError as exc:
            _fail(store, run_id, name, exc.message, context, final=True)
            raise
        hit = store.cached(key) if item.cache else None
        if hit is not None:
            store.update_step(run_id, name, _IN_FLIGHT, status="cached", inputs=inputs, outputs=hit.outputs,
                              cache_key=key, cached_from=hit.run_id, finished_at=now)
            outputs[name] = hit.outputs
            cached += 1
            continue
        step_args = {"run_id": run_id, "pipeline": pipeline, "step": name, "params": args.get("params"),
                     "trigger": args.get("trigger")}
        try:
            result = call_step(item.target, inputs, StepContext(context, step_args))
        except Exception as exc:
            summary = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
            _fail(store, run_id, name, summary, context, final=last_attempt)
            raise
        entry = StepCacheRecord(cache_key=key, pipeline=pipeline, step=name, outputs=result, run_id=run_id,
                                created_at=utcnow()) if item.cache else None
        store.update_step(run_id, name, _IN_FLIGHT, cache=entry, status="succeeded", inputs=inputs, outputs=result,
                          cache_key=key, attempts=context.attempt, error=None, started_at=now,
                          finished_at=utcnow())
        outputs[name] = result
        ran += 1
    return {"segment": sorted(segment), "ran": ran, "cached": cached}


def _fail(store: PipelineStore, run_id: str, step: str, error: str, context: JobContext, *, final: bool) -> None:
    """Record a step's failure: failed on the job's last attempt, else only the error (the job is retried)."""
    fields: dict[str, Any] = {"error": error[:2000], "attempts": context.attempt}
    if final:
        fields.update(status="failed", finished_at=utcnow())
    store.update_step(run_id, step, _IN_FLIGHT, **fields)


def _datasets(context: JobContext) -> Any:
    """Newest dataset versions, through the platform (opened only when a step needs one pinned)."""

    def newest(name: str) -> int:
        return int(context.runtime.datasets.get(name, principal=ADMIN).current_version)

    return newest
