"""The package's structure: imports point one way, no import circles, no private names across files, and every
module that registers something is one the registry loads.

Layers: cli -> workflows -> trainer -> agents -> envs/rewards/report -> generation -> modules -> models/data -> config.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "memfactory_cli"
RANK = {"__main__": -1, "cli": 0, "workflows": 1, "trainer": 2, "agents": 3, "envs": 4, "rewards": 4, "report": 4, "generation": 5, "modules": 6, "models": 7, "data": 7, "config": 8}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return RANK.get(top, 9)  # errors, registry, io: the bottom


def _modules() -> dict[str, ast.Module]:
    """Dotted name (without ``memfactory_cli.``; a package by its own name) -> parsed source, for every file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


MODULES = _modules()


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, function-level ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("memfactory_cli.") and not node.level:
            found.append((node.module.removeprefix("memfactory_cli."), [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("memfactory_cli."):
                    found.append((alias.name.removeprefix("memfactory_cli."), [], node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (``from pkg import submodule`` counts as importing the submodule)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for here, tree in MODULES.items():
        for target, names, _ in _imports(tree):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for t in subs or [target]:
                if t != here:
                    graph[here].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_point_downwards():
    problems = []
    for here, tree in MODULES.items():
        for target, _, line in _imports(tree):
            if layer(target) < layer(here) and not here.startswith("registry"):
                problems.append(f"{here}:{line} imports {target}")
    assert not problems, problems


def test_no_import_circles_even_through_function_level_imports():
    cycles = _cycles(_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_circle_finder_finds_circles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_from_another_module():
    problems = [
        f"{here}:{line} imports {name} from {target}"
        for here, tree in MODULES.items()
        for target, names, line in _imports(tree)
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != here
    ]
    assert not problems, problems


def _calls_register(tree: ast.Module) -> bool:
    """Whether the file calls ``register("<family>", ...)`` (the registry's decorator, not e.g. transformers')."""
    from memfactory_cli.registry import FAMILIES

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "register" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and first.value in FAMILIES:
                return True
    return False


def test_every_module_that_registers_is_loaded_by_the_registry():
    from memfactory_cli.registry import _BUILTIN_MODULES  # noqa: PLC2701  (the test reads the registry's table)

    registering = {f"memfactory_cli.{name}" for name, tree in MODULES.items() if name != "registry" and _calls_register(tree)}
    assert set(_BUILTIN_MODULES) == registering, {
        "register but are not loaded": sorted(registering - set(_BUILTIN_MODULES)),
        "loaded but register nothing": sorted(set(_BUILTIN_MODULES) - registering),
    }
