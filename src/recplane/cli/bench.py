"""`recplane bench SUITE`: run a benchmark suite from the repository's benchmarks/ folder."""

from __future__ import annotations

import importlib.util
import json as jsonlib
import os
import platform
from pathlib import Path
from typing import Annotated, Any

import typer

from recplane.cli.output import console, print_records

__all__ = ["bench"]


def _benchmarks_root() -> Path:
    configured = os.environ.get("RECPLANE_BENCHMARKS")
    candidates = [Path(configured)] if configured else []
    candidates += [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[3] / "benchmarks"]
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    raise typer.BadParameter("No benchmarks/ folder found: run from a recplane checkout or set RECPLANE_BENCHMARKS.")


def machine_label() -> str:
    """A short description of this machine for each result row."""
    return f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_implementation()} {platform.python_version()}"


def bench(
    suite: Annotated[str, typer.Argument(help="Suite name: a folder under benchmarks/ (e.g. ingest).")],
    json: Annotated[bool, typer.Option("--json", help="One JSON object per result line.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: checks the suite runs and is correct.")] = False,
    runs: Annotated[int | None, typer.Option(help="Repetitions per case (median reported).")] = None,
) -> None:
    """Run a benchmark suite side by side with its peer and report ratios (>1 means recplane wins).

    Example: recplane bench ingest --json
    """
    root = _benchmarks_root()
    module_path = root / suite / "suite.py"
    if not module_path.is_file():
        suites = sorted(p.name for p in root.iterdir() if (p / "suite.py").is_file())
        raise typer.BadParameter(f"No suite {suite!r}; available: {', '.join(suites)}")
    spec = importlib.util.spec_from_file_location(f"recplane_bench_{suite}", module_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row = {"bench": suite, "machine": machine_label(), **row}
        rows.append(row)
        if json:
            print(jsonlib.dumps(row), flush=True)
        else:
            console.print(f"[dim]{row['case']}: {row['value']} {row['unit']} (ratio {row.get('ratio')})[/]")

    module.run(emit=emit, quick=quick, runs=runs)
    if not json:
        print_records(rows, ["case", "value", "unit", "baseline", "baseline_value", "ratio", "runs"],
                      title=f"bench {suite}")
