"""The package's shape: imports flow one way through the subpackages, no circles, no private names across
modules, small modules with a docstring."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "evoprune"
# The data flow, upstream first: a module may import from its own layer or from layers before it.
LAYERS = ["genome", "objectives", "errors", "atomic", "lazy", "cpu_load", "metrics",  # the base
          "config", "data", "parent", "pruning", "fitness", "evolve", "run", "deploy", "export", "cli",
          "__main__"]
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported evoprune module, names taken from it, line) for every import, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "evoprune":
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "evoprune"]
    return out


def lazy_exports(path: Path) -> dict[str, str]:
    """A package's lazily exported names and the submodule each comes from (its `lazy_exports` call)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports":
            return {name: module for module, names in ast.literal_eval(node.args[1]).items() for name in names}
    return {}


LAZY = {mod: lazy_exports(path) for mod, path in MODULES.items() if path.name == "__init__.py"}


def target_module(module: str, name: str) -> str:
    """The module `from module import name` really takes `name` from: a submodule when `module.name` is one,
    the submodule a package's `lazy_exports` call names, else `module`."""
    if f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    if name in LAZY.get(module, {}):
        return f"{module}.{LAZY[module][name]}"
    return module


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1  # `evoprune` itself: above everything


def test_imports_flow_one_way_through_the_layers():
    wrong = []
    for mod, path in MODULES.items():
        for imported, names, line in imports(path):
            for target in {target_module(imported, n) for n in names} or {imported}:
                if mod != "evoprune" and layer(target) > layer(mod):
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} (downstream)")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for imported, names, _ in imports(path):
            for target in {target_module(imported, n) for n in names} or {imported}:
                if target in graph and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)  # a package's own __init__ is not a circle with its modules
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


@pytest.mark.parametrize("folder", ["evoprune", "tests", "experiments"])
def test_no_private_names_across_modules(folder):
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = set()  # local names bound to evoprune modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evoprune"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}")
                    if target_module(node.module, a.name) in MODULES:
                        modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("evoprune")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in modules:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_modules_are_small_and_say_what_they_are_for():
    problems = []
    for mod, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES:
            problems.append(f"{mod}: {len(text.splitlines())} lines")
        if text.strip() and not ast.get_docstring(ast.parse(text)):
            problems.append(f"{mod}: no docstring")
    assert not problems, problems


def test_public_names_stay_where_users_import_them():
    import evoprune
    import evoprune.deploy
    import evoprune.export
    from evoprune.deploy.export import load_exported

    for name in evoprune.__all__:  # from evoprune import ...
        assert getattr(evoprune, name) is not None
    assert evoprune.export.load_exported is load_exported  # the path before the subpackage layout
    assert callable(evoprune.deploy.deployment_metrics)
    for package, exports in LAZY.items():  # every lazily re-exported name resolves
        module = __import__(package, fromlist=["_"])
        for name in exports:
            assert getattr(module, name) is not None, f"{package}.{name}"
