"""No import circles in ``vidseg_core`` and ``nodes``.

Every module is parsed with ``ast`` (nothing is imported); each ``import`` / ``from ... import``
statement, at module level or inside a function, is an edge to the module it names (relative imports
resolved; ``from pkg import sub`` points at ``pkg.sub`` when that is a module).  The graph must have
no cycle: two modules that need each other belong together, or their shared part in a module of its own.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vidseg_core", "nodes")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    """Module name -> (file, is a package)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = (path, path.name == "__init__.py")
    return found


def _resolve(name: str, modules: dict):
    """The longest known module that ``name`` starts with (``a.b.func`` -> ``a.b``), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, is_package: bool, modules: dict) -> set:
    """The known modules that ``module`` imports anywhere in its file (not itself)."""
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                base = ".".join(base)
                stem = f"{base}.{node.module}" if node.module else base
                stem = stem.strip(".")
            else:
                stem = node.module or ""
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
            names = [f"{stem}.{alias.name}" for alias in node.names if alias.name != "*"] or [stem]
            if "*" in {alias.name for alias in node.names}:
                names.append(stem)
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                targets.add(target)
    return targets


def import_graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, is_pkg, modules) for name, (path, is_pkg) in modules.items()}


def find_cycle(graph: dict):
    """One cycle as a list of modules (first == last), or None."""
    state = {}  # 1 = on the current path, 2 = done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_reports_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_function_level_imports_are_edges(tmp_path):
    pkg = tmp_path / "vidseg_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import thing\n")
    modules = {"vidseg_core": (pkg / "__init__.py", True), "vidseg_core.sub": (pkg / "sub" / "__init__.py", True),
               "vidseg_core.a": (pkg / "a.py", False), "vidseg_core.sub.b": (pkg / "sub" / "b.py", False)}
    graph = {name: _imports(name, path, is_pkg, modules) for name, (path, is_pkg) in modules.items()}
    assert graph["vidseg_core.a"] == {"vidseg_core.sub.b"}
    assert graph["vidseg_core.sub.b"] == {"vidseg_core.a"}
    assert find_cycle(graph) == ["vidseg_core.a", "vidseg_core.sub.b", "vidseg_core.a"]


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50, "the modules were not found"
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))
