"""Every ```python block of every docs/ page runs, in page order, in a fresh directory and home.

A block preceded by ``<!-- not-run: reason -->`` is skipped (e.g. it needs a server the reader starts).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"(<!-- not-run:[^>]*-->\s*)?```python\n(.*?)```", re.DOTALL)
PAGES = sorted(p for p in DOCS.glob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECPLANE_HOME", str(tmp_path / "home"))
    wheel = DOCS.parent / ".cache" / "recbole-1.2.1-py3-none-any.whl"
    if wheel.is_file():
        monkeypatch.setenv("RECPLANE_MOVIELENS_PATH", str(wheel))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    blocks = [code for marker, code in BLOCK.findall(page.read_text()) if not marker]
    assert blocks, f"{page.name} has no runnable example"
    for number, code in enumerate(blocks, start=1):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
            except Exception as exc:  # the page and block are the useful part of the report
                pytest.fail(f"{page.name} example {number} failed: {type(exc).__name__}: {exc}\n{code}")
    for value in namespace.values():
        close = getattr(value, "close", None)
        if type(value).__name__ == "Client" and callable(close):
            close()
