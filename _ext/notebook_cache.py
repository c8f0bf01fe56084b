"""Keeps myst-nb's notebook cache honest about gradsal (appendix on performance).

With ``execute_notebooks: cache`` myst-nb keeps each executed notebook in
jupyter-cache, keyed by a hash of its code cells, so a build after a text edit
reruns no chapter. That hash knows nothing of the package the chapters import,
and Sphinx re-reads only the pages whose own source changed: on their own, the
two would keep outputs that a package edit has made wrong. So the cache carries
a fingerprint of the files named by ``nb_cache_depends`` (gradsal's sources,
the pins, files the chapters read) and is emptied whenever they change; and
whenever the fingerprint differs from the one the last build read its pages
with, Sphinx re-reads every page (``env-get-outdated``). A package edit thus
reruns every chapter, and a build from a fresh clone (CI) runs them all.

The test run fills the same cache. ``pytest`` executes every chapter under
nbval; this module is also a pytest plugin (the root ``conftest.py`` loads it)
that stores each chapter whose cells all passed, with the outputs nbval
received, as the executed notebook the build would have made. A build after
``pytest`` then runs no chapter twice (CI: tests, then build). Execution itself
is nbval's and myst-nb's.
"""

from __future__ import annotations

import copy
import hashlib
import time
import warnings
from pathlib import Path

import nbformat
import pytest
from IPython.core.displayhook import DisplayHook
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "depends.sha256"


def fingerprint(root: Path, depends: list[str]) -> str:
    """SHA-256 over the names and bytes of every file under ``depends``, but
    for bytecode and the metadata that installing a package writes beside it."""
    digest = hashlib.sha256()
    for entry in depends:
        base = root / entry
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if not path.is_file() or any(
                part == "__pycache__" or part.endswith(".egg-info")
                for part in path.parts
            ):
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def open_cache(cache_dir: Path, now: str):
    """The jupyter-cache at ``cache_dir`` for dependencies with fingerprint ``now``:
    emptied first (and stamped with ``now``) if it was filled under others."""
    stamp = cache_dir / FINGERPRINT_FILE
    if cache_dir.exists() and stamp.exists() and stamp.read_text() == now:
        return get_cache(str(cache_dir))
    if cache_dir.exists():
        get_cache(str(cache_dir)).clear_cache()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now)
    return get_cache(str(cache_dir))


# ---- the build (a Sphinx extension) ----


def outdated_by_dependencies(
    app: Sphinx,
    env: BuildEnvironment,
    added: set[str],
    changed: set[str],
    removed: set[str],
) -> list[str]:
    """Every page if the dependencies changed since the last build read its
    pages (the cache emptied if it holds outputs of other dependencies); else none."""
    nb_config = env.mystnb_config
    if nb_config.execution_mode != "cache":
        return []
    now = fingerprint(Path(app.srcdir), app.config.nb_cache_depends)
    open_cache(Path(nb_config.execution_cache_path), now)
    if getattr(env, "notebook_cache_fingerprint", None) == now:
        return []
    env.notebook_cache_fingerprint = now
    logger.info("notebook_cache: dependencies changed; every page re-read")
    return sorted(env.found_docs - removed)


def setup(app: Sphinx) -> dict:
    app.add_config_value("nb_cache_depends", ["src"], "env")
    app.connect("env-get-outdated", outdated_by_dependencies)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ---- the test run (a pytest plugin) ----


def book_cache_settings(root: Path) -> tuple[Path, list[str]] | None:
    """(cache folder, nb_cache_depends) of the Jupyter Book at ``root``, or None
    if there is none there or it does not execute in cache mode."""
    import yaml

    config_file = root / "_config.yml"
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    execute = config.get("execute") or {}
    if execute.get("execute_notebooks") != "cache":
        return None
    sphinx_config = (config.get("sphinx") or {}).get("config") or {}
    depends = sphinx_config.get("nb_cache_depends", ["src"])
    cache = execute.get("cache") or "_build/.jupyter_cache"
    return root / cache, list(depends)


def executed_notebook(
    nb: nbformat.NotebookNode, outputs: list[list]
) -> nbformat.NotebookNode:
    """``nb`` with its code cells' outputs replaced by ``outputs`` (one list per
    code cell, in order) and numbered 1, 2, ... as a kernel run from the top."""
    nb = copy.deepcopy(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if len(code) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(code)} code cells")
    for count, (cell, outs) in enumerate(zip(code, outputs), start=1):
        cell.execution_count = count
        # nbval runs cells outside IPython's history, where a trailing ";"
        # does not hide the cell's value as it does in a notebook
        quiet = DisplayHook.semicolon_at_end_of_expression(cell.source)
        cell.outputs = [
            nbformat.from_dict(dict(out))
            for out in outs
            if not (quiet and out["output_type"] == "execute_result")
        ]
        for out in cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = count
    nbformat.validate(nb)
    return nb


class ExecutedChapters:
    """Collects nbval's cells per notebook and caches the notebooks that passed."""

    def __init__(self, cache_dir: Path, root: Path, depends: list[str]):
        self.cache_dir, self.root, self.depends = cache_dir, root, depends
        # notebook path -> {"nb": the notebook nbval read,
        #                   "cells": {cell number: (passed, outputs, seconds)}}
        self.cells: dict[Path, dict] = {}

    def record(self, item, report) -> None:
        notebook = item.parent
        path = Path(str(notebook.fspath)).resolve()
        entry = self.cells.setdefault(path, {"nb": notebook.nb, "cells": {}})
        entry["cells"][item.cell_num] = (
            report.passed,
            list(item.test_outputs or []),
            report.duration,
        )

    def store(self) -> int:
        """Cache every notebook whose code cells all ran and passed; their number."""
        if not self.cells:
            return 0
        cache = open_cache(
            self.cache_dir, fingerprint(self.root, self.depends)
        )
        stored = 0
        for path, entry in self.cells.items():
            n_code = sum(c.cell_type == "code" for c in entry["nb"].cells)
            results = [entry["cells"].get(k) for k in range(n_code)]
            if not all(r is not None and r[0] for r in results):
                continue  # a cell failed or did not run: the build runs it
            try:
                nb = executed_notebook(entry["nb"], [r[1] for r in results])
            except (ValueError, nbformat.ValidationError) as err:
                warnings.warn(f"not cached: {path.name}: {err}", stacklevel=1)
                continue
            seconds = sum(r[2] for r in results)
            cache.cache_notebook_bundle(
                CacheBundleIn(
                    nb, str(path), data={"execution_seconds": seconds}
                ),
                check_validity=False,
                overwrite=True,
            )
            stored += 1
        return stored


_KEY = pytest.StashKey["ExecutedChapters"]()


def pytest_configure(config) -> None:
    root = Path(str(config.rootpath))
    settings = book_cache_settings(root)
    if settings is not None and config.pluginmanager.hasplugin("nbval"):
        config.stash[_KEY] = ExecutedChapters(settings[0], root, settings[1])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    chapters = item.config.stash.get(_KEY, None)
    # nbval's cell items keep the outputs the kernel sent in test_outputs
    is_cell = type(item).__name__ == "IPyNbCell"
    if chapters is not None and is_cell and report.when == "call":
        chapters.record(item, report)
    return report


def pytest_sessionfinish(session) -> None:
    chapters = session.config.stash.get(_KEY, None)
    if chapters is None:
        return
    start = time.perf_counter()
    stored = chapters.store()
    if stored:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"notebook_cache: {stored} executed notebook(s) kept for the "
                f"book's build in {chapters.cache_dir} "
                f"({time.perf_counter() - start:.1f} s)"
            )
