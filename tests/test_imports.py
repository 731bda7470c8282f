"""The package's import graph has no cycle, deferred (function-level) imports included: a newcomer can read the
modules leaves first. The graph is built from the source with ast, so a cycle hidden by a deferred import counts."""

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
ROOT = LIB / "wow"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The wow module a dotted name lies in (``wow.backends.get_engine`` -> ``wow.backends``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the wow modules it imports anywhere in its source (the bare package ``wow``, which only defines
    ``WowError``, is left out: every module imports it)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for name in names:
                target = _resolve(name) if name.startswith("wow") else None
                if target and target not in ("wow", module):
                    edges.add(target)
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "wow.tasks" in graph["wow.params"]  # imported inside a validator
    assert "wow.backends" in graph["wow.context"]


def test_the_package_has_no_import_cycle():
    cycle = _find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("leaf", ["wow.schema", "wow.layout"])
def test_names_and_paths_are_leaves(leaf):
    assert import_graph()[leaf] == set()


#: The most lines a module under lib/wow may have: one job per module, small enough to read in one go.
MAX_LINES = 400
#: Modules allowed over MAX_LINES, each with its reason.
OVER_THE_LIMIT: dict[str, str] = {}


def test_no_module_is_over_the_line_limit():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in MODULES.items()}
    too_long = {m: n for m, n in sizes.items() if n > MAX_LINES and m not in OVER_THE_LIMIT}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by job): {too_long}"
