"""The API appendix (report/appendix-api.md) covers every module of gradsal, without a build.

The page names modules, not functions: ``gradsal-module`` (from _ext/gradsal_api.py)
documents a module's whole ``__all__``, ``gradsal-exports`` lists what a package
re-exports. So a new function needs nothing here, and a new module fails this test
until the page names it. tests/test_html.py checks the built page name by name.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import yaml

import gradsal

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "report" / "appendix-api.md"
MODULES = ["gradsal"] + [
    info.name for info in pkgutil.walk_packages(gradsal.__path__, "gradsal.")
]


def _directives(name: str) -> list[str]:
    return re.findall(
        rf"^\.\. {name}:: (\S+)\s*$", PAGE.read_text(), flags=re.M
    )


def test_the_api_page_is_in_the_appendix():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    appendix = next(
        part for part in toc["parts"] if part["caption"] == "Appendix"
    )
    assert {"file": "report/appendix-api"} in appendix["chapters"]


@pytest.mark.parametrize("modname", MODULES)
def test_every_module_is_on_the_api_page_once(modname):
    module = importlib.import_module(modname)
    assert list(getattr(module, "__all__", [])), (
        f"{modname} has no __all__ for the API page to list"
    )
    documented = _directives("gradsal-module")
    if hasattr(
        module, "__path__"
    ):  # a package: its docstring and a table of its re-exports
        assert _directives("automodule").count(modname) == 1, modname
        assert _directives("gradsal-exports").count(modname) == 1, modname
        assert modname not in documented
    else:
        assert documented.count(modname) == 1, (
            f"add `.. gradsal-module:: {modname}` to {PAGE.name}"
        )


def test_the_api_page_names_no_module_that_does_not_exist():
    named = (
        _directives("gradsal-module")
        + _directives("automodule")
        + _directives("gradsal-exports")
    )
    assert set(named) <= set(MODULES), set(named) - set(MODULES)


def test_docstring_prose_is_escaped_for_restructuredtext():
    from gradsal_api import escape_prose  # _ext/ is on pytest's pythonpath

    # |a| is an absolute value and *shape a shape, not a substitution or emphasis
    assert (
        escape_prose("mean |g_k| over (K, *x.shape).")
        == r"mean \|g_k\| over (K, \*x.shape)."
    )
    # real markup is kept
    for text in (
        "``mean|g|`` and :func:`a|b`",
        "one of *states*; then",
        "* a bullet",
        "``x * y``",
    ):
        assert escape_prose(text) == text
    assert escape_prose("*two\nlines* and *one") == "*two\nlines* and \\*one"
