"""Feature inputs of the ranking models: declared sparse and dense fields turned into embeddings.

The CTR and multi-task models (DeepFM, DCN-v2, DIN, MMoE, sparse MoE) read their (user, item, context)
features through one ``FeatureLayer`` so that they agree on batch keys, id checks and multi-valued pooling:

* a **sparse field** is a categorical id per row (``batch[name]``: int ``[B]``) or, when ``multi_valued``, a
  bag of ids per row (``batch[name]``: int ``[B, L]`` right-padded, ``batch[name + "_len"]``: int ``[B]`` the
  bag sizes). Each field has its own table; bags are mean-pooled over their real entries (padding entries may
  hold any value: they are never looked up). An empty bag pools to the zero vector.
* a **dense field** is a float value (``[B]``) or vector (``[B, dim]``) per row, passed through unchanged.

``FeatureLayer(batch)`` returns ``FieldInputs``: one ``[B, d]`` embedding per sparse field plus the dense
values, viewable as ``stacked()`` ``[B, F, D]`` (factorisation machines need equal dims) or ``flat()``
``[B, sum d + dense]`` (the input of an MLP). ``MLP`` is the deep block every ranking model shares, and
``weighted_bce`` their label loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature

__all__ = [
    "MLP",
    "DenseField",
    "EmbeddingFactory",
    "FeatureLayer",
    "FieldInputs",
    "SparseField",
    "check_ids",
    "default_embedding",
    "lookup_all",
    "require",
    "weighted_bce",
]

EmbeddingFactory = Callable[[int, int], nn.Module]
"""Builds a table for ``(num_embeddings, dim)``: a module mapping int ids ``[...]`` to vectors ``[..., dim]``."""


def default_embedding(num_embeddings: int, dim: int) -> nn.Module:
    """A plain ``nn.Embedding`` with Xavier-normal weights, as RecBole initialises its context-aware models."""
    table = nn.Embedding(num_embeddings, dim)
    nn.init.xavier_normal_(table.weight)
    return table


def check_ids(what: str, ids: Tensor, cardinality: int) -> None:
    """Raise a ValueError naming ``what`` when ``ids`` are not integers in ``[0, cardinality)``."""
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
        raise TypeError(f"{what} must hold integer ids, got dtype {ids.dtype}. Cast the column to int64.")
    if ids.numel() == 0:
        return
    low, high = torch.aminmax(ids)
    if int(low) < 0 or int(high) >= cardinality:
        bad = int(low) if int(low) < 0 else int(high)
        raise ValueError(
            f"{what} holds id {bad}, outside [0, {cardinality}). Remap ids to a dense range first, or raise the "
            "declared cardinality."
        )


def lookup_all(table: nn.Module, num_embeddings: int) -> Tensor:
    """``[num_embeddings, dim]``: every row of a table (the weight itself for ``nn.Embedding``, no copy)."""
    if isinstance(table, nn.Embedding):
        return table.weight
    device = next(table.parameters()).device
    return table(torch.arange(num_embeddings, device=device))


def require(batch: Batch, key: str, what: str) -> Tensor:
    """``batch[key]``, or a ValueError naming what the key is for and listing what the batch holds."""
    if key not in batch:
        raise ValueError(f"Batch has no {key!r} ({what}); it holds {sorted(batch)}.")
    return batch[key]


@dataclass(frozen=True)
class SparseField:
    """A categorical feature with ids in ``[0, cardinality)``: one id per row, or a bag when ``multi_valued``."""

    name: str
    cardinality: int
    dim: int | None = None  # None: the model's embedding_size
    multi_valued: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SparseField needs a non-empty name.")
        if self.cardinality < 1:
            raise ValueError(f"SparseField {self.name!r} has cardinality {self.cardinality}; it must be >= 1.")
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"SparseField {self.name!r} has dim {self.dim}; it must be >= 1 (or None).")

    @property
    def length_key(self) -> str:
        """The batch key of the bag sizes of a multi-valued field."""
        return f"{self.name}_len"


@dataclass(frozen=True)
class DenseField:
    """A float feature: a scalar (``dim=1``, batch shape ``[B]`` or ``[B, 1]``) or a vector ``[B, dim]``."""

    name: str
    dim: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("DenseField needs a non-empty name.")
        if self.dim < 1:
            raise ValueError(f"DenseField {self.name!r} has dim {self.dim}; it must be >= 1.")


@dataclass(frozen=True)
class FieldInputs:
    """The embedded features of one batch: per sparse field ``[B, d_i]`` (declared order) and dense ``[B, n]``."""

    sparse: tuple[Tensor, ...]
    dense: Tensor

    def stacked(self) -> Tensor:
        """``[B, F, D]`` sparse field embeddings; every sparse field must have the same dim."""
        if not self.sparse:
            raise ValueError("No sparse fields to stack; declare at least one SparseField.")
        dims = {int(t.shape[-1]) for t in self.sparse}  # ints, not tensors, so TorchScript can trace it
        if len(dims) > 1:
            raise ValueError(f"Sparse fields have different dims {sorted(dims)}; stacking needs one dim.")
        return torch.stack(self.sparse, dim=1)

    def flat(self) -> Tensor:
        """``[B, sum(d_i) + dense_dim]``: every field side by side."""
        return torch.cat([*self.sparse, self.dense], dim=1)


class FeatureLayer(nn.Module):
    """Embeds the declared sparse fields and collects the dense ones of a batch (see the module docstring)."""

    def __init__(
        self,
        sparse_fields: Sequence[SparseField],
        dense_fields: Sequence[DenseField] = (),
        *,
        default_dim: int = 16,
        embedding_factory: EmbeddingFactory | None = None,
    ) -> None:
        super().__init__()
        self.sparse_fields = tuple(sparse_fields)
        self.dense_fields = tuple(dense_fields)
        if not self.sparse_fields and not self.dense_fields:
            raise ValueError("FeatureLayer needs at least one sparse or dense field.")
        _check_unique_keys(self.sparse_fields, self.dense_fields)
        factory = embedding_factory or default_embedding
        self.dims = tuple(f.dim or default_dim for f in self.sparse_fields)
        # A list, not a dict: field names are user data and may not be valid module names.
        self.tables = nn.ModuleList(
            factory(f.cardinality, d) for f, d in zip(self.sparse_fields, self.dims, strict=True)
        )

    @property
    def dense_dim(self) -> int:
        """Width of the dense part of ``FieldInputs``."""
        return sum(f.dim for f in self.dense_fields)

    @property
    def output_dim(self) -> int:
        """Width of ``FieldInputs.flat()``."""
        return sum(self.dims) + self.dense_dim

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of every declared field, sparse first."""
        return tuple(f.name for f in self.sparse_fields) + tuple(f.name for f in self.dense_fields)

    def input_spec(self) -> dict[str, str]:
        """The batch keys this layer reads, with dtype and shape, for model signatures."""
        spec: dict[str, str] = {}
        for f in self.sparse_fields:
            if f.multi_valued:
                spec[f.name] = "int64[B, L]"
                spec[f.length_key] = "int64[B]"
            else:
                spec[f.name] = "int64[B]"
        for d in self.dense_fields:
            spec[d.name] = "float32[B]" if d.dim == 1 else f"float32[B, {d.dim}]"
        return spec

    def forward(self, batch: Batch) -> FieldInputs:
        """Embed every sparse field and gather every dense field of ``batch``."""
        sparse = tuple(self._embed(f, t, batch) for f, t in zip(self.sparse_fields, self.tables, strict=True))
        rows = sparse[0].shape[0] if sparse else require(batch, self.dense_fields[0].name, "dense field").shape[0]
        dense = [self._dense(f, batch, rows) for f in self.dense_fields]
        device = sparse[0].device if sparse else dense[0].device
        dense_values = torch.cat(dense, dim=1) if dense else torch.zeros(rows, 0, device=device)
        return FieldInputs(sparse=sparse, dense=dense_values)

    def _embed(self, field: SparseField, table: nn.Module, batch: Batch) -> Tensor:
        ids = require(batch, field.name, "sparse field")
        if not field.multi_valued:
            if ids.dim() != 1:
                raise ValueError(f"Sparse field {field.name!r} must be [B], got shape {tuple(ids.shape)}.")
            self._check(field, table, ids)
            return table(ids)
        if ids.dim() != 2:
            raise ValueError(f"Multi-valued field {field.name!r} must be [B, L], got shape {tuple(ids.shape)}.")
        lengths = require(batch, field.length_key, f"bag sizes of {field.name!r}")
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)
        # Padding entries are replaced by id 0 before the lookup so that any padding value is accepted.
        ids = ids.masked_fill(~mask, 0)
        self._check(field, table, ids)
        vectors = table(ids) * mask.unsqueeze(-1)
        return vectors.sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).to(vectors.dtype)

    @staticmethod
    def _check(field: SparseField, table: nn.Module, ids: Tensor) -> None:
        # Only plain tables have a fixed id range; hashed or dynamic tables accept any id.
        if isinstance(table, nn.Embedding):
            check_ids(f"Sparse field {field.name!r}", ids, field.cardinality)

    @staticmethod
    def _dense(field: DenseField, batch: Batch, rows: int) -> Tensor:
        values = require(batch, field.name, "dense field")
        if values.dim() == 1:
            values = values.unsqueeze(1)
        if values.dim() != 2 or values.shape != (rows, field.dim):
            raise ValueError(
                f"Dense field {field.name!r} must be [B] or [B, {field.dim}] with B={rows}, "
                f"got shape {tuple(values.shape)}."
            )
        return values.float()


