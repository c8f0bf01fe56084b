"""The intro page: a MyST notebook whose chapter list is the table of contents."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INTRO = ROOT / "report" / "intro.md"
# Being written: listed in intro.md and _toc.yml once the notebook exists, not before.
WIDER_FAMILY = "report/07-WiderFamily"


def _toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


def _toc_files() -> list[str]:
    return [
        chapter["file"]
        for part in _toc()["parts"]
        for chapter in part["chapters"]
    ]


def _front_matter_and_body() -> tuple[dict, str]:
    text = INTRO.read_text()
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, flags=re.S)
    assert match, "intro.md starts with a YAML header (a MyST notebook)"
    return yaml.safe_load(match.group(1)), match.group(2)


def _section(body: str, title: str) -> str:
    match = re.search(
        rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", body, flags=re.S | re.M
    )
    assert match, f"intro.md has no section '{title}'"
    return match.group(1)


def test_the_intro_is_the_root_and_a_myst_notebook():
    assert _toc()["root"] == "report/intro"
    header, body = _front_matter_and_body()
    assert header["kernelspec"]["name"] == "python3"
    assert header["jupytext"]["text_representation"]["format_name"] == "myst"
    cells = re.findall(
        r"^```\{code-cell\}[^\n]*\n(.*?)^```$", body, flags=re.S | re.M
    )
    assert len(cells) == 1
    assert re.search(r"tags: \[remove-input\]", cells[0])
    for call in (
        'gradsal.load_image("cat")',
        "gradsal.vanilla_gradient(",
        "gradsal.grad_cam(",
        "n_samples=20, generator=0",
        "clip_percentile=99",
        '"magma"',
    ):
        assert call in cells[0], call
    assert re.search(r"^\s+alt: \S.{40,}", cells[0], flags=re.M), (
        "the figure needs alt text"
    )
    assert re.search(r"^\s+caption: ", cells[0], flags=re.M)


def test_the_intro_has_no_stale_text():
    text = INTRO.read_text().lower()
    for stale in (
        "not yet in the table of contents",
        "being written",
        "coming soon",
        "todo",
    ):
        assert stale not in text, stale


def test_the_chapter_list_is_the_table_of_contents():
    _, body = _front_matter_and_body()
    listed = [
        "report/" + doc
        for doc in re.findall(
            r"\{doc\}`([^`<>]+)`", _section(body, "What the book covers")
        )
    ]
    assert listed == _toc_files(), (
        "intro.md's chapter list and _toc.yml differ"
    )


def test_the_wider_family_chapter_is_listed_once_it_exists():
    listed = WIDER_FAMILY in _toc_files()
    assert listed == (ROOT / f"{WIDER_FAMILY}.ipynb").exists()
