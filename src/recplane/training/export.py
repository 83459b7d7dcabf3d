"""Export a trained model for serving: its weights, its signature and the fastest inference form that round-trips.

``export_model(model, path, example_batch=...)`` writes a folder:

* ``weights.pt`` — the ``state_dict``; ``signature.json`` — the model's :class:`ModelSignature`, its class and
  the constructor config, i.e. what is needed to rebuild it for more training;
* one inference artifact per form that worked — ``model.ts`` (TorchScript, traced), ``model.pt2``
  (``torch.export``) and ``model.onnx`` (ONNX, run by onnxruntime) — each a graph with positional tensor inputs
  in a fixed order and a tuple of outputs: per-task probabilities for a ranking model, the query vector for a
  retrieval model, whose item vectors are static after training and saved once as ``item_vectors.npy``;
* ``manifest.json`` — the chosen form, the measured CPU latency of every form, why the others failed, the
  input order with dtypes and shapes, the output names and the library versions.

Every form is loaded back from disk and must reproduce eager outputs (rtol 1e-4, atol 1e-5) on the example
batch, on one row and on a larger batch (the batch dimension is exported as dynamic); among those that do,
the fastest (median latency at the example batch size plus at one row) is chosen. Which form wins depends on
the model: ONNX Runtime usually wins small MLPs, ``torch.export`` avoids TorchScript's deprecation, and a form
that specialises on its example (traced top-k expert dispatch) fails the round-trip and is left out.

Id range checks are data-dependent branches no graph can hold, so the graph is built from a copy whose plain
``nn.Embedding`` tables are swapped for equal gathers (the models skip range checks for non-plain tables) and
:class:`ExportedModel` checks the ranges itself, on NumPy, with an :class:`InvalidInput` naming the key.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import json
import logging
import platform
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recplane.errors import InvalidInput
from recplane.models.base import RankingModel, RecModel, RetrievalModel
from recplane.models.features import FeatureLayer
from recplane.models.lightgcn import LightGCN
from recplane.models.moe import SparseMoERanker

__all__ = ["FORMS", "ExportManifest", "ExportedModel", "InputSpec", "export_model", "load_exported"]

Form = Literal["torchscript", "torch_export", "onnx"]
FORMS: tuple[Form, ...] = ("torchscript", "torch_export", "onnx")
ARTIFACTS: dict[str, str] = {"torchscript": "model.ts", "torch_export": "model.pt2", "onnx": "model.onnx"}
RTOL, ATOL = 1e-4, 1e-5
QUERY_OUTPUT = "query_vector"
ArrayLike = Tensor | np.ndarray


@dataclass(frozen=True)
class InputSpec:
    """One positional input of the exported graph: its batch key, dtype and shape (``"B"`` = any batch size)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass
class ExportManifest:
    """What ``manifest.json`` records about an export (see the module docstring)."""

    model_class: str
    kind: Literal["ranking", "retrieval"]
    form: str
    graph: str
    inputs: list[InputSpec]
    outputs: list[str]
    latency_ms: dict[str, dict[str, float]]
    failures: dict[str, str]
    artifacts: dict[str, str]
    id_bounds: dict[str, int] = field(default_factory=dict)
    example_batch_size: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExportManifest:
        data = json.loads(text)
        data["inputs"] = [InputSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in data["inputs"]]
        return cls(**data)


class _Runner(Protocol):
    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def export_model(
    model: RecModel,
    path: str | Path,
    *,
    example_batch: Mapping[str, ArrayLike],
    forms: Sequence[str] = FORMS,
    choose: str = "fastest",
    repeats: int = 30,
) -> ExportManifest:
    """Write weights, signature and the fastest round-tripping inference form of ``model`` under ``path``.

    ``choose`` is ``"fastest"`` or one form name (that form must work). Raises InvalidInput when no form works.
    """
    _check_arguments(forms, choose, example_batch)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        return _export(model, directory, _as_tensors(example_batch), list(forms), choose, repeats)
    finally:
        model.train(was_training)


