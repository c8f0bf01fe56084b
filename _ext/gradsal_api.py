"""Sphinx glue for the book's API reference (report/appendix-api.md).

Driven by the package itself, so the reference stays complete while gradsal
changes:

* ``.. gradsal-module:: gradsal.maps`` documents a module with autodoc: its
  docstring and every name in its ``__all__``, constants included (plain
  ``automodule :members:`` skips a constant that has no ``#:`` comment);
* ``.. gradsal-exports:: gradsal.methods`` lists what a package re-exports (its
  ``__all__``), each name linked to the one place it is documented, and
  documents the names the package defines itself;
* the docstrings are prose, where ``|a|`` is an absolute value and
  ``(K, *shape)`` a shape, not reStructuredText substitutions or emphasis:
  those characters are escaped before autodoc parses a docstring;
* a ``missing-reference`` handler resolves the short names that docstrings use
  (``:func:`gradsal.smoothgrad```, ``:func:`smoothgrad``` inside
  gradsal.widgets) to the object's home module, so those cross-references link;
  a name that exists in gradsal but has no entry of its own (a private class, an
  instance attribute) is shown as code without a link. Any other unresolved
  reference still fails the nitpicky build;
* pages written as MyST text notebooks (the intro) keep their download button
  but lose the launch buttons: Colab opens only .ipynb files.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from types import ModuleType

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode

PACKAGE = "gradsal"


@functools.lru_cache(maxsize=None)
def leaf_modules(package: str = PACKAGE) -> tuple[ModuleType, ...]:
    """Every module of the package that is not itself a package."""
    root = importlib.import_module(package)
    found = []
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not info.ispkg:
            found.append(importlib.import_module(info.name))
    return tuple(found)


def home_of(obj: object, name: str) -> str | None:
    """The documented full name of an object that a package re-exports, or None.

    Functions and classes know their module; constants are found as the same
    object in the ``__all__`` of a module that is not a package.
    """
    if inspect.ismodule(obj):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if (
        (inspect.isclass(obj) or inspect.isroutine(obj))
        and module
        and qualname
    ):
        if module == PACKAGE or module.startswith(PACKAGE + "."):
            return f"{module}.{qualname}"
    for leaf in leaf_modules():
        if (
            name in getattr(leaf, "__all__", ())
            and getattr(leaf, name, None) is obj
        ):
            return f"{leaf.__name__}.{name}"
    return None


def summary(obj: object) -> str:
    """The first line of an object's docstring (constants have none)."""
    if not (
        inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)
    ):
        return ""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class GradsalExports(SphinxDirective):
    """``.. gradsal-exports:: gradsal.methods``: a table of a package's ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        names = list(getattr(module, "__all__", ()))
        if not names:
            raise self.error(f"{modname} has no __all__ to list")
        rows, own = [], []
        for name in names:
            obj = getattr(module, name)
            home = home_of(obj, name)
            if home is None:  # defined by the package itself: document it here
                own.append(name)
                continue
            role = "mod" if inspect.ismodule(obj) else "obj"
            where = home if inspect.ismodule(obj) else home.rsplit(".", 1)[0]
            if inspect.isclass(obj) or inspect.isroutine(obj):
                where = obj.__module__
            what = escape_prose(summary(obj)) or (
                "a module" if inspect.ismodule(obj) else "a constant"
            )
            rows += [
                f"   * - :py:{role}:`{name} <{home}>`",
                f"     - :py:mod:`{where}`",
                f"     - {what}",
            ]
        lines = []
        if rows:
            lines += [
                ".. list-table::",
                "   :header-rows: 1",
                "   :widths: 25 25 50",
                "   :class: gradsal-exports",
                "",
                f"   * - ``{modname}.``",
                "     - defined in",
                "     - what it is",
                *rows,
                "",
            ]
        for name in own:
            obj = getattr(module, name)
            kind = (
                "autofunction"
                if inspect.isroutine(obj)
                else "autoclass"
                if inspect.isclass(obj)
                else "autodata"
            )
            lines += [f".. {kind}:: {modname}.{name}", ""]
        container = nodes.container()
        self.state.nested_parse(
            StringList(lines, source=f"<gradsal-exports {modname}>"),
            0,
            container,
        )
        return container.children


class GradsalModule(SphinxDirective):
    """``.. gradsal-module:: gradsal.maps``: a module's docstring and its whole ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        names = list(getattr(module, "__all__", ()))
        try:
            attr_docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # pragma: no cover - a module without source
            attr_docs = {}
        lines = [
            f".. automodule:: {modname}",
            "   :members:",
            "   :undoc-members:",
            "   :show-inheritance:",
            "",
        ]
        for name in names:
            obj = getattr(module, name)
            if (
                inspect.isclass(obj)
                or inspect.isroutine(obj)
                or inspect.ismodule(obj)
            ):
                continue
            if (
                ("", name) not in attr_docs
            ):  # a constant with no #: comment: automodule skips it
                lines += [f".. autodata:: {modname}.{name}", ""]
        container = nodes.container()
        self.state.nested_parse(
            StringList(lines, source=f"<gradsal-module {modname}>"),
            0,
            container,
        )
        return container.children


