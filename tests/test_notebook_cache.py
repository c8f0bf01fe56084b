"""The build's notebook runner (_ext/notebook_cache.py): a small book built for real.

Two notebooks executed by myst-nb in cache mode; a text edit reruns nothing,
a dependency edit (with no page changed) reruns both; a failing notebook still
fails the build the way myst-nb reports it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from notebook_cache import fingerprint
from sphinx.application import Sphinx


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


def build(src: Path, fresh: bool = True, **overrides) -> tuple[str, str]:
    """Build src/ to html (``fresh``: from an empty environment); return
    (status log, warnings)."""
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
        freshenv=fresh,
    )
    app.build()
    return status.getvalue(), warning.getvalue()


@pytest.fixture
def book(tmp_path):
    # notebook_cache is importable: _ext/ is on pytest's pythonpath
    (tmp_path / "conf.py").write_text(
        "extensions = ['myst_nb', 'notebook_cache']\n"
        "nb_execution_mode = 'cache'\n"
        "nb_cache_depends = ['lib']\n"
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


def test_a_fresh_build_executes_every_notebook(book):
    status, warnings = build(book)
    assert "dependencies changed" in status
    assert status.count("Executed notebook in") == 2
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
    status, _ = build(book, fresh=False)
    assert "Executed notebook in" not in status
    assert status.count("Using cached notebook") == 1  # the edited page
    assert "reworded" in (book / "_build/html/one.html").read_text()

    # no page changed, but the package did: every notebook reruns
    (book / "lib" / "data.txt").write_text("99")
    status, _ = build(book, fresh=False)
    assert "dependencies changed" in status
    assert status.count("Executed notebook in") == 2
    assert "100" in (book / "_build/html/one.html").read_text()

    status, _ = build(book, fresh=False)  # and then nothing more
    assert "dependencies changed" not in status
    assert "Executed notebook in" not in status


def test_a_failing_notebook_fails_as_myst_nb_reports_it(book):
    notebook(book / "two.ipynb", "raise RuntimeError('broken chapter')")
    status, warnings = build(book)
    assert "Executing notebook failed: CellExecutionError" in warnings
    # the other notebook's outputs are kept
    assert "42" in (book / "_build/html/one.html").read_text()


def test_force_mode_is_left_alone(book):
    status, _ = build(book, nb_execution_mode="force")
    assert "notebook_cache" not in status
    assert status.count("Executed notebook in") == 2


def test_fingerprint_sees_contents_and_names_not_bytecode_or_egg_info(
    tmp_path,
):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pins.txt").write_text("torch==1\n")
    depends = ["pkg", "pins.txt"]
    first = fingerprint(tmp_path, depends)
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "pkg.egg-info").mkdir()  # pip install -e writes it
    (tmp_path / "pkg" / "pkg.egg-info" / "PKG-INFO").write_text("Version: 1")
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


# ---- the test run keeps what nbval executed for the build ----


def run_pytest(book: Path, *notebooks: str) -> str:
    """nbval over ``notebooks`` of the book, in a fresh pytest process with the
    plugin loaded as the root conftest loads it; its output."""
    import os
    import subprocess
    import sys

    ext = Path(__file__).resolve().parents[1] / "_ext"
    env = dict(os.environ, PYTHONPATH=str(ext))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "notebook_cache"]
        + ["-p", "no:cacheprovider", "-q", *notebooks],
        cwd=book,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout + done.stderr


@pytest.fixture
def jupyter_book(book):
    """The small book with a Jupyter Book _config.yml (read by the plugin) and
    the cache where jupyter-book keeps it."""
    (book / "_config.yml").write_text(
        "execute:\n  execute_notebooks: cache\n"
        "sphinx:\n  config:\n    nb_cache_depends: [lib]\n"
    )
    with open(book / "conf.py", "a") as conf:
        conf.write(
            f"nb_execution_cache_path = {str(book / '_build/.jupyter_cache')!r}\n"
        )
    return book


def test_a_test_run_keeps_its_notebooks_and_the_build_reuses_them(
    jupyter_book,
):
    out = run_pytest(jupyter_book, "one.ipynb", "two.ipynb")
    assert "2 passed" in out and "2 executed notebook(s) kept" in out
    status, warnings = build(jupyter_book)
    assert "Executed notebook in" not in status
    assert status.count("Using cached notebook") == 2
    assert "Executing notebook failed" not in warnings
    assert "42" in (jupyter_book / "_build/html/one.html").read_text()
    assert "twotwo" in (jupyter_book / "_build/html/two.html").read_text()


def test_a_package_edit_then_tests_then_build_shows_the_new_outputs(
    jupyter_book,
):
    build(jupyter_book)
    (jupyter_book / "lib" / "data.txt").write_text("99")
    assert "2 executed notebook(s) kept" in run_pytest(
        jupyter_book, "one.ipynb", "two.ipynb"
    )
    # no page changed since the last build, yet every page is re-read and
    # takes the outputs the test run made with the edited package
    status, _ = build(jupyter_book, fresh=False)
    assert "dependencies changed" in status
    assert "Executed notebook in" not in status
    assert status.count("Using cached notebook") == 2
    assert "100" in (jupyter_book / "_build/html/one.html").read_text()


def test_a_failing_notebook_is_not_kept(jupyter_book):
    notebook(jupyter_book / "two.ipynb", "print('ran')\nraise RuntimeError")
    out = run_pytest(jupyter_book, "one.ipynb", "two.ipynb")
    assert "1 failed" in out and "1 executed notebook(s) kept" in out
    status, warnings = build(jupyter_book)
    assert status.count("Using cached notebook") == 1
    assert "Executing notebook failed: CellExecutionError" in warnings


def test_a_partial_run_keeps_only_complete_notebooks(jupyter_book):
    nb = nbformat.read(jupyter_book / "one.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('second cell')"))
    nbformat.write(nb, jupyter_book / "one.ipynb")
    # the second cell of one.ipynb is deselected: one.ipynb stays unkept
    out = run_pytest(
        jupyter_book,
        "one.ipynb",
        "two.ipynb",
        "--deselect",
        "one.ipynb::Cell 1",
    )
    assert "1 executed notebook(s) kept" in out
    status, _ = build(jupyter_book)
    assert status.count("Using cached notebook") == 1
    assert status.count("Executed notebook in") == 1
    assert "second cell" in (jupyter_book / "_build/html/one.html").read_text()


def test_executed_notebook_numbers_cells_and_rejects_a_miscount():
    from notebook_cache import executed_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("1"),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("print(2)"),
    ]
    result = nbformat.v4.new_output(
        "execute_result", data={"text/plain": "1"}, execution_count=7
    )
    stream = nbformat.v4.new_output("stream", name="stdout", text="2\n")
    out = executed_notebook(nb, [[result], [stream]])
    assert [c.get("execution_count") for c in out.cells] == [1, None, 2]
    assert out.cells[0].outputs[0].execution_count == 1
    assert out.cells[2].outputs[0].text == "2\n"
    assert nb.cells[0].outputs == []  # the input is left alone
    # a trailing semicolon hides the value, as in a notebook
    nb.cells[0].source = "1;  # quiet"
    assert executed_notebook(nb, [[result], [stream]]).cells[0].outputs == []
    with pytest.raises(ValueError, match="1 outputs for 2 code cells"):
        executed_notebook(nb, [[result]])
