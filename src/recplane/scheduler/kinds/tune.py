"""Tune jobs: a study coordinator that runs every trial of a hyperparameter search as its own ``train`` job.

The tune job itself trains nothing. It opens the study in a journal file under the home
(``<home>/tuning/<tune job id>.journal``, an Optuna ``JournalStorage`` that every process of the study shares), asks
Optuna for each trial's params, submits the trial as a ``train`` job (same team, queue and priority; the spec with
the sampled params and without its search space; ``args.trial`` naming the study, the trial and this job), keeps
``parallel`` trials in flight, and tells Optuna each trial's outcome from the trial job's result. The trial jobs
report their per-epoch validation metric to the same journal, so the median pruner stops weak trials while they
train, in their own processes.

The job's ``resources`` are each trial's (``args.trial_resources`` after submission); the coordinator reserves
only :data:`COORDINATOR_RESOURCES`, so it never holds the quota its own trials wait for.

Stops and restarts: cancelling the tune job (or its timeout) cancels its trial jobs in flight. A preempted or
retried coordinator finds its finished trials in the journal and its trials in flight by their job names, and
waits for those jobs instead of submitting them again.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from recplane.catalog.tables import JobRecord
from recplane.errors import InvalidInput, InvalidSpec
from recplane.scheduler.context import JobContext, JobStopped
from recplane.scheduler.kinds.train import inline_train_spec
from recplane.scheduler.records import FINISHED_STATUSES
from recplane.scheduler.spec import JobSpec, ResourceSpec

if TYPE_CHECKING:
    from recplane.training.spec import TrainSpec
    from recplane.training.tuning import SharedStudy, TuneResult

__all__ = ["COORDINATOR_RESOURCES", "journal_path", "prepare", "run", "trial_job_name"]

COORDINATOR_RESOURCES = ResourceSpec(cpu=0.1, memory_gb=0.5, gpu=0.0)
_ARGS = {"spec", "trials", "study", "seed", "parallel", "warmup_epochs", "trial_resources"}
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # it names the trial jobs and the runs group
_POLL_SECONDS = (0.2, 2.0)  # the coordinator checks its trial jobs at the scheduler's interval, within these


def journal_path(home: Path, tune_job: str) -> Path:
    """Where the shared Optuna journal of a tune job's study lives (one per tune job: a study name may repeat)."""
    return home.resolve() / "tuning" / f"{tune_job}.journal"


def trial_job_name(study: str, number: int) -> str:
    """The name of trial ``number``'s job (how a restarted coordinator finds it)."""
    return f"{study}-trial-{number}"


def _int_arg(args: dict[str, Any], key: str, default: int | None, minimum: int = 1) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidSpec(f"A tune job's `args.{key}` must be an integer >= {minimum}; got {value!r}.")
    return value


def prepare(spec: JobSpec) -> JobSpec:
    """Validate the search; move the job's resources to its trials and give the coordinator a small share."""
    from recplane.training.spec import load_train_spec

    train_spec = inline_train_spec(spec, _ARGS)
    if not train_spec.get("search"):
        raise InvalidSpec("A tune job's training spec needs a `search` space.")
    args = dict(spec.args)
    args.update(
        spec=train_spec,
        trials=_int_arg(args, "trials", None),
        parallel=_int_arg(args, "parallel", 1),
        seed=_int_arg(args, "seed", 0, minimum=0),
        warmup_epochs=_int_arg(args, "warmup_epochs", 2, minimum=0),
    )
    study = args.get("study") or re.sub(r"[^A-Za-z0-9_.\-]+", "-", f"tune-{load_train_spec(train_spec).run_name}")
    if not isinstance(study, str) or not _STUDY_NAME.match(study):
        raise InvalidSpec(f"A tune job's `args.study` names its trial jobs and runs: letters, digits, '.', '_' and "
                          f"'-' (at most 128); got {study!r}.")
    args["study"] = study
    trial_resources = args.get("trial_resources") or spec.resources.model_dump()
    try:
        args["trial_resources"] = ResourceSpec.model_validate(trial_resources).model_dump()
    except ValueError as exc:
        raise InvalidSpec(f"A tune job's `args.trial_resources` is not a resource spec: {exc}") from exc
    if spec.workers != 1:
        raise InvalidSpec("A tune job runs one coordinator; give trials data-parallel workers with `workers` in "
                          "the training spec.")
    return spec.model_copy(update={"args": args, "resources": COORDINATOR_RESOURCES, "name": spec.name or study})


