"""Deployment specs: which models serve, how candidates are found, ranked and filtered, and how the service runs.

A deployment is a retrieval model + an ANN index over its item vectors + an optional ranker + online features +
business rules + a declared fallback for unknown or cold users. Written in YAML (``recplane serve`` /
``recplane predict``) or Python::

    name: home-feed
    retrieval: {name: mf-shop, alias: production}     # a registered model, by alias or version
    ranking: {name: deepfm-shop, version: 3}          # optional
    features: ranker_features                         # feature service for the ranker's row features
    candidates: 200                                   # retrieved per request, before ranking and rules
    k: 10
    index: auto                                       # exact up to 50k items, IVF above; or exact/ivf/hnsw
    recall_target: 0.95                               # ivf/hnsw: search widened until recall@candidates reaches it
    rules:
      exclude_seen: true
      items: shop_items                               # item dataset for category rules
      category_column: category
      max_per_category: 3
      boosts: [{category: sale, multiply: 1.2}]
      block_items: [13, 42]
    fallback: {kind: popularity, min_interactions: 0}
    logging: {impressions: home_feed_impressions}
    serving: {max_batch: 32, max_wait_ms: 2, threads: 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recplane.errors import InvalidSpec
from recplane.specs import problems_of, read_yaml_mapping

__all__ = [
    "BoostSpec",
    "DeploymentSpec",
    "FallbackSpec",
    "LoggingSpec",
    "ModelRef",
    "RulesSpec",
    "ServingSpec",
    "load_deployment",
]

ItemId = str | int


class ModelRef(BaseModel):
    """A registered model: by ``version``, else by ``alias`` (``None`` = the latest version).

    ``path`` serves a bundle folder (a run's ``model/`` folder) instead of a registry version.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    alias: str | None = "production"
    version: int | None = Field(default=None, ge=1)
    path: str | None = Field(default=None, description="A bundle folder to serve instead of a registry version.")

    @property
    def ref(self) -> str | int:
        """What the registry resolves: the version, the alias or ``latest``."""
        if self.version is not None:
            return self.version
        return self.alias or "latest"


class BoostSpec(BaseModel):
    """Scale and/or shift the score of some items: listed ones, or every item of a category."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemId] = Field(default_factory=list)
    category: str | None = None
    multiply: float = 1.0
    add: float = 0.0

    @model_validator(mode="after")
    def _targets_something(self) -> BoostSpec:
        if not self.items and self.category is None:
            raise ValueError("a boost needs 'items' or a 'category'")
        return self


class RulesSpec(BaseModel):
    """Business rules applied to the candidates, in this order: exclusions, boosts, dedupe, category cap."""

    model_config = ConfigDict(extra="forbid")

    exclude_seen: bool = Field(default=True, description="Drop items the user interacted with in training data.")
    dedupe: bool = True
    items: str | None = Field(default=None, description="Item dataset (item_id + category column) for category rules.")
    category_column: str = "category"
    max_per_category: int | None = Field(default=None, ge=1)
    boosts: list[BoostSpec] = Field(default_factory=list)
    block_items: list[ItemId] = Field(default_factory=list)
    block_categories: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _categories_need_items(self) -> RulesSpec:
        uses = self.max_per_category is not None or self.block_categories or any(b.category for b in self.boosts)
        if uses and self.items is None:
            raise ValueError("category rules (max_per_category, block_categories, category boosts) need 'items'")
        return self

    @property
    def needs_categories(self) -> bool:
        """Whether any rule reads item categories."""
        return self.items is not None


class FallbackSpec(BaseModel):
    """What unknown or cold users get: the most popular items, or items like the request's context.

    ``content``: items nearest (by item vectors) to ``context.item_id``, or the most popular of
    ``context.category``; without such context it serves popularity (and says so).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["popularity", "content"] = "popularity"
    min_interactions: int = Field(default=0, ge=0, description="Users with fewer training interactions are cold.")


class LoggingSpec(BaseModel):
    """Impression logging: the dataset served answers go to (None: off), and whether row features go too."""

    model_config = ConfigDict(extra="forbid")

    impressions: str | None = None
    feedback: str | None = Field(default=None, description="Feedback dataset (default <impressions>_feedback).")
    log_features: bool = False
    flush_seconds: float = Field(default=0.5, gt=0)


class ServingSpec(BaseModel):
    """How the service runs: micro-batching, admission and threads."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0)
    max_inflight: int = Field(default=256, ge=1)
    threads: int = Field(default=1, ge=1, le=256)
    swap_poll_seconds: float = Field(default=1.0, gt=0)


class DeploymentSpec(BaseModel):
    """A recommendation deployment (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,127}$")
    retrieval: ModelRef
    ranking: ModelRef | None = None
    features: str | None = Field(default=None, description="Feature service for the ranker's row features.")
    ranking_weights: dict[str, float] = Field(
        default_factory=dict, description="Score = sum of weight x task probability (default: the first task)."
    )
    candidates: int = Field(default=200, ge=1, le=100_000)
    k: int = Field(default=10, ge=1, le=10_000)
    index: Literal["auto", "exact", "hnsw", "ivf"] = "auto"
    recall_target: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Approximate indexes: mean recall@candidates against exact search that calibration must reach.",
    )
    rules: RulesSpec = Field(default_factory=RulesSpec)
    fallback: FallbackSpec = Field(default_factory=FallbackSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)

    def to_yaml(self) -> str:
        """The spec as YAML (defaults left out)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def load_deployment(source: DeploymentSpec | dict[str, Any] | str | Path) -> DeploymentSpec:
    """A DeploymentSpec from a spec, a dict, YAML text or a YAML file path."""
    if isinstance(source, DeploymentSpec):
        return source
    if isinstance(source, dict):
        data, origin = source, "the given mapping"
    else:
        data, origin = read_yaml_mapping(source, what="Deployment spec", needs="'name' and 'retrieval'")
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_of(exc)
        raise InvalidSpec(f"Invalid deployment spec in {origin}: {problems}", details={"errors": problems}) from exc
