"""The Python examples in docs/quality.md run, and print what the page says they print."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "quality.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def run(code: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {"__name__": "docs_quality"})
    return printed.getvalue()


def test_the_page_has_its_two_examples() -> None:
    assert len(python_blocks()) == 2


def test_the_first_check_example_prints_the_documented_verdicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    lines = run(python_blocks()[0]).splitlines()
    assert lines[0] == "True All 6 quality rules passed on version 1."
    assert (
        lines[1]
        == "False 2 of 6 rules failed on version 2 (2 blocking): range(rating), allowed_values(event_type)."
    )
    assert lines[2].startswith(
        "range(rating) blocking 1 of 101 non-null values (0.99%) of rating are not within"
    )


def test_the_drift_functions_example_prints_the_documented_values() -> None:
    first, second = run(python_blocks()[1]).splitlines()
    assert first == "0.2747"
    assert second.startswith("(0.5, 0.534")
