"""Run RecBole 1.2.1 on MovieLens-100K with its own default protocol and report timings and metrics as JSON.

This is the peer that recplane's model benchmark compares against. It runs inside its own virtual environment
(``benchmarks/peers/recbole/.venv``, made by ``setup.sh``) because RecBole pins old libraries that recplane does
not use, and it never imports recplane. Each model runs in a fresh child process (this same script with
``--child``) so that peak RSS, torch state and RecBole's global seeding are per model, not cumulative.

The flow mirrors ``recbole.quick_start.run_recbole`` step by step (Config -> init_seed -> create_dataset ->
data_preparation -> init_seed -> model -> trainer.fit(train, valid) -> trainer.evaluate(test, best model)).
We do not call ``run_recbole`` itself because it imports ``ray`` (hyper-parameter tuning only, a ~100 MB
dependency we do not install) and because we need to time ``Trainer._train_epoch`` separately from validation.
The FLOPs count that ``run_recbole`` logs (via ``thop``) is skipped: it is a log line, not part of training.

Only these keys differ from RecBole's defaults for the model/dataset pair: ``epochs``, ``seed``, ``show_progress``,
``checkpoint_dir`` (a temporary folder), ``use_gpu``/``gpu_id`` (CPU), ``worker: 0`` and ``eval_step: 1`` (both
already RecBole's defaults, set explicitly so a changed default cannot move the protocol), and for SASRec
``train_neg_sample_args: None``, which RecBole itself requires for ``loss_type: CE`` (its Config raises otherwise).
``data_path`` is fixed by RecBole for ``ml-100k`` to the copy inside the package (``recbole/dataset_example``).

Usage (inside the peer venv)::

    .venv/bin/python run_recbole.py --models BPR,LightGCN,SASRec,DeepFM --epochs 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

RECBOLE_VERSION = "1.2.1"
DATASET = "ml-100k"
DEFAULT_MODELS = "BPR,LightGCN,SASRec,DeepFM"

# Effective RecBole config keys that define the protocol; copied into each result so recplane can mirror them.
PROTOCOL_KEYS = (
    "MODEL_TYPE",
    "MODEL_INPUT_TYPE",
    "eval_args",
    "repeatable",
    "metrics",
    "topk",
    "valid_metric",
    "valid_metric_bigger",
    "stopping_step",
    "eval_step",
    "epochs",
    "train_batch_size",
    "eval_batch_size",
    "learner",
    "learning_rate",
    "weight_decay",
    "clip_grad_norm",
    "train_neg_sample_args",
    "valid_neg_sample_args",
    "test_neg_sample_args",
    "neg_sampling",
    "embedding_size",
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "reg_weight",
    "require_pow",
    "mlp_hidden_size",
    "dropout_prob",
    "loss_type",
    "MAX_ITEM_LIST_LENGTH",
    "threshold",
    "load_col",
    "filter_inter_by_user_or_item",
    "user_inter_num_interval",
    "item_inter_num_interval",
    "val_interval",
    "rm_dup_inter",
    "normalize_all",
    "shuffle",
    "seed",
    "reproducibility",
)

GENERAL_METRICS = ("ndcg@10", "recall@10", "mrr@10", "hit@10", "precision@10")
VALUE_METRICS = ("auc", "logloss")


# --------------------------------------------------------------------------------------------------------------
# Runtime patches for RecBole 1.2.1 on current libraries. Applied before RecBole runs; site-packages is untouched.
# --------------------------------------------------------------------------------------------------------------


def patch_torch_load_weights_only() -> None:
    """Make ``torch.load`` default to ``weights_only=False`` in this process.

    WHY: torch >= 2.6 changed the default to ``weights_only=True``. RecBole 1.2.1's ``Trainer.evaluate`` reloads
    the best checkpoint with a bare ``torch.load``, and that checkpoint pickles the RecBole ``Config`` object and
    numpy scalars, so the safe unpickler refuses it and the test evaluation crashes. The only files loaded here
    are checkpoints this same process just wrote to its own temporary folder, so full unpickling is safe.
    """
    import functools

    import torch

    if getattr(torch.load, "_recbole_peer_patched", False):
        return
    original = torch.load

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    load._recbole_peer_patched = True  # type: ignore[attr-defined]
    torch.load = load


def patch_numpy_aliases() -> None:
    """Restore the numpy aliases RecBole 1.2.1 still uses, when the installed numpy lacks them.

    WHY: RecBole's ``Config.compatibility_settings`` assigns ``np.float = np.float_`` etc., and its metrics use
    ``np.float``/``np.bool``. numpy 1.24 removed ``np.float``/``np.int``/``np.bool``/``np.object``/``np.str``;
    numpy 2 also removed ``np.float_``/``np.complex_``/``np.unicode_``. RecBole's own shim covers the first set
    on numpy 1.x (which ``requirements.txt`` pins), so this is a no-op there and keeps the script working if the
    venv is ever built with numpy 2. Each alias is set to the builtin-equivalent type numpy used to alias.
    """
    import numpy as np

    aliases = {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "bool": np.bool_,
        "int": np.int_,
        "float": np.float64,
        "complex": np.complex128,
        "object": np.object_,
        "str": np.str_,
        "long": np.int_,
        "unicode": np.str_,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def patch_scipy_dok_update() -> None:
    """Give ``scipy.sparse.dok_matrix`` back the ``_update`` method LightGCN 1.2.1 calls, if it is missing.

    WHY: ``LightGCN.get_norm_adj_mat`` fills the adjacency with ``A._update(dict)``, a private dict-subclass method
    that scipy 1.12 removed when dok_matrix stopped subclassing dict. ``requirements.txt`` pins scipy 1.11.4 so
    this is a no-op there; on newer scipy it writes the same entries into the matrix's backing dict.
    """
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return

    def _update(self: Any, data: dict[tuple[int, int], Any]) -> None:
        self._dict.update(data)

    sp.dok_matrix._update = _update


def apply_patches() -> list[str]:
    """Apply every runtime patch; return their names for the JSON report."""
    patch_torch_load_weights_only()
    patch_numpy_aliases()
    patch_scipy_dok_update()
    return [
        "torch.load weights_only=False (torch>=2.6 default breaks best-model reload)",
        "numpy alias shim (no-op on numpy 1.26)",
        "scipy dok_matrix._update shim (no-op on scipy<1.12)",
    ]


# --------------------------------------------------------------------------------------------------------------
# One model, in a child process.
# --------------------------------------------------------------------------------------------------------------


def config_overrides(model: str, epochs: int, seed: int, checkpoint_dir: str) -> dict[str, Any]:
    """The only keys changed from RecBole's defaults (see the module docstring for why each one)."""
    overrides: dict[str, Any] = {
        "epochs": epochs,
        "seed": seed,
        "show_progress": False,
        "checkpoint_dir": checkpoint_dir,
        "use_gpu": False,
        "gpu_id": "",
        "worker": 0,
        "eval_step": 1,
    }
    if model == "SASRec":
        overrides["train_neg_sample_args"] = None
    return overrides


