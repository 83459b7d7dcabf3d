"""Train and tune jobs: a TrainSpec run as a recorded training run, preemptible and resumable.

``args.spec`` is the training spec (a YAML file path, YAML text or mapping; inlined at submission, so the job
does not depend on the submitter's files). A train job records every checkpoint the trainer writes as the job's
``checkpoint``. When the scheduler preempts it (SIGTERM), the job keeps training up to the trainer's next
checkpoint (every ``train.checkpoint_every_steps`` steps, and at each epoch end), then exits; when it is admitted
again it resumes from that checkpoint as a new run whose ``resumed_from`` tag names the preempted one. Data-parallel
specs (``workers: N``) are gangs of N: the trainer starts its own worker processes.

Tune jobs run the whole search inside the job (every trial a recorded run of the study); trials are not yet
separate scheduler jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recplane.errors import InvalidSpec
from recplane.scheduler.context import JobContext, JobStopped
from recplane.scheduler.spec import JobSpec
from recplane.training.callbacks import RunInfo, TrainCallback

__all__ = ["StopAtCheckpoint", "prepare", "prepare_tune", "run", "run_tune"]

_TRAIN_ARGS = {"spec", "resume"}
_TUNE_ARGS = {"spec", "trials", "study", "seed"}


class StopAtCheckpoint(TrainCallback):
    """Records each checkpoint on the job; once a stop was requested, ends the run right after the next one."""

    def __init__(self, context: JobContext) -> None:
        self.context = context

    def on_train_start(self, info: RunInfo) -> None:
        if self.context.stop_requested.is_set():  # stopped while loading data: nothing new to save
            raise JobStopped("Stopped before the first step; it resumes from its last checkpoint.")

    def on_checkpoint(self, path: str) -> None:
        self.context.record_checkpoint(path)
        if self.context.stop_requested.is_set():
            raise JobStopped(f"Stopped by the scheduler after checkpoint {path}; it resumes from there.")


def _train_spec(spec: JobSpec, allowed: set[str]) -> dict[str, Any]:
    from recplane.training.spec import load_train_spec

    unknown = sorted(set(spec.args) - allowed)
    if unknown:
        raise InvalidSpec(f"Unknown {spec.kind} job args {unknown}; a {spec.kind} job takes {sorted(allowed)}.")
    source = spec.args.get("spec")
    if source is None:
        raise InvalidSpec(f"A {spec.kind} job needs `args.spec`: a training spec (YAML file, YAML text or mapping).")
    if spec.entrypoint or spec.command:
        raise InvalidSpec(f"A {spec.kind} job runs its training spec; it takes no entrypoint or command.")
    train_spec = load_train_spec(Path(source) if isinstance(source, str) and _is_file(source) else source)
    return train_spec.model_dump(mode="json", exclude_defaults=True)


def _is_file(text: str) -> bool:
    return "\n" not in text and len(text) < 4096 and Path(text).is_file()


def _with_workers(spec: JobSpec, train_spec: dict[str, Any], args: dict[str, Any]) -> JobSpec:
    workers = int(train_spec.get("workers", 1))
    if spec.workers not in (1, workers):
        raise InvalidSpec(f"The job asks for {spec.workers} workers but its training spec for {workers}.")
    name = spec.name or train_spec.get("name") or f"{train_spec.get('train', {}).get('model', 'mf')}-" \
        f"{train_spec.get('dataset')}"
    return spec.model_copy(update={"args": args, "workers": workers, "name": name})


def prepare(spec: JobSpec) -> JobSpec:
    """Validate the training spec now and inline it; the gang size is the spec's data-parallel workers."""
    train_spec = _train_spec(spec, _TRAIN_ARGS)
    return _with_workers(spec, train_spec, {**spec.args, "spec": train_spec})


def prepare_tune(spec: JobSpec) -> JobSpec:
    """Validate the spec (it needs a search space) and the trial count."""
    train_spec = _train_spec(spec, _TUNE_ARGS)
    if not train_spec.get("search"):
        raise InvalidSpec("A tune job's training spec needs a `search` space.")
    trials = spec.args.get("trials")
    if not isinstance(trials, int) or trials < 1:
        raise InvalidSpec(f"A tune job needs `args.trials`, a positive integer; got {trials!r}.")
    return _with_workers(spec, train_spec, {**spec.args, "spec": train_spec})


def resumable_run(checkpoint: str | None) -> str | None:
    """The run a recorded checkpoint belongs to (``.../runs/<run id>/checkpoints/<file>``), if any."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    return path.parents[1].name if len(path.parents) >= 2 and path.parent.name == "checkpoints" else None


def run(context: JobContext) -> dict[str, Any]:
    """Train the job's spec as a recorded run, resuming from the job's checkpoint after a preemption."""
    job = context.job
    resume = resumable_run(job.checkpoint) or job.args.get("resume")
    if resume:
        print(f"recplane: resuming run {resume} from its latest checkpoint", flush=True)
    trained = context.runtime.training.train(
        job.args["spec"],
        principal=context.principal,
        resume=resume,
        callbacks=[StopAtCheckpoint(context)],
        tags={"job_id": job.id},
    )
    run_record = trained.run
    return {"run_id": run_record.id, "run_status": run_record.status, "resumed_from": run_record.tags.get(
        "resumed_from"), "artifacts": run_record.artifacts_uri}


def run_tune(context: JobContext) -> dict[str, Any]:
    """Run the study; every trial is a recorded run of its group."""
    args = context.job.args
    result = context.runtime.training.tune(
        args["spec"],
        trials=int(args["trials"]),
        principal=context.principal,
        study=args.get("study"),
        seed=int(args.get("seed", 0)),
    )
    best = result.best
    return {
        "study": result.study,
        "metric": result.metric,
        "trials": len(result.trials),
        "best_run": None if best is None else best.run_id,
        "best_value": None if best is None else best.value,
    }