# reStructuredText that prose docstrings use on purpose: ``literals``, :roles:`...`,
# `interpreted text` and `links`_. Everything else is prose.
_MARKUP = re.compile(r"``.+?``|:[\w:.+-]+:`[^`]*`|`[^`]+`_{0,2}", re.S)
# an emphasis start (*x) with no end (x*) later in the paragraph, as in (K, *x.shape)
_LONE_STAR = re.compile(
    r"(?:^|(?<=[\s'\"(\[{<\-/:]))\*(?=[^\s*])(?![^*]*\S\*(?:[\s.,;:!?)'\"-]|$))"
)


def escape_prose(text: str) -> str:
    """Escape ``|`` and unmatched ``*`` outside reStructuredText markup in a paragraph."""
    out, pos = [], 0
    for match in _MARKUP.finditer(text):
        out.append(_escape_plain(text[pos : match.start()]))
        out.append(match.group())
        pos = match.end()
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    text = re.sub(r"(?<!\\)\|", r"\\|", text)
    return _LONE_STAR.sub(r"\\*", text)


def escape_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """Escape gradsal's docstrings paragraph by paragraph (line numbers are kept)."""
    if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
        return
    if what in ("data", "attribute") and lines and obj is not None:
        # a constant without a comment of its own would show its type's docstring
        own_type = (inspect.getdoc(type(obj)) or "").splitlines()
        if _text(lines) == _text(own_type):
            lines[:] = []
            return
    out, paragraph = [], []
    for line in lines + [""]:
        if line.strip():
            paragraph.append(line)
            continue
        if paragraph:
            out += escape_prose("\n".join(paragraph)).split("\n")
            paragraph = []
        out.append(line)
    lines[:] = out[:-1]


def _text(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]


def _instance_attribute(classname: str, attr: str) -> bool:
    """Whether a gradsal class assigns ``self.<attr>`` in its source."""
    obj, _ = _lookup(classname)
    if not inspect.isclass(obj):
        return False
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return False
    return (
        re.search(rf"self\.{re.escape(attr)}\s*(:[^=]*)?[+]?=(?!=)", source)
        is not None
    )


def resolve_short_names(app: Sphinx, env, node, contnode):
    """Link ``gradsal.X`` and bare ``X`` in docstrings to X's documented home."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    if not target:
        return None
    domain = env.get_domain("py")
    context = node.get("py:module") or ""
    candidates = [target]
    if context:
        parts = context.split(".")
        # the current module and each package above it, innermost first
        candidates = [
            ".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)
        ] + [target]
    classname = node.get("py:class")
    if classname and context:
        candidates.insert(0, f"{context}.{classname}.{target}")
    for candidate in candidates:
        if not (candidate == PACKAGE or candidate.startswith(PACKAGE + ".")):
            continue
        obj, name = _lookup(candidate)
        if obj is None:
            continue
        home = home_of(obj, name)
        if home and home in domain.objects:
            entry = domain.objects[home]
            return make_refnode(
                app.builder,
                node["refdoc"],
                entry.docname,
                entry.node_id,
                contnode,
                home,
            )
        if home and home in domain.modules:
            entry = domain.modules[home]
            return make_refnode(
                app.builder,
                node["refdoc"],
                entry.docname,
                entry.node_id,
                contnode,
                home,
            )
        return contnode  # exists in gradsal, but has no entry of its own (private)
    if node.get("reftype") in ("attr", "obj") and classname and context:
        if _instance_attribute(f"{context}.{classname}", target):
            return contnode  # an instance attribute, described in its class's docstring
    return None


def _lookup(dotted: str) -> tuple[object | None, str]:
    """Import the longest module prefix of a dotted name and get the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None, parts[-1]
        return obj, parts[-1]
    return None, parts[-1]


def drop_launch_buttons_of_text_notebooks(
    app: Sphinx, pagename, templatename, context, doctree
) -> None:
    """Colab opens .ipynb files only: no launch buttons on a page built from a .md notebook."""
    try:
        suffix = str(app.env.doc2path(pagename)).rsplit(".", 1)[-1]
    except Exception:  # a page with no source, such as the index
        return
    if suffix != "ipynb" and "header_buttons" in context:
        context["header_buttons"] = [
            b
            for b in context["header_buttons"]
            if b.get("label") != "launch-buttons"
        ]


def setup(app: Sphinx) -> dict:
    app.add_directive("gradsal-exports", GradsalExports)
    app.add_directive("gradsal-module", GradsalModule)
    app.connect("autodoc-process-docstring", escape_docstring)
    # after sphinx-book-theme adds the buttons (priority 501)
    app.connect(
        "html-page-context",
        drop_launch_buttons_of_text_notebooks,
        priority=600,
    )
    app.connect("missing-reference", resolve_short_names, priority=400)
    return {
        "version": "1.0",
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }
