"""The Python example in docs/evaluation.md runs and prints what the page says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "evaluation.md"

DOCUMENTED_OUTPUT = [
    "{'recall@3': 0.75, 'mrr@3': 0.5, 'ndcg@3': 0.5089, 'hit@3': 1.0, 'precision@3': 0.3333, 'map@3': 0.375}",
    "0.5833 0.6667 0.6997",
    "RS (0.8, 0.1, 0.1) mrr@10 (818, 91, 91)",
    "{'recall@10': 0.4525, 'ndcg@10': 0.3284, 'mrr@10': 0.3851, 'gauc': 0.5036}",
    "20 0.66",
]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_page_shows_each_printed_line() -> None:
    (block,) = python_blocks()
    for line in DOCUMENTED_OUTPUT:
        assert f"# {line}\n" in block


def test_the_example_prints_the_documented_values() -> None:
    (block,) = python_blocks()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block, str(DOC), "exec"), {"__name__": "docs_evaluation"})
    assert printed.getvalue().splitlines() == DOCUMENTED_OUTPUT
