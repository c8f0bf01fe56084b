"""The build's notebook runner (_ext/notebook_cache.py): a small book built for real.

Two notebooks executed ahead of Sphinx's reading and found in the cache by
myst-nb; a text edit reruns nothing, a dependency edit reruns both; a failing
notebook still fails the build the way myst-nb reports it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from notebook_cache import fingerprint, previous_runtimes
from sphinx.application import Sphinx

from bench.chapter_times import write

EXT = Path(__file__).resolve().parents[1] / "_ext"


def notebook(path: Path, code: str, text: str = "# A page") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell(text),
        nbformat.v4.new_code_cell(code),
    ]
    nbformat.write(nb, path)


def build(src: Path, **overrides) -> tuple[str, str]:
    """Build src/ to html; return (status log, warnings)."""
    from io import StringIO

    status, warning = StringIO(), StringIO()
    app = Sphinx(
        str(src),
        str(src),
        str(src / "_build" / "html"),
        str(src / "_build" / "doctrees"),
        "html",
        confoverrides=overrides,
        status=status,
        warning=warning,
        freshenv=True,
    )
    app.build()
    return status.getvalue(), warning.getvalue()


@pytest.fixture
def book(tmp_path):
    (tmp_path / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(EXT)!r})\n"
        "extensions = ['myst_nb', 'notebook_cache']\n"
        "nb_execution_mode = 'cache'\n"
        "nb_cache_depends = ['lib']\n"
        "nb_cache_runtimes = 'times.json'\n"
        "exclude_patterns = ['_build']\n"
    )
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "data.txt").write_text("41")
    (tmp_path / "index.md").write_text(
        "# Book\n\n```{toctree}\none\ntwo\n```\n"
    )
    # each notebook reads a file beside it: it must run in its own folder
    notebook(
        tmp_path / "one.ipynb", "print(int(open('lib/data.txt').read()) + 1)"
    )
    notebook(tmp_path / "two.ipynb", "print('two' * 2)")
    return tmp_path


def test_notebooks_run_ahead_and_myst_nb_uses_their_outputs(book):
    status, warnings = build(book)
    assert "notebook_cache: executing 2 notebooks, 2 at a time" in status
    assert status.count("Using cached notebook") == 2
    assert "Executing notebook using" not in status  # myst-nb ran none itself
    assert warnings == ""
    assert "42" in (book / "_build/html/one.html").read_text()
    assert "twotwo" in (book / "_build/html/two.html").read_text()


def test_a_text_edit_reruns_nothing_and_a_dependency_edit_reruns_all(book):
    build(book)
    notebook(
        book / "one.ipynb",
        "print(int(open('lib/data.txt').read()) + 1)",
        text="# A page, reworded",
    )
    status, _ = build(book)
    assert "notebook_cache: executing" not in status
    assert "reworded" in (book / "_build/html/one.html").read_text()

    (book / "lib" / "data.txt").write_text("99")
    status, _ = build(book)
    assert "notebook_cache: executing 2 notebooks" in status
    assert "100" in (book / "_build/html/one.html").read_text()


def test_a_failing_notebook_fails_as_myst_nb_reports_it(book):
    notebook(book / "two.ipynb", "raise RuntimeError('broken chapter')")
    status, warnings = build(book)
    assert "notebook_cache: two failed; myst-nb will rerun it" in status
    assert "Executing notebook failed: CellExecutionError" in warnings
    # the other notebook's outputs are kept
    assert "42" in (book / "_build/html/one.html").read_text()


def test_force_mode_leaves_execution_to_myst_nb(book):
    status, _ = build(book, nb_execution_mode="force")
    assert "notebook_cache" not in status
    assert status.count("Executed notebook in") == 2


def test_the_longest_notebook_starts_first(book, monkeypatch):
    import notebook_cache

    started = []
    real = notebook_cache.single_nb_execution

    def spy(nb, **kwargs):
        started.append(nb.cells[1].source)
        return real(nb, **kwargs)

    monkeypatch.setattr(notebook_cache, "single_nb_execution", spy)
    (book / "times.json").write_text(
        json.dumps(
            {
                "chapters": {
                    "one": {"runtime_s": 1.0},
                    "two": {"runtime_s": 9.0},
                }
            }
        )
    )
    build(book, nb_cache_workers=1)
    assert started[0] == "print('two' * 2)"  # 9 s last time, so first
    assert "lib/data.txt" in started[1]


def test_fingerprint_sees_contents_and_names_but_not_bytecode(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pins.txt").write_text("torch==1\n")
    depends = ["pkg", "pins.txt"]
    first = fingerprint(tmp_path, depends)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert fingerprint(tmp_path, depends) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    second = fingerprint(tmp_path, depends)
    assert second != first
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "b.py")
    assert fingerprint(tmp_path, depends) not in (first, second)
    (tmp_path / "pins.txt").write_text("torch==2\n")
    assert fingerprint(tmp_path, ["pins.txt"]) != fingerprint(
        tmp_path, ["pkg"]
    )


def test_previous_runtimes_reads_what_chapter_times_writes(tmp_path):
    times = {
        "report/00-Setup": {
            "runtime_s": 12.5,
            "succeeded": True,
            "method": "cache",
        },
        "report/07-WiderFamily": {
            "runtime_s": 80.0,
            "succeeded": True,
            "method": "cache",
        },
    }
    write(tmp_path, times, list(times), 300.0, "test")
    assert previous_runtimes(tmp_path / "chapter_times.json") == {
        "report/00-Setup": 12.5,
        "report/07-WiderFamily": 80.0,
    }
    assert previous_runtimes(tmp_path / "missing.json") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert previous_runtimes(tmp_path / "bad.json") == {}
