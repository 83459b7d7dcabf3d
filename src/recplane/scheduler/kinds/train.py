"""Train and tune jobs: a TrainSpec run as a recorded training run, preemptible and resumable.

``args.spec`` is the training spec (a YAML file path, YAML text or mapping; inlined at submission, so the job
does not depend on the submitter's files). A train job records every checkpoint the trainer writes as the job's
``checkpoint``. When the scheduler preempts it (SIGTERM), the job keeps training up to the trainer's next
checkpoint (every ``train.checkpoint_every_steps`` steps, and at each epoch end), then exits; when it is admitted
again it resumes from that checkpoint as a new run whose ``resumed_from`` tag names the preempted one. Data-parallel
specs (``workers: N``) are gangs of N: the trainer starts its own worker processes.

A train job submitted by a ``tune`` job (:mod:`recplane.scheduler.kinds.tune`) is one trial of its study:
``args.trial`` names the study's journal, the study and the trial number. Its run is grouped under the study and
reports each epoch's validation metric to the study; when the study prunes it, the run ends as ``pruned`` and
the job still succeeds, its result saying ``run_status: pruned``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recplane.errors import InvalidSpec
from recplane.scheduler.context import JobContext, JobStopped
from recplane.scheduler.spec import JobSpec
from recplane.training.callbacks import RunInfo, RunPruned, TrainCallback

__all__ = ["StopAtCheckpoint", "inline_train_spec", "prepare", "run"]

_TRAIN_ARGS = {"spec", "resume", "trial"}
_TRIAL_KEYS = {"study": str, "number": int, "journal": str, "tune_job": str, "warmup_epochs": int}


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


def inline_train_spec(spec: JobSpec, allowed: set[str]) -> dict[str, Any]:
    """The job's ``args.spec`` validated and inlined as a mapping (after checking its args are all ``allowed``)."""
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
    train_spec = inline_train_spec(spec, _TRAIN_ARGS)
    if "trial" in spec.args:
        _check_trial(spec.args["trial"])
    return _with_workers(spec, train_spec, {**spec.args, "spec": train_spec})


def _check_trial(trial: Any) -> None:
    """``args.trial`` (set by a tune job): the study's journal, the study, the trial number, the tune job."""
    if not isinstance(trial, dict) or set(trial) != set(_TRIAL_KEYS):
        raise InvalidSpec(f"`args.trial` must be a mapping of {sorted(_TRIAL_KEYS)}; got {trial!r}.")
    wrong = [key for key, kind in _TRIAL_KEYS.items() if not isinstance(trial[key], kind)]
    if wrong:
        raise InvalidSpec(f"`args.trial` has {wrong} of the wrong type: {trial!r}.")


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
    callbacks: list[TrainCallback] = [StopAtCheckpoint(context)]
    tags, group = {"job_id": job.id}, None
    trial = job.args.get("trial")
    if trial:
        callbacks.append(_trial_pruning(trial))
        tags.update(study=trial["study"], trial=str(trial["number"]), tune_job=trial["tune_job"])
        group = trial["study"]
    try:
        trained = context.runtime.training.train(
            job.args["spec"], principal=context.principal, resume=resume, callbacks=callbacks, group=group, tags=tags
        )
    except RunPruned as pruned:  # a trial the study gave up on: the job did its work, its result says so
        print(f"recplane: trial {trial['number'] if trial else '?'} {pruned}", flush=True)
        return {"run_id": pruned.run_id, "run_status": "pruned", "pruned": str(pruned)}
    run_record = trained.run
    return {"run_id": run_record.id, "run_status": run_record.status, "resumed_from": run_record.tags.get(
        "resumed_from"), "artifacts": run_record.artifacts_uri, "metric": run_record.metrics.valid_metric,
        "best_valid": run_record.metrics.best_valid}


def _trial_pruning(trial: dict[str, Any]) -> TrainCallback:
    from recplane.training.tuning import trial_pruning

    return trial_pruning(Path(trial["journal"]), trial["study"], int(trial["number"]),
                         warmup_epochs=int(trial["warmup_epochs"]))