def run(context: JobContext) -> dict[str, Any]:
    """Coordinate the study until ``trials`` trials have finished; the result names the best run."""
    from recplane.training.spec import load_train_spec
    from recplane.training.tuning import SharedStudy, valid_metric_bigger

    args = context.job.args
    spec = load_train_spec(args["spec"])
    path = journal_path(context.settings.home, context.job.id)
    study = SharedStudy(path, args["study"], bigger=valid_metric_bigger(spec), owner=context.job.id,
                        seed=int(args["seed"]), warmup_epochs=int(args["warmup_epochs"]))
    return _Coordinator(context, spec, study).run()


class _Coordinator:
    """Keeps ``parallel`` trial jobs in flight until the study has ``trials`` trials, telling Optuna each outcome."""

    def __init__(self, context: JobContext, spec: TrainSpec, study: SharedStudy) -> None:
        self.context, self.spec, self.study = context, spec, study
        self.job = context.job
        self.trials, self.parallel = int(self.job.args["trials"]), int(self.job.args["parallel"])
        interval = context.settings.scheduler_interval_seconds
        self.poll_seconds = min(max(interval, _POLL_SECONDS[0]), _POLL_SECONDS[1])
        self.in_flight: dict[int, str] = {}  # trial number -> its job id

    def run(self) -> dict[str, Any]:
        try:
            self._recover()
            while True:
                changed = self._collect()
                changed = self._fill() or changed
                if changed:
                    self.context.record_result(self._summary(self.study.result(self.spec)))
                if not self.in_flight:
                    break
                if self.context.stop_requested.wait(self.poll_seconds):
                    self._stop()
        except JobStopped:
            raise
        except Exception:
            if self._failing_for_good():
                self._cancel_trials("its tune job failed")
            raise
        result = self.study.result(self.spec)
        summary = self._summary(result)
        if result.all_failed:
            self.context.record_result(summary)  # the per-trial errors stay readable on the failed job
            raise InvalidInput(f"Every trial of study {result.study!r} failed; the first error: "
                               f"{result.trials[0].error}")
        return summary

    def _recover(self) -> None:
        """After a restart: wait for the trials already in flight (submitting only those that never got a job)."""
        for number, params in self.study.in_flight():
            self.in_flight[number] = self._existing_job(number) or self._submit(number, params)
        if self.in_flight:
            print(f"recplane: study {self.study.name}: waiting again for trials {sorted(self.in_flight)}", flush=True)

    def _existing_job(self, number: int) -> str | None:
        """This tune job's job for trial ``number``, if it submitted one (newest first)."""
        query = (
            select(JobRecord.id, JobRecord.spec)
            .where(JobRecord.kind == "train", JobRecord.team == self.job.team,
                   JobRecord.name == trial_job_name(self.study.name, number),
                   JobRecord.created_at >= self.job.created_at)
            .order_by(JobRecord.created_at.desc())
        )
        with self.context.store.catalog.session() as session:
            for job_id, spec in session.execute(query):
                trial = ((spec or {}).get("args") or {}).get("trial") or {}
                if trial.get("tune_job") == self.job.id and trial.get("number") == number:
                    return str(job_id)
        return None

    def _fill(self) -> bool:
        """Ask for new trials while fewer than ``parallel`` run and the study has fewer than ``trials``."""
        added = False
        while len(self.in_flight) < self.parallel and self.study.asked() < self.trials:
            number, params = self.study.ask(self.spec.search)
            self.in_flight[number] = self._submit(number, params)
            added = True
        return added

    def _submit(self, number: int, params: dict[str, Any]) -> str:
        from recplane.training.tuning import trial_spec

        job = self.job
        spec = JobSpec(
            kind="train",
            name=trial_job_name(self.study.name, number),
            team=job.team,
            queue=job.queue,
            priority=job.priority,
            resources=ResourceSpec.model_validate(job.args["trial_resources"]),
            env=dict(job.env),
            pipeline=job.pipeline,
            args={
                "spec": trial_spec(self.spec, params).model_dump(mode="json", exclude_defaults=True),
                "trial": {"study": self.study.name, "number": number, "journal": str(self.study.path),
                          "tune_job": job.id, "warmup_epochs": int(job.args["warmup_epochs"])},
            },
        )
        child = self.context.runtime.scheduler.submit(spec, principal=self.context.principal)
        self.study.note(number, job_id=child.id)
        print(f"recplane: trial {number} is job {child.id}: {params}", flush=True)
        return child.id

    def _collect(self) -> bool:
        """Tell Optuna the outcome of every trial job that finished; True when one did."""
        if not self.in_flight:
            return False
        numbers = {job_id: number for number, job_id in self.in_flight.items()}
        finished = [r for r in self.context.store.records(list(numbers)) if r.status in FINISHED_STATUSES]
        for record in finished:
            self._tell(numbers[record.id], record)
            del self.in_flight[numbers[record.id]]
        return bool(finished)

    def _tell(self, number: int, record: JobRecord) -> None:
        result = record.result or {}
        run_id, metric, value = result.get("run_id"), result.get("metric"), result.get("best_valid")
        if record.status == "succeeded" and result.get("run_status") == "pruned":
            self.study.note(number, run_id=run_id, error=result.get("pruned"))
            self.study.pruned(number)
        elif record.status == "succeeded" and value is not None:
            self.study.note(number, run_id=run_id, metric=metric)
            self.study.complete(number, float(value))
        else:
            error = record.error or f"job {record.id} was {record.status}"
            if record.status == "succeeded":
                error = f"run {run_id} produced no validation metric; cannot rank it"
            self.study.note(number, run_id=run_id, metric=metric, error=error)
            self.study.failed(number)
        outcome = f"{metric}={value}" if value is not None else (result.get("pruned") or record.error or "")
        print(f"recplane: trial {number} (job {record.id}) {record.status}, run {run_id} "
              f"{result.get('run_status') or ''}: {outcome}", flush=True)

    def _stop(self) -> None:
        """Asked to stop: a cancel or timeout takes the trials in flight with it; a preemption leaves them running
        (the coordinator waits for them again when it is readmitted)."""
        why = self.context.store.record(self.job.id).stop_requested
        if why == "preempt":
            raise JobStopped(f"Preempted; trials {sorted(self.in_flight)} keep running and are waited for on resume.")
        self._cancel_trials(f"its tune job was stopped ({why or 'stop'})")
        raise JobStopped(f"Stopped ({why or 'stop'}); cancelled the trial jobs in flight.")

    def _cancel_trials(self, why: str) -> None:
        scheduler = self.context.runtime.scheduler
        for number, job_id in sorted(self.in_flight.items()):
            scheduler.cancel(job_id, principal=self.context.principal)
            self.study.note(number, error=f"cancelled: {why}")
            print(f"recplane: cancelled trial {number} (job {job_id}): {why}", flush=True)

    def _failing_for_good(self) -> bool:
        """Whether this failing attempt is the coordinator's last (no retry will wait for the trials)."""
        record = self.context.store.record(self.job.id)
        return record.attempts - record.preempted_count > record.max_retries

    def _summary(self, result: TuneResult) -> dict[str, Any]:
        best = result.best
        return {
            "study": result.study,
            "metric": result.metric,
            "direction": result.direction,
            "trials": len(result.trials),
            "in_flight": sorted(self.in_flight),
            "best_run": None if best is None else best.run_id,
            "best_value": None if best is None else best.value,
            "best_params": None if best is None else best.params,
            "best_trial": None if best is None else best.number,
            "trial_results": [asdict(trial) for trial in result.trials],
            "journal": str(self.study.path),
        }
