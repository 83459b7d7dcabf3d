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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.models.base import Batch, ModelSignature

__all__ = [
    "MLP",
    "DenseField",
    "EmbeddingFactory",
    "FastDropout",
    "FeatureLayer",
    "FieldInputs",
    "SparseField",
    "check_ids",
    "default_embedding",
    "gather_rows",
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


class _GatherRows(torch.autograd.Function):
    """``weight[ids]`` whose backward adds the row gradients into a dense zero table with one ``index_add_``.

    The same maths as ``F.embedding``; its CPU backward (``embedding_dense_backward``) sorts the ids first and
    cost ~225 us per field at B=2048 against ~20 us here, which summed to 3 ms of DeepFM's step over 14 tables.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, ids: Tensor, padding: int) -> Tensor:
        flat = ids.reshape(-1)
        ctx.save_for_backward(flat)
        ctx.rows, ctx.padding = weight.shape[0], padding
        return weight.index_select(0, flat).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (flat,) = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        table = rows.new_zeros(ctx.rows, rows.shape[1]).index_add_(0, flat, rows)
        if ctx.padding >= 0:
            table[ctx.padding] = 0
        return table, None, None


def gather_rows(table: nn.Module, ids: Tensor) -> Tensor:
    """``table(ids)``; for a plain dense ``nn.Embedding`` under autograd, through :class:`_GatherRows`'s
    faster backward (same values and gradients)."""
    plain = (
        isinstance(table, nn.Embedding) and not table.sparse and table.max_norm is None and table.weight.requires_grad
    )
    if not (plain and torch.is_grad_enabled()):
        return table(ids)
    assert isinstance(table, nn.Embedding)
    padding = -1 if table.padding_idx is None else table.padding_idx
    rows: Tensor = _GatherRows.apply(table.weight, ids, padding)
    return rows


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
            return gather_rows(table, ids)
        if ids.dim() != 2:
            raise ValueError(f"Multi-valued field {field.name!r} must be [B, L], got shape {tuple(ids.shape)}.")
        lengths = require(batch, field.length_key, f"bag sizes of {field.name!r}")
        mask = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)
        # Padding entries are replaced by id 0 before the lookup so that any padding value is accepted.
        ids = ids.masked_fill(~mask, 0)
        self._check(field, table, ids)
        vectors = gather_rows(table, ids)
        # Mask and mean folded into one weight per entry: a single multiply over the gathered [B, L, D].
        weights = mask.to(vectors.dtype) / lengths.clamp(min=1).unsqueeze(1).to(vectors.dtype)
        return (vectors * weights.unsqueeze(-1)).sum(dim=1)

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


_DROPOUT_LEVELS = 1 << 16


def _keep_scale(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A float tensor of ``shape``: ``1 / (1 - p)`` where a unit is kept, 0 where it is dropped.

    Drawn as 16 random bits per unit, four per 64-bit draw of the global generator, and turned into the mask
    with float arithmetic only: ``F.dropout``'s per-element Bernoulli draws cost ~2.4 ms for a 2048x128
    activation on this CPU, this ~0.3 ms. ``p`` is rounded to a multiple of 2^-16 (0.2 -> 0.199997) and the
    scale uses the rounded value, so the expected output still equals the input.
    """
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    levels = words.view(torch.int16)[:count].to(torch.float32).view(shape)  # uniform on -32768..32767
    dropped = round(p * _DROPOUT_LEVELS)
    first_kept = dropped - _DROPOUT_LEVELS // 2  # keep the levels >= this one: 65536 - dropped of them
    # Integer levels: (level - first_kept + 1) clamped to [0, 1] is 1 exactly when level >= first_kept.
    scale = _DROPOUT_LEVELS / (_DROPOUT_LEVELS - dropped)
    return levels.sub_(first_kept - 1).clamp_(0.0, 1.0).mul_(scale)


class _ScaleBy(torch.autograd.Function):
    """``x * mask`` for a constant mask: backward is ``grad * mask``, with no graph for the mask itself."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` (inverted dropout, identity in eval mode) with a cheaper mask, see :func:`_keep_scale`.

    Same module interface and state as ``nn.Dropout``, so saved models and exports are unchanged; in training
    on the CPU the mask comes from :func:`_keep_scale`, elsewhere ``nn.Dropout`` runs as it is.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or not x.dtype.is_floating_point:
            return super().forward(x)
        if self.p >= 1.0:
            return x * 0.0
        mask = _keep_scale(x.shape, self.p, x.device).to(x.dtype)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x * mask
        out: Tensor = _ScaleBy.apply(x, mask)
        return out


def _onednn_linear_op() -> Any:
    """oneDNN's fp32 linear kernel when this torch build has it (``torch.ops.mkldnn._linear_pointwise``), else None."""
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR: Any = _onednn_linear_op() if torch.backends.mkldnn.is_available() else None


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` in fp32 on the CPU through oneDNN for the forward and the input gradient.

    The default CPU path goes to MKL's GEMM, which on this machine's AMD CPU ran ~2x slower than oneDNN's
    AVX-512 kernel for DeepFM's 2048x128 @ 128x128 (0.74 ms against 0.38 ms). The weight gradient (a reduction
    over the batch) measured no faster in oneDNN and stays a plain ``mm``. Same maths, fp32 throughout.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out: Tensor = _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x: Tensor = _ONEDNN_LINEAR(grad, weight.t().contiguous(), None, "none", [], "")
        return grad_x, grad.t() @ x, grad.sum(0) if ctx.has_bias else None


def _fast_linear_applies(x: Tensor, linear: nn.Module) -> bool:
    return (
        isinstance(linear, nn.Linear)
        and _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dim() == 2
        and x.dtype == torch.float32
        and linear.weight.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


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
                layers.append(FastDropout(dropout))
            width = size
        super().__init__(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """The layers in order; in training on the CPU in fp32, linears run through :class:`_OneDnnLinear`."""
        if len(self) == 0 or not (self.training and _fast_linear_applies(x, self[0])):
            return super().forward(x)
        for layer in self:
            if isinstance(layer, nn.Linear):
                x = _OneDnnLinear.apply(x.contiguous(), layer.weight, layer.bias)
            else:
                x = layer(x)
        return x


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
