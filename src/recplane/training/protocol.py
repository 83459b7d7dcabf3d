"""The evaluation protocol per model kind: which split, which candidates, which metrics — RecBole 1.2.1's defaults.

RecBole builds its configuration from ``recbole/properties/overall.yaml`` and then, by model type, one of
``recbole/properties/quick_start_config/{context-aware,sequential}.yaml`` (``Config._load_internal_config_dict``
in ``recbole/config/configurator.py``); the model yaml files of BPR, LightGCN, SASRec and DeepFM set no
evaluation keys. :func:`default_protocol` returns those merged defaults, so a recplane number measured
under it can be set beside RecBole's. ``docs/evaluation.md`` lists the sources line by line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from recplane.errors import InvalidInput
from recplane.training.splits import DEFAULT_SEED, Split, leave_one_out_split, random_split

__all__ = ["ModelKind", "Protocol", "default_protocol", "split_for_protocol"]

ModelKind = Literal["general", "sequential", "context"]


@dataclass(frozen=True)
class Protocol:
    """How a model kind is evaluated, in RecBole's vocabulary (``eval_args`` and friends).

    ``split`` is ``"RS"`` (random ratio, ``ratios``) or ``"LS"`` (leave-one-out, ``leave_one_out``);
    ``ordering`` ``"RO"`` shuffles before splitting, ``"TO"`` sorts by time; ``group_by`` ``"user"`` splits
    each user's rows, ``None`` the whole table. ``mode`` ``"full"`` ranks every item, ``"labeled"`` scores the
    labelled rows only, ``"uni100"`` ranks each positive among 100 sampled negatives. ``exclude_seen`` is
    RecBole's ``not repeatable``: mask each user's earlier interactions (train, plus valid when testing) out
    of the full ranking. Metric names are lower-case, as in result keys (``mrr@10``).
    """

    model_kind: ModelKind
    split: Literal["RS", "LS"]
    ratios: tuple[float, float, float] | None
    leave_one_out: Literal["valid_and_test", "valid_only", "test_only"] | None
    ordering: Literal["RO", "TO"]
    group_by: Literal["user"] | None
    mode: Literal["full", "labeled", "uni100"]
    metrics: tuple[str, ...]
    topk: tuple[int, ...]
    valid_metric: str
    valid_metric_bigger: bool
    exclude_seen: bool
    min_train_per_user: int = 1
    label_threshold: tuple[str, float] | None = None
    seed: int = DEFAULT_SEED


_RANKING = ("recall", "mrr", "ndcg", "hit", "precision")


def default_protocol(model_kind: ModelKind, *, dataset: str | None = None) -> Protocol:
    """RecBole 1.2.1's default protocol for ``general``, ``sequential`` or ``context`` (CTR) models.

    ``dataset="ml-100k"`` adds what RecBole adds for that dataset: context-aware models read the label as
    ``rating >= 4`` (``quick_start_config/context-aware_ml-100k.yaml``).
    """
    if model_kind == "general":
        return Protocol(
            model_kind="general",
            split="RS",
            ratios=(0.8, 0.1, 0.1),
            leave_one_out=None,
            ordering="RO",
            group_by="user",
            mode="full",
            metrics=_RANKING,
            topk=(10,),
            valid_metric="mrr@10",
            valid_metric_bigger=True,
            exclude_seen=True,
        )
    if model_kind == "sequential":
        return Protocol(
            model_kind="sequential",
            split="LS",
            ratios=None,
            leave_one_out="valid_and_test",
            ordering="TO",
            group_by="user",
            mode="full",
            metrics=_RANKING,
            topk=(10,),
            valid_metric="mrr@10",
            valid_metric_bigger=True,
            exclude_seen=False,
            min_train_per_user=2,
        )
    if model_kind == "context":
        return Protocol(
            model_kind="context",
            split="RS",
            ratios=(0.8, 0.1, 0.1),
            leave_one_out=None,
            ordering="RO",
            group_by=None,
            mode="labeled",
            metrics=("auc", "logloss"),
            topk=(10,),
            valid_metric="auc",
            valid_metric_bigger=True,
            exclude_seen=False,
            label_threshold=("rating", 4.0) if dataset == "ml-100k" else None,
        )
    raise InvalidInput(f"Unknown model kind {model_kind!r}; choose 'general', 'sequential' or 'context'.")


def split_for_protocol(
    table: pa.Table, protocol: Protocol, *, user_col: str = "user_id", time_col: str = "ts"
) -> Split:
    """Split an interaction table the way ``protocol`` says (its split, ordering, grouping and seed)."""
    if protocol.split == "LS":
        return leave_one_out_split(
            table,
            user_col=user_col,
            time_col=time_col,
            mode=protocol.leave_one_out or "valid_and_test",
            min_train=protocol.min_train_per_user,
        )
    if protocol.ordering != "RO" or protocol.ratios is None:
        raise InvalidInput(
            f"Protocol split {protocol.split!r} with ordering {protocol.ordering!r} and ratios {protocol.ratios!r} "
            "is not supported; use RS with RO and ratios, or LS. For a global temporal split call temporal_split."
        )
    group_by = user_col if protocol.group_by == "user" else None
    return random_split(table, protocol.ratios, group_by=group_by, seed=protocol.seed)
