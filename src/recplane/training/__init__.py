"""Training and evaluation: metrics, splits and the evaluation protocol (the trainer comes next)."""

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

__all__ = [
    "RANKING_METRICS",
    "EvaluationResult",
    "Interactions",
    "ModelKind",
    "Protocol",
    "ScoreFn",
    "Split",
    "auc",
    "average_popularity",
    "default_protocol",
    "evaluate_full_sort",
    "gauc",
    "item_coverage",
    "leave_one_out_split",
    "log_loss",
    "novelty",
    "random_split",
    "ranking_metrics",
    "split_for_protocol",
    "temporal_split",
    "temporal_split_at",
    "top_k_items",
]
