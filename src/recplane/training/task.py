"""The task abstraction: what differs between model kinds, so that one training loop serves the whole zoo.

A task owns a run's data. Built once from the Arrow tables, it knows its evaluation protocol, holds the id maps
and the training examples as tensors (one row per example), builds the model, turns a slice of row indices into
a batch (drawing negatives with the loop's generator, so that resume is exact) and evaluates a split. The loop
(steps, checkpoints, early stopping, resume, callbacks) lives in :mod:`recplane.training.trainer` and never
branches on the model.

Implementations: :mod:`recplane.training.retrieval_tasks` (MF, LightGCN, two-tower under the general protocol;
SASRec under the sequential one) and :mod:`recplane.training.ranking_task` (the CTR and multi-task models under
the context protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, TypeVar

import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.models.base import Batch, RecModel
from recplane.training.data import IdMap
from recplane.training.protocol import Protocol as EvaluationProtocol

__all__ = ["Part", "Task", "build_with_params"]

Part = Literal["train", "valid", "test"]
Built = TypeVar("Built")


class Task(Protocol):
    """One model kind's data, model factory, batches and evaluation (see the module docstring)."""

    protocol: EvaluationProtocol
    users: IdMap
    items: IdMap

    @property
    def num_rows(self) -> int:
        """Training examples per epoch (the rows that batches index)."""

    def build_model(self) -> RecModel:
        """A freshly initialised model sized for this data (seeded by the caller)."""

    def batch(self, rows: Tensor, generator: torch.Generator) -> Batch:
        """The training batch of ``rows`` (CPU tensors; negatives drawn with ``generator``). Every tensor has one
        row per entry of ``rows`` (or none, if shared by all rows): the loop builds several mini-batches in one
        call when the batch draws random values, and cuts them apart by slicing."""

    def evaluate(self, model: RecModel, part: Literal["valid", "test"], device: torch.device) -> dict[str, float]:
        """The protocol's metrics of ``model`` (in eval mode, on ``device``) on a split; empty if it has no rows."""


def build_with_params(
    model: str, params: Mapping[str, Any], owned: Mapping[str, Any], build: Callable[..., Built]
) -> Built:
    """``build(**params, **owned)``: the user's hyperparameters plus what the trainer derives from the data.

    A parameter the trainer derives (sizes, fields, tasks) may not be set by hand; bad or unknown parameters
    become an ``InvalidInput`` naming the model.
    """
    clashing = sorted(set(params) & set(owned))
    if clashing:
        raise InvalidInput(
            f"params {clashing} of model {model!r} are derived from the data by the trainer; leave them out."
        )
    try:
        return build(**params, **owned)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"Invalid params for model {model!r}: {error}") from error