def jsonable(value: Any) -> Any:
    """Convert RecBole config values (enums, numpy scalars, tuples) into plain JSON values."""
    import enum

    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class EpochTimer:
    """Wraps a trainer's ``_train_epoch`` and ``_valid_epoch`` to record wall seconds of each call.

    WHY: ``Trainer.fit`` interleaves training, validation, logging, tensorboard writes and checkpointing; the
    benchmark compares pure training time per epoch, so we time exactly the two methods fit calls.
    """

    def __init__(self, trainer: Any) -> None:
        self.train_seconds: list[float] = []
        self.valid_seconds: list[float] = []
        self.train_losses: list[float] = []
        train_epoch = trainer._train_epoch
        valid_epoch = trainer._valid_epoch

        def timed_train_epoch(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            loss = train_epoch(*args, **kwargs)
            self.train_seconds.append(time.perf_counter() - start)
            self.train_losses.append(float(sum(loss) if isinstance(loss, tuple) else loss))
            return loss

        def timed_valid_epoch(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = valid_epoch(*args, **kwargs)
            self.valid_seconds.append(time.perf_counter() - start)
            return result

        trainer._train_epoch = timed_train_epoch
        trainer._valid_epoch = timed_valid_epoch


def summarize(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"median": None, "mean": None, "min": None, "max": None}
    return {
        "median": statistics.median(seconds),
        "mean": statistics.fmean(seconds),
        "min": min(seconds),
        "max": max(seconds),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def feature_fields(model: Any) -> dict[str, list[str]] | None:
    """The input fields a context-aware model (DeepFM) actually embeds, by RecBole feature type.

    WHY: RecBole decides this from ``load_col`` and ``numerical_features`` (float fields outside it, such as
    ``timestamp`` and ``rating``, are silently ignored), so recplane needs the resolved list, not the config.
    """
    kinds = ("token_field_names", "token_seq_field_names", "float_field_names", "float_seq_field_names")
    if not hasattr(model, "token_field_names"):
        return None
    return {kind.removesuffix("_field_names"): list(getattr(model, kind, [])) for kind in kinds}


def build_config(model_name: str, epochs: int, seed: int, scratch: str) -> Any:
    """RecBole's Config for the model on ml-100k: its defaults plus ``config_overrides`` only."""
    from recbole.config import Config

    overrides = config_overrides(model_name, epochs, seed, os.path.join(scratch, "saved"))
    return Config(model=model_name, dataset=DATASET, config_dict=overrides)


def best_epoch(timer: EpochTimer, trainer: Any) -> int | None:
    """Index of the epoch whose checkpoint was kept (RecBole counts epochs since the last improvement)."""
    if not timer.valid_seconds:
        return None
    return len(timer.valid_seconds) - 1 - int(trainer.cur_step)


def run_one_model(model_name: str, epochs: int, seed: int, threads: int) -> dict[str, Any]:
    """Train and test one model exactly as RecBole's quick start does, timing the parts."""
    import torch

    torch.set_num_threads(threads)
    patches = apply_patches()

    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    with tempfile.TemporaryDirectory(prefix="recbole-peer-") as scratch:
        # RecBole writes ./log/ and ./log_tensorboard/ relative to the working directory; keep them in scratch.
        os.chdir(scratch)
        config = build_config(model_name, epochs, seed, scratch)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)

        prep_start = time.perf_counter()
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        prep_seconds = time.perf_counter() - prep_start

        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        timer = EpochTimer(trainer)

        fit_start = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=True, show_progress=config["show_progress"]
        )
        fit_seconds = time.perf_counter() - fit_start

        test_start = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
        test_seconds = time.perf_counter() - test_start

        result = {
            "model": model_name,
            "dataset": DATASET,
            "status": "ok",
            "epochs_requested": epochs,
            "epochs_run": len(timer.train_seconds),
            "train_epoch_seconds": summarize(timer.train_seconds),
            "train_epoch_seconds_all": timer.train_seconds,
            "valid_epoch_seconds": summarize(timer.valid_seconds),
            "fit_seconds": fit_seconds,
            "test_eval_seconds": test_seconds,
            "data_prep_seconds": prep_seconds,
            "train_losses": timer.train_losses,
            "valid_metric": str(config["valid_metric"]).lower(),
            "best_valid_score": float(best_valid_score),
            "best_valid_result": {k: float(v) for k, v in (best_valid_result or {}).items()},
            "best_epoch": best_epoch(timer, trainer),
            "test_metrics": headline_metrics(config, test_result),
            "test_result": {k: float(v) for k, v in test_result.items()},
            "num_users": int(dataset.user_num),
            "num_items": int(dataset.item_num),
            "num_interactions": len(dataset.inter_feat),
            "train_interactions": len(train_data.dataset.inter_feat),
            "num_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "peak_rss_mb": peak_rss_mb(),
            "torch_threads": torch.get_num_threads(),
            "patches": patches,
            "protocol": {key: jsonable(config[key]) for key in PROTOCOL_KEYS if key in config},
            "feature_fields": feature_fields(model),
        }
        return result


def headline_metrics(config: Any, test_result: dict[str, Any]) -> dict[str, float]:
    """The test metrics the benchmark compares: top-10 ranking metrics, or AUC/LogLoss for labeled (CTR) models."""
    is_value_model = jsonable(config["eval_type"]) == "VALUE"
    wanted = VALUE_METRICS if is_value_model else GENERAL_METRICS
    return {name: float(test_result[name]) for name in wanted if name in test_result}


def child_main(args: argparse.Namespace) -> int:
    """Run one model and write its result JSON to ``args.result``; RecBole's log output goes to stderr."""
    sys.stdout = sys.stderr  # keep the parent's stdout for the final JSON document only
    try:
        result = run_one_model(args.child, args.epochs, args.seed, args.threads)
    except Exception as exc:  # report the failure as data so one broken model does not hide the others
        result = {
            "model": args.child,
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0 if result["status"] == "ok" else 1


# --------------------------------------------------------------------------------------------------------------
# Parent: one child process per model, one JSON document out.
# --------------------------------------------------------------------------------------------------------------


def run_model_in_child(model: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="recbole-peer-result-") as folder:
        result_path = os.path.join(folder, "result.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            model,
            "--epochs",
            str(args.epochs_by_model.get(model, args.epochs)),
            "--seed",
            str(args.seed),
            "--threads",
            str(args.threads),
            "--result",
            result_path,
        ]
        stderr = None if args.verbose else subprocess.DEVNULL
        start = time.perf_counter()
        completed = subprocess.run(command, stdout=stderr, stderr=stderr, check=False)
        wall = time.perf_counter() - start
        if not os.path.exists(result_path):
            return {"model": model, "status": "error", "error": f"child exited {completed.returncode} with no result"}
        with open(result_path, encoding="utf-8") as handle:
            result: dict[str, Any] = json.load(handle)
        if result.get("status") != "ok":
            print(f"run_recbole.py: {model} failed: {result.get('traceback', result.get('error'))}", file=sys.stderr)
        result["process_wall_seconds"] = wall
        return result


def environment() -> dict[str, Any]:
    import numpy
    import pandas
    import recbole
    import scipy
    import torch

    return {
        "peer": "recbole",
        "version": recbole.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    parser.add_argument("--epochs", type=int, default=20, help="max epochs per model (RecBole default is 300)")
    parser.add_argument(
        "--model-epochs",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="max epochs for one model, overriding --epochs (repeatable), e.g. SASRec=3",
    )
    parser.add_argument("--seed", type=int, default=2020, help="RecBole seed (RecBole default 2020)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each model's process")
    parser.add_argument("--json", dest="json_path", help="write the JSON document here instead of stdout")
    parser.add_argument("--verbose", action="store_true", help="show RecBole's logs on stderr")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1:
        parser.error("--epochs and --threads must be >= 1")
    args.epochs_by_model = {}
    for item in args.model_epochs:
        name, _, count = item.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            parser.error(f"--model-epochs takes MODEL=N with N >= 1, got {item!r}")
        args.epochs_by_model[name] = int(count)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    document = environment()
    document.update(
        {
            "dataset": DATASET,
            "epochs": args.epochs,
            "epochs_by_model": args.epochs_by_model,
            "seed": args.seed,
            "threads": args.threads,
        }
    )
    document["results"] = [run_model_in_child(model, args) for model in models]
    text = json.dumps(document, indent=2)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        print(text)
    return 0 if all(r.get("status") == "ok" for r in document["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
