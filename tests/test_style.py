"""Code that fits the page: notebook code lines at most 79 characters (ruff's line-length).

The book's theme shows about 80 characters of code before a cell scrolls sideways.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "report").glob("*.ipynb"))
MAX = 79


def _long_lines(cells: list[tuple[int, str]]) -> list[str]:
    return [
        f"cell {i}: {len(line)} chars: {line[:60]}..."
        for i, source in cells
        for line in source.splitlines()
        if len(line) > MAX
    ]


def test_ruff_is_configured_for_the_page_width():
    pyproject = (ROOT / "pyproject.toml").read_text()
    ruff = re.search(
        r"^\[tool\.ruff\]\n(.*?)(?=^\[)", pyproject, flags=re.S | re.M
    )
    assert ruff, "pyproject.toml has no [tool.ruff] table"
    assert re.search(rf"^line-length = {MAX}$", ruff.group(1), flags=re.M)


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_code_lines_fit_the_page(nb_path):
    nb = json.loads(nb_path.read_text())
    cells = [
        (i, "".join(c["source"]))
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code"
    ]
    long = _long_lines(cells)
    assert not long, (
        f"{nb_path.name}: {len(long)} code lines over {MAX} characters:\n"
        + "\n".join(long[:10])
    )


def test_text_notebook_code_lines_fit_the_page():
    for page in sorted((ROOT / "report").glob("*.md")):
        cells = re.findall(
            r"^```\{code-cell\}[^\n]*\n(?:---\n.*?\n---\n)?(.*?)^```$",
            page.read_text(),
            flags=re.S | re.M,
        )
        long = _long_lines(list(enumerate(cells)))
        assert not long, f"{page.name}: " + "\n".join(long)


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_the_repository_is_clean_under_ruff(command):
    """Package, tests, benchmarks, figure scripts and notebooks: one style."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
