"""The package's architecture rules, read from its source (see the README's layout table).

* :mod:`gradsal.core` imports nothing else of gradsal: every method builds on it;
* no module imports another module's underscore names;
* no import cycles between gradsal's modules (imports inside functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gradsal"
MODULES = sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute gradsal module, imported names) for every import of gradsal in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(
                    base + ([node.module] if node.module else [])
                )
            else:
                target = node.module or ""
            if target == "gradsal" or target.startswith("gradsal."):
                found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [])
                for a in node.names
                if a.name.startswith("gradsal")
            ]
    return found


def _resolve(target: str, names: list[str]) -> set[str]:
    """The gradsal modules an import loads: the module, or submodules named in a from-import."""
    known = {_module_name(p) for p in MODULES}
    mods = {n for n in (f"{target}.{name}" for name in names) if n in known}
    return mods or {target}


GRAPH = {
    _module_name(p): {
        m for t, names in _imports(p) for m in _resolve(t, names)
    }
    - {_module_name(p)}
    for p in MODULES
}


def test_core_imports_nothing_else_of_gradsal():
    assert GRAPH["gradsal.core"] == set()


@pytest.mark.parametrize(
    "path", MODULES, ids=[_module_name(p) for p in MODULES]
)
def test_no_module_imports_private_names(path):
    private = [
        (t, n)
        for t, names in _imports(path)
        for n in names
        if n.startswith("_")
    ]
    assert not private, f"{path.name} imports private names {private}"


def test_no_import_cycles():
    # A package's __init__ re-exports its submodules; an edge into a package is an
    # edge into its __init__, which is allowed to import below itself only.
    def deps(mod: str) -> set[str]:
        return {
            d
            for d in GRAPH.get(mod, set())
            if not (mod.startswith(d + ".") and d != mod)
        }

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for dep in deps(mod):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[mod] = 2

    for mod in GRAPH:
        if mod not in state:
            visit(mod)
