"""REST routes for the model registry: register versions, list and resolve them, move aliases, read their history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from recplane.api.deps import Caller, RuntimeDep
from recplane.registry import (
    AliasEvent,
    AliasPointer,
    ModelLineage,
    ModelVersion,
    RegisteredModel,
    VersionComparison,
)

router = APIRouter(prefix="/v1/models", tags=["models"])

RefPath = Annotated[str, Path(description="A version number, an alias or 'latest'.")]


class RegisterVersion(BaseModel):
    """A new model version: from a finished run's exported model and/or a folder the server can read."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, description="A finished training run with an exported model.")
    artifact_uri: str | None = Field(
        default=None, description="A folder with manifest.json (path on the server or fsspec URL such as s3://...)."
    )
    description: str = ""
    tags: dict[str, str] | None = None
    params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    lineage: ModelLineage | None = None
    team: str | None = Field(default=None, description="Owner of a new model (default: your token's team).")
    model_description: str | None = None


class MoveAlias(BaseModel):
    """Point an alias at a version (a number, or another alias to promote)."""

    model_config = ConfigDict(extra="forbid")

    version: int | str
    reason: str = ""


@router.get("", response_model=list[RegisteredModel], summary="Registered models your team may see")
def list_models(runtime: RuntimeDep, caller: Caller) -> list[RegisteredModel]:
    return runtime.registry.list_models(principal=caller)


@router.get("/{name}", response_model=RegisteredModel, summary="One model: owner, newest version, aliases")
def get_model(name: str, runtime: RuntimeDep, caller: Caller) -> RegisteredModel:
    return runtime.registry.get_model(name, principal=caller)


@router.post("/{name}/versions", response_model=ModelVersion, status_code=201, summary="Register a new version")
def register_version(name: str, body: RegisterVersion, runtime: RuntimeDep, caller: Caller) -> ModelVersion:
    return runtime.registry.register(
        name,
        run_id=body.run_id,
        artifact_uri=body.artifact_uri,
        description=body.description,
        tags=body.tags,
        params=body.params,
        metrics=body.metrics,
        lineage=body.lineage,
        team=body.team,
        model_description=body.model_description,
        principal=caller,
    )


@router.get("/{name}/versions", response_model=list[ModelVersion], summary="Every version, newest first")
def list_versions(name: str, runtime: RuntimeDep, caller: Caller) -> list[ModelVersion]:
    return runtime.registry.list_versions(name, principal=caller)


@router.get("/{name}/versions/{ref}", response_model=ModelVersion, summary="One version by number, alias or latest")
def get_version(name: str, ref: RefPath, runtime: RuntimeDep, caller: Caller) -> ModelVersion:
    return runtime.registry.resolve(name, ref, principal=caller)


@router.get("/{name}/aliases/{alias}", response_model=AliasPointer, summary="Where an alias points (now or at)")
def get_alias(
    name: str,
    alias: str,
    runtime: RuntimeDep,
    caller: Caller,
    at: Annotated[datetime | None, Query(description="A past moment (ISO 8601); default now.")] = None,
) -> AliasPointer:
    return runtime.registry.get_alias(name, alias, at=at, principal=caller)


@router.put("/{name}/aliases/{alias}", response_model=AliasEvent, summary="Move (or create) an alias")
def set_alias(name: str, alias: str, body: MoveAlias, runtime: RuntimeDep, caller: Caller) -> AliasEvent:
    return runtime.registry.set_alias(name, alias, body.version, reason=body.reason, principal=caller)


@router.delete("/{name}/aliases/{alias}", response_model=AliasEvent, summary="Delete an alias (history stays)")
def delete_alias(name: str, alias: str, runtime: RuntimeDep, caller: Caller, reason: str = "") -> AliasEvent:
    return runtime.registry.delete_alias(name, alias, reason=reason, principal=caller)


@router.get("/{name}/history", response_model=list[AliasEvent], summary="Every alias move, newest first")
def alias_history(name: str, runtime: RuntimeDep, caller: Caller, alias: str | None = None) -> list[AliasEvent]:
    return runtime.registry.alias_history(name, alias, principal=caller)


@router.get("/{name}/compare", response_model=VersionComparison, summary="Two versions' metrics side by side")
def compare_versions(
    name: str,
    runtime: RuntimeDep,
    caller: Caller,
    v1: Annotated[str, Query(description="A version number or alias.")],
    v2: Annotated[str, Query(description="A version number or alias.")],
) -> VersionComparison:
    return runtime.registry.compare(name, v1, v2, principal=caller)
