"""Training and evaluation: the single-process trainer, checkpoints, metrics, splits and the protocol."""

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
from recplane.training.splits import Split, leave_one_out_split, random_split, temporal_split, temporal_split_at
from recplane.training.trainer import EpochRecord, TrainConfig, TrainResult, train

__all__ = [
    "RANKING_METRICS",
    "EpochRecord",
    "EvaluationResult",
    "IdMap",
    "Interactions",
    "ModelKind",
    "Protocol",
    "ScoreFn",
    "Split",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "auc",
    "average_popularity",
    "default_protocol",
    "evaluate_full_sort",
    "gauc",
    "item_coverage",
    "leave_one_out_split",
    "load_checkpoint",
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
