"""Predict jobs: batch inference of a deployment (top-k per user) into a dataset, as a scheduled, accounted job.

``args``: ``deployment`` (a deployment spec: YAML file path, YAML text or mapping; inlined at submission),
``users`` (a dataset name, or a list of ids), ``out`` (the dataset to write), and optionally ``k``,
``users_column`` and ``chunk``. A predict job with an ``entrypoint`` or ``command`` runs that instead, like a
custom job.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from recplane.errors import InvalidSpec
from recplane.scheduler.context import JobContext
from recplane.scheduler.kinds import custom
from recplane.scheduler.spec import JobSpec

__all__ = ["prepare", "run"]

_ARGS = {"deployment", "users", "out", "k", "users_column", "chunk"}


def prepare(spec: JobSpec) -> JobSpec:
    """Check the deployment and the args now; inline a deployment file."""
    if spec.entrypoint or spec.command:
        return custom.prepare(spec)
    from recplane.serving.spec import load_deployment

    unknown, missing = sorted(set(spec.args) - _ARGS), sorted({"deployment", "users", "out"} - set(spec.args))
    if unknown or missing:
        raise InvalidSpec(f"A predict job takes args {sorted(_ARGS)} (deployment, users and out required); "
                          f"unknown {unknown}, missing {missing}. Or give an entrypoint/command of your own.")
    source = spec.args["deployment"]
    if isinstance(source, str) and "\n" not in source and Path(source).is_file():
        source = Path(source)
    deployment = load_deployment(source)
    return spec.model_copy(update={"args": {**spec.args, "deployment": deployment.model_dump(mode="json")}})


def run(context: JobContext) -> dict[str, Any] | None:
    """Write the deployment's top-k for the users as a new version of ``out``."""
    if context.job.entrypoint:
        return custom.run(context)
    import pyarrow as pa

    from recplane.serving.predict import predict
    from recplane.serving.spec import load_deployment

    args = context.job.args
    users = args["users"] if isinstance(args["users"], str) else pa.array(args["users"])
    result = predict(
        context.runtime,
        load_deployment(args["deployment"]),
        users=users,
        out=args["out"],
        k=args.get("k"),
        users_column=args.get("users_column", "user_id"),
        chunk=int(args.get("chunk", 4096)),
        principal=context.principal,
    )
    return asdict(result)
