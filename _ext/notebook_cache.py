"""Executes the book's notebooks into jupyter-cache before Sphinx reads them.

With ``execute_notebooks: cache`` myst-nb keeps each executed notebook in
jupyter-cache, keyed by a hash of its code cells, so a build after a text edit
reruns no chapter. That hash knows nothing of gradsal, so on its own the cache
would keep outputs that a package edit has made wrong. This extension
(appendix on performance):

* empties the cache whenever the files named by ``nb_cache_depends`` (gradsal's
  sources, the pins, files the chapters read) change, so a package edit reruns
  every chapter and a build from a fresh clone (CI) runs them all;
* on ``env-before-read-docs``, executes every notebook Sphinx is about to read
  that has no cached outputs, each in its own kernel and in its own folder, as
  myst-nb would, ``nb_cache_workers`` at a time (the book uses 1; see below),
  the longest first by the times in ``nb_cache_runtimes`` (the JSON file of
  ``bench/chapter_times.py``; a notebook it does not know counts as long);
* puts each executed notebook into myst-nb's cache with its run time, where
  myst-nb then finds it;
* leaves a notebook that fails here out of the cache: myst-nb executes it again
  and reports the failure as it always does (a warning, so ``-W`` fails).

Two workers finish the chapters about a tenth sooner on two cores (the light
chapters leave a core idle), but every chapter then times its own passes while
another chapter competes for the cores, and several chapters print those times.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution
from myst_nb.core.read import create_nb_reader
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "depends.sha256"


def fingerprint(root: Path, depends: list[str]) -> str:
    """SHA-256 over the names and bytes of every file under ``depends``."""
    digest = hashlib.sha256()
    for entry in depends:
        base = root / entry
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def previous_runtimes(path: Path) -> dict[str, float]:
    """Seconds per document from a ``bench/chapter_times.py`` JSON file, if any."""
    try:
        chapters = json.loads(path.read_text())["chapters"]
        return {doc: float(v["runtime_s"]) for doc, v in chapters.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def execute_ahead(
    app: Sphinx, env: BuildEnvironment, docnames: list[str]
) -> None:
    nb_config = env.mystnb_config
    if nb_config.execution_mode != "cache":
        return
    cache_dir = Path(nb_config.execution_cache_path)
    cache = get_cache(str(cache_dir))
    root = Path(app.srcdir)
    stamp = cache_dir / FINGERPRINT_FILE
    now = fingerprint(root, app.config.nb_cache_depends)
    if not stamp.exists() or stamp.read_text() != now:
        if cache_dir.exists():
            cache.clear_cache()
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(now)

    jobs = []
    for docname in docnames:
        path = Path(env.doc2path(docname))
        if any(
            fnmatch.fnmatch(str(path), p)
            for p in nb_config.execution_excludepatterns
        ):
            continue
        text = path.read_text(encoding="utf-8")
        reader = create_nb_reader(str(path), env.myst_config, nb_config, text)
        if reader is None:
            continue  # a plain Markdown page
        notebook = reader.read(text)
        try:
            cache.match_cache_notebook(notebook)
            continue  # outputs cached already
        except KeyError:
            jobs.append((docname, path, notebook))
    if not jobs:
        return
    known = previous_runtimes(root / app.config.nb_cache_runtimes)
    jobs.sort(key=lambda job: -known.get(job[0], float("inf")))
    workers = max(1, min(app.config.nb_cache_workers, len(jobs)))
    logger.info(
        f"notebook_cache: executing {len(jobs)} notebooks, {workers} at a time"
    )

    def execute(job):
        _, path, notebook = job
        return single_nb_execution(
            notebook,
            cwd=str(path.parent),
            allow_errors=nb_config.execution_allow_errors,
            timeout=nb_config.execution_timeout,
            meta_override=True,
        )

    start = time.perf_counter()
    threads = os.environ.get("OMP_NUM_THREADS")
    if workers > 1:  # kernels sharing the cores get equal shares of threads
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
    try:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(execute, jobs))
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    for (docname, path, notebook), result in zip(jobs, results):
        if result.err is not None:
            logger.info(
                f"notebook_cache: {docname} failed; myst-nb will rerun it"
            )
            continue
        cache.cache_notebook_bundle(
            CacheBundleIn(
                notebook, str(path), data={"execution_seconds": result.time}
            ),
            check_validity=False,
            overwrite=True,
        )
        logger.info(f"notebook_cache: {docname} ran in {result.time:.1f} s")
    logger.info(f"notebook_cache: all in {time.perf_counter() - start:.1f} s")


def setup(app: Sphinx) -> dict:
    app.add_config_value("nb_cache_workers", 2, "env")
    app.add_config_value(
        "nb_cache_runtimes", "bench/results/chapter_times.json", "env"
    )
    app.add_config_value("nb_cache_depends", ["src"], "env")
    app.connect("env-before-read-docs", execute_ahead)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
