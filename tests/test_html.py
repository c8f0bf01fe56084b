"""The built book as readers get it: no page loads a script from the network, the API
page lists every public name, and every chapter offers its notebook for download.

These tests read ``_build/html`` (or the folder in ``$BOOK_HTML``) and skip when it is
absent, so ``pytest`` before a build passes; CI runs this file again after
``jupyter-book build`` (see .ci/run).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

import gradsal

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
BUILT = (HTML / "index.html").is_file()
PAGES = sorted(HTML.rglob("*.html")) if BUILT else []

needs_build = pytest.mark.skipif(
    not BUILT,
    reason=f"no built book at {HTML}: run `jupyter-book build .` first",
)


class _Tags(HTMLParser):
    """The attributes of every <script> and <link> tag of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str]] = []
        self.links: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self.scripts.append(attrs)
        elif tag == "link":
            self.links.append(attrs)
        elif tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])


def _tags(page: Path) -> _Tags:
    parser = _Tags()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _remote(url: str) -> bool:
    return bool(re.match(r"\s*(https?:)?//", url, flags=re.I))


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return files


CHAPTERS = [f for f in _toc_files() if (ROOT / f"{f}.ipynb").exists()]


@needs_build
def test_the_build_has_pages():
    assert len(PAGES) > len(CHAPTERS)


@needs_build
@pytest.mark.parametrize(
    "page", PAGES, ids=[str(p.relative_to(HTML)) for p in PAGES]
)
def test_no_page_loads_a_script_from_the_network(page):
    remote = [
        s["src"] for s in _tags(page).scripts if _remote(s.get("src", ""))
    ]
    assert not remote, (
        f"{page.relative_to(HTML)} loads scripts from the network: {remote}"
    )


@needs_build
def test_mathjax_is_served_from_the_build():
    page = HTML / "report" / "02-SmoothGradIntro.html"
    if not page.exists():
        pytest.skip("chapter 02 is not in this build")
    srcs = [s.get("src", "") for s in _tags(page).scripts]
    mathjax = [s for s in srcs if "mathjax" in s.lower()]
    assert mathjax and all(not _remote(s) for s in mathjax), srcs
    assert (page.parent / mathjax[0].split("?")[0]).resolve().is_file()
    # its fonts come with it
    assert list(
        (HTML / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob(
            "*.woff"
        )
    )


@needs_build
@pytest.mark.parametrize(
    "page", PAGES, ids=[str(p.relative_to(HTML)) for p in PAGES]
)
def test_no_page_loads_a_stylesheet_from_the_network(page):
    remote = [
        link["href"]
        for link in _tags(page).links
        if "stylesheet" in link.get("rel", "")
        and _remote(link.get("href", ""))
    ]
    assert not remote, (
        f"{page.relative_to(HTML)} loads stylesheets from the network: {remote}"
    )


def _modules() -> list[str]:
    return ["gradsal"] + [
        info.name
        for info in pkgutil.walk_packages(gradsal.__path__, "gradsal.")
    ]


def _anchor(obj, name: str) -> str:
    """The id of the one entry that documents a public object (see _ext/gradsal_api.py)."""
    if inspect.ismodule(obj):
        return f"module-{obj.__name__}"
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    for modname in _modules():
        module = importlib.import_module(modname)
        if (
            not hasattr(module, "__path__")
            and name in getattr(module, "__all__", ())
            and getattr(module, name) is obj
        ):
            return f"{modname}.{name}"
    return f"gradsal.{name}"  # defined in the package itself


@needs_build
def test_the_api_page_documents_every_public_name():
    page = HTML / "report" / "appendix-api.html"
    assert page.exists(), "the API appendix is missing from the build"
    tags = _tags(page)
    links = {h.rsplit("#", 1)[-1] for h in tags.hrefs if "#" in h}
    missing, unlisted = [], []
    for modname in _modules():
        assert f"module-{modname}" in tags.ids, (
            f"{modname} is not on the API page"
        )
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            anchor = _anchor(getattr(module, name), name)
            if anchor not in tags.ids:
                missing.append(f"{modname}.{name}")
            elif (
                hasattr(module, "__path__")
                and anchor not in links
                and anchor != f"{modname}.{name}"
            ):
                unlisted.append(
                    f"{modname}.{name}"
                )  # a package's table links each name
    assert not missing, f"not documented on the API page: {missing}"
    assert not unlisted, f"not in their package's table: {unlisted}"


@needs_build
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_offers_its_notebook_and_links_the_repository(chapter):
    page = HTML / f"{chapter}.html"
    assert page.exists(), chapter
    tags = _tags(page)
    downloads = [
        h for h in tags.hrefs if "_sources/" in h and h.endswith(".ipynb")
    ]
    assert downloads, f"{chapter}: no .ipynb download button"
    notebook = json.loads((page.parent / downloads[0]).resolve().read_text())
    source = json.loads((ROOT / f"{chapter}.ipynb").read_text())
    assert notebook["nbformat"] == 4 and len(notebook["cells"]) == len(
        source["cells"]
    )
    assert gradsal.REPOSITORY_URL in tags.hrefs, (
        f"{chapter}: no repository button"
    )
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    colab = [
        h
        for h in tags.hrefs
        if h.startswith(config["launch_buttons"]["colab_url"])
    ]
    assert colab and all(h.endswith(f"/{chapter}.ipynb") for h in colab), colab


@needs_build
def test_the_intro_shows_its_figure_and_no_launch_button():
    page = HTML / "report" / "intro.html"
    text = page.read_text(encoding="utf-8")
    figure = re.search(
        r'<figure[^>]*id="fig-intro-maps".*?</figure>', text, flags=re.S
    )
    assert figure, "the intro's figure is missing"
    assert re.search(r'<img[^>]+alt="[^"]{40,}"', figure.group()), (
        "the figure needs alt text"
    )
    hrefs = _tags(page).hrefs
    assert not [h for h in hrefs if "colab.research.google.com" in h], (
        "Colab cannot open intro.md"
    )
    assert [h for h in hrefs if h.endswith("_sources/report/intro.ipynb")], (
        "no .ipynb download"
    )
