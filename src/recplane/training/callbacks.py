"""Hooks into a training run: progress bars, run records in the catalog and tuning trials all listen here.

The trainer calls every callback at the same points, in order. A callback may stop a run by raising (an Optuna
trial raises ``TrialPruned`` from ``on_epoch_end``); the trainer does not swallow it. Callbacks run in the
training process only (rank 0 under data-parallel training), so they may write files and talk to the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recplane.training.trainer import EpochRecord, TrainResult

__all__ = ["RunInfo", "RunPruned", "TrainCallback"]


class RunPruned(Exception):
    """Raised by a callback to stop a run that is not worth finishing (a tuning trial below the median).

    The code that records runs sets ``run_id`` before passing it on, so a tuner can name the pruned run.
    """

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass(frozen=True)
class RunInfo:
    """What a run is about to do: the resolved settings, the data's size and the schedule."""

    config: dict[str, Any]
    model: str
    num_users: int
    num_items: int
    train_rows: int
    batches_per_epoch: int
    epochs: int
    start_epoch: int
    start_batch: int
    num_parameters: int
    valid_metric: str = ""
    valid_metric_bigger: bool = True


class TrainCallback:
    """Override what you need; every hook does nothing by default."""

    def on_train_start(self, info: RunInfo) -> None:
        """Before the first step (after a resume, ``info.start_epoch``/``start_batch`` say where it continues)."""

    def on_step(self, step: int, loss: float) -> None:
        """After each optimizer step (``step`` counts from 1 over the whole run)."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        """After each epoch's validation; raise to stop the run."""

    def on_checkpoint(self, path: str) -> None:
        """After a checkpoint was written."""

    def on_train_end(self, result: TrainResult) -> None:
        """After the test metrics of the best weights were measured."""
