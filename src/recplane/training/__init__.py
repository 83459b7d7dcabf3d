"""Training and evaluation: the trainer, callbacks, checkpoints, metrics, splits and the protocol.

Names load on first use: importing the package must not import torch (seconds), because the catalog, the API
and the CLI read training runs without training anything.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recplane.training.callbacks import RunInfo, TrainCallback
    from recplane.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
    from recplane.training.data import IdMap
    from recplane.training.evaluate import EvaluationResult, Interactions, ScoreFn, evaluate_full_sort
    from recplane.training.metrics import (
        RANKING_METRICS,
        auc,
        average_popularity,
        gauc,
        item_coverage,
        log_loss,
        novelty,
        ranking_metrics,
        top_k_items,
    )
    from recplane.training.protocol import ModelKind, Protocol, default_protocol, split_for_protocol
    from recplane.training.service import TrainedRun, TrainingService
    from recplane.training.spec import SearchParam, TrainSpec, load_train_spec
    from recplane.training.splits import Split, leave_one_out_split, random_split, temporal_split, temporal_split_at
    from recplane.training.trainer import EpochRecord, ModelName, TrainConfig, TrainResult, train
    from recplane.training.tuning import TuneResult

_HOMES = {
    "SearchParam": "recplane.training.spec",
    "TrainSpec": "recplane.training.spec",
    "load_train_spec": "recplane.training.spec",
    "TrainedRun": "recplane.training.service",
    "TrainingService": "recplane.training.service",
    "TuneResult": "recplane.training.tuning",
    "EpochRecord": "recplane.training.trainer",
    "EvaluationResult": "recplane.training.evaluate",
    "IdMap": "recplane.training.data",
    "Interactions": "recplane.training.evaluate",
    "ModelKind": "recplane.training.protocol",
    "ModelName": "recplane.training.trainer",
    "Protocol": "recplane.training.protocol",
    "RANKING_METRICS": "recplane.training.metrics",
    "RunInfo": "recplane.training.callbacks",
    "ScoreFn": "recplane.training.evaluate",
    "Split": "recplane.training.splits",
    "TrainCallback": "recplane.training.callbacks",
    "TrainConfig": "recplane.training.trainer",
    "TrainResult": "recplane.training.trainer",
    "TrainState": "recplane.training.checkpoint",
    "auc": "recplane.training.metrics",
    "average_popularity": "recplane.training.metrics",
    "default_protocol": "recplane.training.protocol",
    "evaluate_full_sort": "recplane.training.evaluate",
    "gauc": "recplane.training.metrics",
    "item_coverage": "recplane.training.metrics",
    "leave_one_out_split": "recplane.training.splits",
    "load_checkpoint": "recplane.training.checkpoint",
    "log_loss": "recplane.training.metrics",
    "novelty": "recplane.training.metrics",
    "random_split": "recplane.training.splits",
    "ranking_metrics": "recplane.training.metrics",
    "save_checkpoint": "recplane.training.checkpoint",
    "split_for_protocol": "recplane.training.protocol",
    "temporal_split": "recplane.training.splits",
    "temporal_split_at": "recplane.training.splits",
    "top_k_items": "recplane.training.metrics",
    "train": "recplane.training.trainer",
}

__all__ = [
    "RANKING_METRICS",
    "EpochRecord",
    "EvaluationResult",
    "IdMap",
    "Interactions",
    "ModelKind",
    "ModelName",
    "Protocol",
    "RunInfo",
    "ScoreFn",
    "SearchParam",
    "Split",
    "TrainCallback",
    "TrainConfig",
    "TrainResult",
    "TrainSpec",
    "TrainState",
    "TrainedRun",
    "TrainingService",
    "TuneResult",
    "auc",
    "average_popularity",
    "default_protocol",
    "evaluate_full_sort",
    "gauc",
    "item_coverage",
    "leave_one_out_split",
    "load_checkpoint",
    "load_train_spec",
    "log_loss",
    "novelty",
    "random_split",
    "ranking_metrics",
    "save_checkpoint",
    "split_for_protocol",
    "temporal_split",
    "temporal_split_at",
    "top_k_items",
    "train",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'recplane.training' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
