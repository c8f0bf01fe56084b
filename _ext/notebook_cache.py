"""Keeps myst-nb's notebook cache honest about gradsal (appendix on performance).

With ``execute_notebooks: cache`` myst-nb keeps each executed notebook in
jupyter-cache, keyed by a hash of its code cells, so a build after a text edit
reruns no chapter. That hash knows nothing of the package the chapters import,
and Sphinx re-reads only the pages whose own source changed: on their own, the
two would keep outputs that a package edit has made wrong. So whenever the files
named by ``nb_cache_depends`` (gradsal's sources, the pins, files the chapters
read) change, this extension empties the cache and has Sphinx re-read every
page (``env-get-outdated``): a package edit reruns every chapter, and a build
from a fresh clone (CI) runs them all. Execution itself is myst-nb's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from jupyter_cache import get_cache
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


def outdated_by_dependencies(
    app: Sphinx,
    env: BuildEnvironment,
    added: set[str],
    changed: set[str],
    removed: set[str],
) -> list[str]:
    """Every page, with the cache emptied, if a dependency changed; else none."""
    nb_config = env.mystnb_config
    if nb_config.execution_mode != "cache":
        return []
    cache_dir = Path(nb_config.execution_cache_path)
    stamp = cache_dir / FINGERPRINT_FILE
    now = fingerprint(Path(app.srcdir), app.config.nb_cache_depends)
    if stamp.exists() and stamp.read_text() == now:
        return []
    if cache_dir.exists():
        get_cache(str(cache_dir)).clear_cache()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now)
    logger.info(
        "notebook_cache: dependencies changed; cache emptied, every page re-read"
    )
    return sorted(env.found_docs - removed)


def setup(app: Sphinx) -> dict:
    app.add_config_value("nb_cache_depends", ["src"], "env")
    app.connect("env-get-outdated", outdated_by_dependencies)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
