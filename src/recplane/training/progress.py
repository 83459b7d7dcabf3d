"""A Rich progress display for training runs: a bar per epoch and a line per epoch with its valid metrics.

The bar shows steps, the running mean loss and samples per second. Redraws are rate-limited (at most
``refreshes_per_second``, 10 by default) and done by the training thread itself, so the display costs a few
microseconds per step and starts no thread. Without a terminal (CI logs, files) Rich draws no live bar and
only the per-epoch lines appear.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from recplane.training.callbacks import RunInfo, TrainCallback

if TYPE_CHECKING:
    from recplane.training.trainer import EpochRecord, TrainResult

__all__ = ["RichProgress", "headline", "is_headline"]

_HEADLINE = ("recall", "mrr", "ndcg", "hit", "precision", "auc", "gauc", "logloss")


class RichProgress(TrainCallback):
    """Shows a training run on a Rich console (stderr by default)."""

    def __init__(self, console: Console | None = None, *, refreshes_per_second: float = 10.0) -> None:
        self.console = console or Console(stderr=True)
        self.interval = 1.0 / refreshes_per_second
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:,.0f} samples/s"),
            TimeElapsedColumn(),
            console=self.console,
            auto_refresh=False,
            transient=True,
        )
        self.task: TaskID | None = None
        self.batch_size = 1
        self.batches_per_epoch = 0
        self.epoch = 0
        self._reset_epoch(0, 0)

    def _reset_epoch(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.done = epoch, start_batch
        self.loss_sum, self.losses = 0.0, 0
        self.started = self.last_drawn = time.perf_counter()

    def _draw(self) -> None:
        if self.task is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(
            self.task,
            completed=self.done,
            epoch=self.epoch + 1,
            loss=self.loss_sum / max(self.losses, 1),
            rate=self.losses * self.batch_size / elapsed,
        )
        self.progress.refresh()
        self.last_drawn = time.perf_counter()

    def on_train_start(self, info: RunInfo) -> None:
        self.batch_size = int(info.config.get("batch_size", 1))
        self.batches_per_epoch = info.batches_per_epoch
        self.console.print(
            f"Training {info.model}: {info.train_rows:,} rows, {info.num_users:,} users, {info.num_items:,} items, "
            f"{info.num_parameters:,} parameters, {info.epochs} epochs of {info.batches_per_epoch} batches."
        )
        self._reset_epoch(info.start_epoch, info.start_batch)
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=info.batches_per_epoch, completed=info.start_batch, epoch=self.epoch + 1, loss=0.0, rate=0.0
        )

    def on_step(self, step: int, loss: float) -> None:
        self.done += 1
        self.loss_sum += loss
        self.losses += 1
        if time.perf_counter() - self.last_drawn >= self.interval or self.done == self.batches_per_epoch:
            self._draw()

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.progress.console.print(
            f"epoch {record.epoch + 1}: loss {record.loss:.4f}  {headline(record.valid)}  ({record.seconds:.1f}s)"
        )
        self._reset_epoch(record.epoch + 1, 0)
        self._draw()

    def on_train_end(self, result: TrainResult) -> None:
        self.close()
        best = "" if result.best_epoch is None else f", best {result.valid_metric} at epoch {result.best_epoch + 1}"
        self.console.print(f"test{best}: {headline(result.test_metrics)}")

    def close(self) -> None:
        """Stop the live display (also when a run fails: the trainer tells callbacks nothing then)."""
        self.progress.stop()


def is_headline(name: str) -> bool:
    """An accuracy metric over all rows (``recall@10``, ``auc``, ``like_logloss`` ...), not a diagnostic such as
    ``novelty@10`` or a segment such as ``cold_items/ndcg@10``."""
    return name.split("@")[0].split("_")[-1] in _HEADLINE


def headline(metrics: dict[str, float]) -> str:
    """The accuracy metrics of a result as one line."""
    shown = sorted(name for name in metrics if is_headline(name))
    return "  ".join(f"{name} {metrics[name]:.4f}" for name in shown)
