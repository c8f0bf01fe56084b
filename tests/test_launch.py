"""Colab launch URLs: every chapter's points at that chapter's notebook, as the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import gradsal

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
COLAB = re.compile(
    r"https://colab\.research\.google\.com/github/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+)"
    r"/blob/(?P<branch>[\w./-]+?)/(?P<path>[\w./-]+\.ipynb)"
)
CHAPTERS = [
    c["file"]
    for part in TOC["parts"]
    for c in part["chapters"]
    if (ROOT / f"{c['file']}.ipynb").exists()
]


def colab_url(chapter: str) -> str:
    """The URL of the launch button, built as sphinx-book-theme builds it."""
    colab = CONFIG["launch_buttons"]["colab_url"].strip("/")
    owner, repo = (
        CONFIG["repository"]["url"]
        .removeprefix("https://github.com/")
        .strip("/")
        .split("/")
    )
    branch = CONFIG["repository"].get("branch", "main")
    book = CONFIG["repository"].get("path_to_book", "").strip("/")
    return f"{colab}/github/{owner}/{repo}/blob/{branch}/{book + '/' if book else ''}{chapter}.ipynb"


def test_every_chapter_has_a_colab_button():
    assert (
        CONFIG["launch_buttons"]["colab_url"]
        == "https://colab.research.google.com"
    )
    assert CONFIG["repository"]["url"] == gradsal.REPOSITORY_URL
    assert len(CHAPTERS) >= 7


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_colab_url_points_at_the_chapter_file(chapter):
    match = COLAB.fullmatch(colab_url(chapter))
    assert match, colab_url(chapter)
    assert (
        f"https://github.com/{match['owner']}/{match['repo']}"
        == gradsal.REPOSITORY_URL
    )
    assert match["branch"] == CONFIG["repository"]["branch"]
    # the path is relative to the repository root, where this checkout's root is
    assert (ROOT / match["path"]).is_file() and match[
        "path"
    ] == f"{chapter}.ipynb"


def test_the_readme_quotes_a_working_colab_url():
    urls = COLAB.findall((ROOT / "README.md").read_text())
    assert urls, "README.md quotes no Colab URL"
    for owner, repo, branch, path in urls:
        chapter = path.removesuffix(".ipynb")
        assert chapter in CHAPTERS, path
        assert (
            f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{path}"
            == colab_url(chapter)
        )