def _check_unique_keys(sparse: Sequence[SparseField], dense: Sequence[DenseField]) -> None:
    keys = [f.name for f in sparse] + [f.length_key for f in sparse if f.multi_valued] + [d.name for d in dense]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"Feature names collide: {duplicates}. Give every field (and bag-size key) its own name.")


def _relu(width: int) -> nn.Module:
    return nn.ReLU()


class MLP(nn.Sequential):
    """The deep block of the ranking models: per hidden size Linear → [BatchNorm] → activation → Dropout."""

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        *,
        dropout: float = 0.0,
        batch_norm: bool = False,
        activation: Callable[[int], nn.Module] = _relu,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden_sizes:
            linear = nn.Linear(width, size)
            # Xavier-normal weights and zero biases, as RecBole initialises its MLPs.
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(activation(size))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        super().__init__(*layers)
        self.out_dim = width


def weighted_bce(
    logits: dict[str, Tensor], batch: Batch, tasks: Sequence[str], weights: Sequence[float] | None = None
) -> Tensor:
    """Sum over tasks of ``weight * mean BCE-with-logits`` against ``batch[task]``; NaN labels are left out.

    A NaN label means "unknown for this row" (e.g. a rating for an item that was never clicked), so a
    multi-task batch can mix rows labelled for only some tasks; a task with no labelled row adds zero.
    """
    total = torch.zeros((), device=next(iter(logits.values())).device)
    for i, task in enumerate(tasks):
        labels = require(batch, task, f"labels of task {task!r}").float()
        known = ~torch.isnan(labels)
        per_row = F.binary_cross_entropy_with_logits(logits[task], labels.nan_to_num(0.0), reduction="none")
        # Masked mean without a data-dependent branch, so it never synchronises with an accelerator.
        task_loss = (per_row * known).sum() / known.sum().clamp(min=1)
        total = total + (1.0 if weights is None else weights[i]) * task_loss
    return total


def single_label_signature(features: FeatureLayer, label: str) -> ModelSignature:
    """The signature of a one-task CTR model: its declared fields plus the label; one logit per row."""
    return ModelSignature(
        inputs={**features.input_spec(), label: "float32[B] 0/1 (training)"},
        outputs={label: "float32[B] logit"},
        tasks=(label,),
        feature_names=features.feature_names,
    )