def load_exported(path: str | Path, *, form: str | None = None) -> ExportedModel:
    """Load an exported model folder with the form its manifest chose (or another ``form`` that exported)."""
    directory = Path(path)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise InvalidInput(f"{directory} holds no manifest.json: export the model with export_model(...) first.")
    manifest = ExportManifest.from_json(manifest_path.read_text())
    signature = json.loads((directory / "signature.json").read_text())
    form = form or manifest.form
    if form not in manifest.artifacts:
        raise InvalidInput(f"Form {form!r} was not exported to {directory}; it holds {sorted(manifest.artifacts)}.")
    runner = _load_runner(form, directory / manifest.artifacts[form], [spec.name for spec in manifest.inputs])
    item_vectors = np.load(directory / "item_vectors.npy") if manifest.kind == "retrieval" else None
    return ExportedModel(manifest, signature, runner, item_vectors, form=form)


class ExportedModel:
    """A loaded export: ``predict`` on dict batches of tensors or arrays, NumPy out."""

    def __init__(
        self,
        manifest: ExportManifest,
        signature: dict[str, Any],
        runner: _Runner,
        item_vectors: np.ndarray | None,
        *,
        form: str,
    ) -> None:
        self.manifest = manifest
        self.form = form
        self.signature = signature
        self._runner = runner
        self._item_vectors = item_vectors

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.manifest.inputs]

    def predict(self, batch: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Outputs by name: per-task probabilities (ranking) or ``query_vector`` ``[B, D]`` (retrieval)."""
        arrays = _prepare_inputs(self.manifest, batch)
        return dict(zip(self.manifest.outputs, self._runner(arrays), strict=True))

    def predict_in_range(self, batch: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """:meth:`predict` for batches whose ids are in range by construction (a serving bundle builds them from
        its own id maps and tables): keys, dtypes and shapes are checked, the per-call id range scans skipped."""
        arrays = _prepare_inputs(self.manifest, batch, check_ids=False)
        return dict(zip(self.manifest.outputs, self._runner(arrays), strict=True))

    def query_vectors(self, batch: Mapping[str, ArrayLike]) -> np.ndarray:
        """``[B, D]`` query vectors of a retrieval model (score = dot product with ``item_vectors``)."""
        self._require_retrieval("query_vectors")
        return self.predict(batch)[QUERY_OUTPUT]

    @property
    def item_vectors(self) -> np.ndarray:
        """``[num_items, D]`` float32 item vectors (index = item id) of a retrieval model."""
        self._require_retrieval("item_vectors")
        assert self._item_vectors is not None
        return self._item_vectors

    def _require_retrieval(self, what: str) -> None:
        if self.manifest.kind != "retrieval":
            raise InvalidInput(
                f"{what} exists for retrieval models only; {self.manifest.model_class} ranks: use predict."
            )


def _check_arguments(forms: Sequence[str], choose: str, example_batch: Mapping[str, ArrayLike]) -> None:
    unknown = sorted(set(forms) - set(FORMS))
    if unknown or not forms:
        raise InvalidInput(f"Unknown export forms {unknown or list(forms)}; choose among {list(FORMS)}.")
    if choose != "fastest" and choose not in forms:
        raise InvalidInput(f"choose={choose!r} must be 'fastest' or one of the requested forms {list(forms)}.")
    sizes = {int(np.shape(v)[0]) for v in example_batch.values() if np.ndim(v) > 0}
    if len(sizes) != 1 or min(sizes) < 2:
        raise InvalidInput(
            f"example_batch needs one batch size of at least 2 rows across its keys, got {sorted(sizes)}: the "
            "batch dimension is exported as dynamic, which needs an example that is not 1."
        )


def _as_tensors(batch: Mapping[str, ArrayLike]) -> dict[str, Tensor]:
    """The batch as tensors of their own: integers as int64, floats as float32 (the dtypes the models compute in).

    Every key gets a fresh copy: torch.export (and the ONNX export built on its program) turns one tensor object
    passed under two keys into one graph input, so the exported graph would read both keys from the first, and
    the round-trip checks, built from the same aliased example, would not notice.
    """
    tensors = {}
    for key, value in batch.items():
        tensor = torch.as_tensor(value)
        tensor = tensor.to(torch.float32) if tensor.is_floating_point() else tensor.to(torch.int64)
        tensors[key] = tensor.clone(memory_format=torch.contiguous_format)
    return tensors


def _export(
    model: RecModel, directory: Path, example: dict[str, Tensor], forms: list[str], choose: str, repeats: int
) -> ExportManifest:
    kind: Literal["ranking", "retrieval"] = "retrieval" if isinstance(model, RetrievalModel) else "ranking"
    torch.save(model.state_dict(), directory / "weights.pt")
    (directory / "signature.json").write_text(json.dumps(_signature_record(model), indent=2, default=str))
    if isinstance(model, RetrievalModel):
        with torch.no_grad():
            vectors = model.item_representation().detach().to(torch.float32).cpu().numpy()
        np.save(directory / "item_vectors.npy", vectors)
    reference = _reference_fn(model)
    keys = _keys_read(model, reference, example)
    outputs = list(model.signature().tasks) if kind == "ranking" else [QUERY_OUTPUT]
    checks = _check_batches({key: example[key] for key in keys})
    expected = [_to_numpy(reference(model, batch)) for batch in checks]
    latency: dict[str, dict[str, float]] = {}
    failures: dict[str, str] = {}
    artifacts: dict[str, str] = {}
    graphs: dict[str, str] = {}
    programs: dict[str, torch.export.ExportedProgram | Exception] = {}  # torch_export and onnx share one capture
    for form in forms:
        for graph_name, graph in _graphs(model, keys):
            target = directory / ARTIFACTS[form]
            try:
                _write_form(form, graph, graph_name, [example[k] for k in keys], keys, outputs, target, programs)
                runner = _load_runner(form, target, keys)
                for batch, wanted in zip(checks, expected, strict=True):
                    _check_close(runner([batch[k].numpy() for k in keys]), wanted, len(batch[keys[0]]))
            except Exception as exc:  # every failure is a finding for the manifest, not an end of the export
                failures[f"{form}/{graph_name}"] = f"{type(exc).__name__}: {_first_line(exc)}"
                _remove(target)
                continue
            latency[form] = _latency(runner, [checks[0][k].numpy() for k in keys], repeats)
            artifacts[form], graphs[form] = target.name, graph_name
            break
    form = _pick(latency, failures, choose, type(model).__name__)
    manifest = ExportManifest(
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        kind=kind,
        form=form,
        graph=graphs[form],
        inputs=[InputSpec(k, str(example[k].dtype).removeprefix("torch."), ("B", *example[k].shape[1:])) for k in keys],
        outputs=outputs,
        latency_ms=latency,
        failures=failures,
        artifacts=artifacts,
        id_bounds=_id_bounds(model, keys),
        example_batch_size=int(example[keys[0]].shape[0]),
        versions=_versions(),
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    return manifest


def _pick(latency: dict[str, dict[str, float]], failures: dict[str, str], choose: str, model_name: str) -> str:
    if not latency:
        raise InvalidInput(f"No inference form of {model_name} could be exported: {failures}")
    if choose != "fastest":
        if choose not in latency:
            raise InvalidInput(f"Form {choose!r} did not export for {model_name}: {failures}")
        return choose
    return min(latency, key=lambda form: latency[form]["example_batch"] + latency[form]["batch_1"])


def _signature_record(model: RecModel) -> dict[str, Any]:
    """The signature, class and constructor config: what rebuilding the model for training needs."""
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "signature": asdict(model.signature()),
        "config_class": _config_class(model),
        "config": _config(model),
    }


def _config_class(model: RecModel) -> str | None:
    config = getattr(model, "config", None)
    return f"{type(config).__module__}.{type(config).__qualname__}" if is_dataclass(config) else None


def _config(model: RecModel) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    # MF and LightGCN take plain arguments; LightGCN's graph is in weights.pt (adjacency_* buffers).
    names = ("num_users", "num_items", "num_layers", "l2")
    record: dict[str, Any] = {name: getattr(model, name) for name in names if hasattr(model, name)}
    user_table = getattr(model, "user_table", None)
    if user_table is not None and hasattr(user_table, "dim"):
        record["dim"] = int(user_table.dim)
    return record


ReferenceFn = Callable[[RecModel, dict[str, Tensor]], tuple[Tensor, ...]]


def _reference_fn(model: RecModel) -> ReferenceFn:
    """What the exported graph must compute, in eager mode."""
    if isinstance(model, RankingModel):
        return _task_probabilities
    if isinstance(model, RetrievalModel):
        return _query_vectors
    raise InvalidInput(f"{type(model).__name__} is neither a RankingModel nor a RetrievalModel; it cannot be exported.")


def _task_probabilities(model: RecModel, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
    outputs = model(batch)
    return tuple(torch.sigmoid(outputs[task]) for task in model.signature().tasks)


def _query_vectors(model: RecModel, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
    assert isinstance(model, RetrievalModel)
    return (model.user_representation(batch),)


class _RecordingBatch(dict[str, Tensor]):
    """A batch that remembers which keys the model read, so the graph takes exactly those inputs."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Tensor:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            self.read.add(key)
        return super().get(key, default)


def _keys_read(model: RecModel, reference: ReferenceFn, example: dict[str, Tensor]) -> list[str]:
    """The example's keys the model reads, in signature order (labels and training-only keys drop out)."""
    if isinstance(model, LightGCN):
        return ["user_id"]
    recording = _RecordingBatch(example)
    with torch.no_grad():
        reference(model, recording)
    order = [key for key in model.signature().inputs if key in recording.read]
    return order + sorted(recording.read - set(order))


def _check_batches(example: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """The example, its first row, and a larger batch of its rows reversed: a graph that specialised fails one."""
    return [
        example,
        {key: value[:1] for key, value in example.items()},
        {key: torch.cat([value, value.flip(0)]) for key, value in example.items()},
    ]


class _Gather(nn.Module):
    """An ``nn.Embedding`` lookup without the class: the models range-check plain tables only (see module doc)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)


def _graph_copy(model: RecModel) -> RecModel:
    clone = copy.deepcopy(model).eval()
    for module in list(clone.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Embedding):
                module._modules[name] = _Gather(child.weight)
    return clone


class _RankingGraph(nn.Module):
    """Positional inputs → per-task probabilities, through the model's own ``forward``."""

    def __init__(self, model: RecModel, keys: list[str], tasks: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.keys, self.tasks = model, keys, tasks

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(dict(zip(self.keys, inputs, strict=True)))
        return tuple(torch.sigmoid(outputs[task]) for task in self.tasks)


class _DenseDispatchGraph(nn.Module):
    """The sparse MoE ranker with every expert run on every row, then gathered by the same top-k routing.

    Index dispatch splits rows by data-dependent counts, which no static graph holds; this is the model's own
    ``forward_dense`` reference path: the same mixture, at E/k times the expert arithmetic.
    """

    def __init__(self, model: SparseMoERanker, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        x = self.model.features(dict(zip(self.keys, inputs, strict=True))).flat()
        mixed = self.model.moe.forward_dense(x, self.model.moe.route(x))
        return tuple(torch.sigmoid(tower(mixed).squeeze(1)) for tower in self.model.towers)


class _QueryGraph(nn.Module):
    """Positional inputs → the retrieval model's query vectors."""

    def __init__(self, model: RetrievalModel, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *inputs: Tensor) -> tuple[Tensor]:
        return (self.model.user_representation(dict(zip(self.keys, inputs, strict=True))),)


class _LookupGraph(nn.Module):
    """A user id → a precomputed vector: LightGCN's propagated user vectors are static after training."""

    vectors: Tensor

    def __init__(self, vectors: Tensor) -> None:
        super().__init__()
        self.register_buffer("vectors", vectors.detach().clone())

    def forward(self, user_id: Tensor) -> tuple[Tensor]:
        return (F.embedding(user_id, self.vectors),)


def _graphs(model: RecModel, keys: list[str]) -> list[tuple[str, nn.Module]]:
    """The graphs to try for a model, best first: the next is tried when a form fails on the one before."""
    if isinstance(model, LightGCN):
        with torch.no_grad():
            return [("propagated_lookup", _LookupGraph(model.propagate()[0]).eval())]
    clone = _graph_copy(model)
    if isinstance(clone, RetrievalModel):
        return [("user_representation", _QueryGraph(clone, keys).eval())]
    graphs: list[tuple[str, nn.Module]] = [("forward", _RankingGraph(clone, keys, clone.signature().tasks).eval())]
    if isinstance(clone, SparseMoERanker):
        graphs.append(("dense_dispatch", _DenseDispatchGraph(clone, keys).eval()))
    return graphs


def _write_form(
    form: str,
    graph: nn.Module,
    graph_name: str,
    example: list[Tensor],
    keys: list[str],
    outputs: list[str],
    target: Path,
    programs: dict[str, torch.export.ExportedProgram | Exception],
) -> None:
    _remove(target)
    with warnings.catch_warnings(), torch.no_grad(), _quiet_torch_logs():
        warnings.simplefilter("ignore")  # tracer and exporter chatter; failures are judged by the round-trip
        if form == "torchscript":
            torch.jit.trace(graph, tuple(example), check_trace=False, strict=False).save(str(target))
            return
        if graph_name not in programs:
            try:
                programs[graph_name] = _torch_export(graph, example)
            except Exception as exc:
                programs[graph_name] = exc
        program = programs[graph_name]
        if isinstance(program, Exception):
            raise program
        if form == "torch_export":
            torch.export.save(program, str(target))
            return
        _onnx_export(program, example, keys, outputs, target)


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Silence warning logs while capturing (graph dumps of a failed capture): the manifest records failures."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _torch_export(graph: nn.Module, example: list[Tensor]) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in example)
    dynamic_shapes: Any = shapes if isinstance(graph, _LookupGraph) else (shapes,)  # *inputs: one nested tuple
    return torch.export.export(graph, tuple(example), dynamic_shapes=dynamic_shapes, strict=False)


def _onnx_export(
    program: torch.export.ExportedProgram, example: list[Tensor], keys: list[str], outputs: list[str], target: Path
) -> None:
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"ONNX export needs {missing}: pip install 'recplane[export]'")
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            program,
            tuple(example),
            str(target),
            input_names=keys,
            output_names=outputs,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


class _TorchRunner:
    def __init__(self, module: Callable[..., Any]) -> None:
        self._module = module

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            outputs = self._module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        return [output.numpy() for output in outputs]


class _OnnxRunner:
    def __init__(self, target: Path, keys: list[str]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Same thread count as torch, so the latency comparison between forms is fair.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default: with a server's other threads on the same cores that burns CPU the
        # requests need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        self._keys = keys

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(self._session.run(None, dict(zip(self._keys, inputs, strict=True))))


def _load_runner(form: str, target: Path, keys: list[str]) -> _Runner:
    if form == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still the fastest at times
            return _TorchRunner(torch.jit.load(str(target)).eval())
    if form == "torch_export":
        return _TorchRunner(torch.export.load(str(target)).module())
    if form == "onnx":
        return _OnnxRunner(target, keys)
    raise InvalidInput(f"Unknown export form {form!r}; the manifest may come from a newer recplane.")


def _check_close(got: list[np.ndarray], wanted: list[np.ndarray], rows: int) -> None:
    for index, (actual, expected) in enumerate(zip(got, wanted, strict=True)):
        if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
            gap = float(np.abs(actual - expected).max()) if actual.shape == expected.shape else float("nan")
            raise AssertionError(
                f"output {index} differs from eager at batch size {rows}: shapes {actual.shape} vs {expected.shape}, "
                f"max abs gap {gap:.3g}"
            )


def _latency(runner: _Runner, example: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Median milliseconds per call at the example batch size and at one row, after warm-up calls."""
    return {
        "example_batch": round(median_call_ms(runner, example, repeats), 4),
        "batch_1": round(median_call_ms(runner, [a[:1] for a in example], repeats), 4),
    }


def median_call_ms(runner: _Runner, inputs: list[np.ndarray], repeats: int) -> float:
    """Median wall time of ``runner(inputs)`` in ms over ``repeats`` calls (3 warm-up calls first)."""
    return statistics.median(call_times_ms(runner, inputs, repeats))


def call_times_ms(runner: _Runner, inputs: list[np.ndarray], repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls in ms, after 3 warm-up calls."""
    for _ in range(3):
        runner(inputs)
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        runner(inputs)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _to_numpy(outputs: tuple[Tensor, ...]) -> list[np.ndarray]:
    return [output.detach().cpu().numpy() for output in outputs]


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    # TorchScript puts its generic header first and the cause last.
    return (lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}")[:400]


def _remove(target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            versions[name] = str(importlib.import_module(name).__version__)
    return versions


def _id_bounds(model: RecModel, keys: list[str]) -> dict[str, int]:
    """Exclusive upper bound of each id input with a fixed table (the checks the exported graph cannot hold)."""
    bounds: dict[str, int] = {}
    config = getattr(model, "config", None)
    num_users = getattr(model, "num_users", getattr(config, "num_users", None))
    num_items = getattr(model, "num_items", getattr(config, "num_items", None))
    if num_users is not None:
        bounds["user_id"] = int(num_users)
    if num_items is not None:
        bounds.update({"item_id": int(num_items), "history": int(num_items)})
    bounds.update(getattr(config, "user_categorical", None) or {})
    for layer in model.modules():
        if isinstance(layer, FeatureLayer):
            for spec, table in zip(layer.sparse_fields, layer.tables, strict=True):
                if isinstance(table, nn.Embedding):
                    bounds[spec.name] = spec.cardinality
    return {key: bound for key, bound in bounds.items() if key in keys}


def _prepare_inputs(
    manifest: ExportManifest, batch: Mapping[str, ArrayLike], *, check_ids: bool = True
) -> list[np.ndarray]:
    """The graph's positional inputs from a dict batch: keys, dtypes, shapes and (``check_ids``) id ranges checked."""
    missing = [spec.name for spec in manifest.inputs if spec.name not in batch]
    if missing:
        raise InvalidInput(
            f"Batch lacks {missing}; this {manifest.model_class.rsplit('.', 1)[-1]} reads "
            f"{[spec.name for spec in manifest.inputs]}.",
            details={"missing": missing},
        )
    arrays = {spec.name: _input_array(spec, batch[spec.name]) for spec in manifest.inputs}
    rows = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(rows.values())) != 1:
        raise InvalidInput(f"Batch keys disagree on the number of rows: {rows}.")
    for name, bound in manifest.id_bounds.items() if check_ids else ():
        _check_id_range(name, arrays[name], bound, arrays.get("history_len" if name == "history" else f"{name}_len"))
    return [arrays[spec.name] for spec in manifest.inputs]


def _input_array(spec: InputSpec, value: ArrayLike) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    integer = spec.dtype.startswith("int")
    if array.dtype.kind not in ("iu" if integer else "iuf"):
        raise InvalidInput(f"Batch key {spec.name!r} must hold {spec.dtype} values, got dtype {array.dtype}.")
    array = array.astype(spec.dtype, copy=False)
    if array.ndim != len(spec.shape):
        raise InvalidInput(f"Batch key {spec.name!r} must have shape {list(spec.shape)}, got {list(array.shape)}.")
    if array.ndim == 2 and integer and isinstance(spec.shape[1], int) and array.shape[1] < spec.shape[1]:
        # Right-padded sequences and bags: extra padding is masked by the lengths, so pad up to the exported width.
        array = np.pad(array, ((0, 0), (0, spec.shape[1] - array.shape[1])))
    if tuple(array.shape[1:]) != tuple(spec.shape[1:]):
        raise InvalidInput(
            f"Batch key {spec.name!r} must have shape {list(spec.shape)}, got {list(array.shape)}"
            + (" (keep the most recent items only)" if array.ndim == 2 and integer else "")
            + "."
        )
    return np.ascontiguousarray(array)


def _check_id_range(name: str, ids: np.ndarray, bound: int, lengths: np.ndarray | None) -> None:
    if _largest(ids) < bound:  # padding included: usually all in range, and one reduction decides it
        return
    real = ids
    if ids.ndim == 2 and lengths is not None:
        real = ids[np.arange(ids.shape[1])[None, :] < lengths[:, None]]
    if _largest(real) < bound:
        return
    bad = int(real.min()) if int(real.min()) < 0 else int(real.max())
    raise InvalidInput(
        f"Batch key {name!r} holds id {bad}, outside [0, {bound}) the model was trained with. Map unknown ids "
        "to the padding id 0.",
        details={"key": name, "id": bad, "bound": bound},
    )


def _largest(ids: np.ndarray) -> int:
    """The largest id read as unsigned (so a negative id counts as huge): one reduction checks both ends."""
    if ids.size == 0:
        return -1
    return int(np.ascontiguousarray(ids).view(f"u{ids.itemsize}").max())
