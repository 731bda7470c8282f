"""The package's import graph has no cycle, deferred (function-level) imports included: a newcomer can read the
modules leaves first. The graph is built from the source with ast, so a cycle hidden by a deferred import counts."""

import ast
from pathlib import Path

import pytest
from conftest import notebook_code

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
    assert "wow.backends" in graph["wow.steps.context"]


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


# -- layers: which folder may import which ---------------------------------------------------------------------------
#: The folders (and top-level modules) of lib/wow and what each may import, listed once. Read bottom-up it is the
#: paper's pipeline: names and files, engines, tasks, the method's rules, parameters and the run folder, then
#: elicitation, the numbers, preference sets, alignment, figures, the report, the notebooks' steps and the command.
# fmt: off
LAYERS: dict[str, set[str]] = {
    "schema": set(),
    "layout": set(),
    "io": set(),
    "progress": set(),
    "backends": {"io", "progress"},
    "tasks": {"backends", "io"},  # an LLM labeler (FActScore) is an engine
    "protocol": {"schema", "tasks"},
    "pairs": {"protocol"},
    "params": {"backends", "layout", "schema", "tasks"},
    "run_folder": {"io", "layout", "params"},
    "elicit": {"backends", "io", "layout", "pairs", "progress", "protocol", "schema", "tasks"},
    "preferences": {"io", "pairs", "params", "protocol", "schema"},
    "analysis": {"elicit", "io", "pairs", "params", "preferences", "protocol", "schema"},
    "figures": {"analysis", "io", "schema"},
    "align": {"analysis", "backends", "elicit", "io", "layout", "pairs", "preferences", "progress", "protocol",
              "schema", "tasks"},
    "report": {"analysis", "backends", "io", "layout", "params", "run_folder"},
    "steps": {"align", "analysis", "backends", "elicit", "figures", "io", "layout", "params", "preferences",
              "protocol", "report", "schema", "tasks"},
    "cli": {"backends", "io", "layout", "params", "progress", "protocol", "report", "run_folder", "schema", "tasks"},
}
# fmt: on


def _unit(module: str) -> str:
    """The folder (or top-level module) a module belongs to: ``wow.elicit.judges`` -> ``elicit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "wow"


def test_every_folder_and_top_level_module_has_its_layer():
    units = {_unit(m) for m in MODULES} - {"wow", "templates"}
    assert units == set(LAYERS), f"add to LAYERS: {units - set(LAYERS)}; gone: {set(LAYERS) - units}"


def test_the_layers_themselves_have_no_cycle():
    assert _find_cycle(LAYERS) is None


def test_each_folder_imports_only_the_layers_below_it():
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _unit(target) not in (_unit(module), "wow") and _unit(target) not in LAYERS[_unit(module)]
    )
    assert not wrong, "imports across layers that tests/test_imports.py LAYERS does not allow:\n" + "\n".join(wrong)


def test_the_layer_check_sees_a_wrong_import():
    graph = import_graph()
    assert "wow.elicit.judges" in {t for ts in graph.values() for t in ts}
    assert "elicit" not in LAYERS["figures"]  # so an import of wow.elicit from wow.figures would be refused


#: What the numbers may never pull in: a model, a trainer, a figure (importing wow.analysis stays light and pure).
HEAVY = ("torch", "transformers", "trl", "peft", "openai", "matplotlib", "papermill")


def test_analysis_imports_no_engine_trainer_or_plotting_library():
    """Every module of wow.analysis, imported in a fresh interpreter, leaves the heavy libraries unimported; its own
    source does not import them either, even inside a function."""
    import subprocess
    import sys

    analysis = sorted(m for m in MODULES if _unit(m) == "analysis")
    code = (
        "import importlib, sys\n"
        f"for m in {analysis!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing wow.analysis loaded {out.strip()}"
    for module in analysis:
        for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] in HEAVY], (module, names)


# -- one address per name ---------------------------------------------------------------------------------------------
def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the wow module it was imported from (or the wow module itself, for ``from wow.x import y``
    where y is a module)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wow"):
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def test_no_module_level_alias_of_another_modules_name():
    """``X = schema.X`` or ``from wow.y import X`` kept to be used as ``thismodule.X`` gives a name two addresses."""
    aliases = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imported_names(tree)
        for node in tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            value = node.value
            base = value.value if isinstance(value, ast.Attribute) else value
            if isinstance(base, ast.Name) and base.id in imported:
                aliases.append(f"{module}: {node.targets[0].id} = {ast.unparse(value)}")
    assert not aliases, "aliases (use the name where it is defined):\n" + "\n".join(aliases)


def test_re_exports_only_in_a_package_init_and_only_of_its_own_names():
    wrong = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        exported = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        imported = _imported_names(tree)
        re_exported = {n for n in exported if n in imported}
        re_exported |= {
            line.strip() for line in text.splitlines() if "noqa: F401" in line and line.lstrip().startswith("from wow")
        }
        if not re_exported:
            continue
        if path.name != "__init__.py":
            wrong.append(f"{module} re-exports {sorted(re_exported)}")
        else:
            foreign = [n for n in exported & set(imported) if not imported[n].startswith(module + ".")]
            if foreign:
                wrong.append(f"{module} re-exports names of other packages: {foreign}")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    private = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wow"):
                private += [f"{module}: from {node.module} import {a.name}" for a in node.names if a.name[0] == "_"]
    assert not private, "private names used across modules (make them public where they are defined):\n" + "\n".join(
        private
    )


#: Public functions and classes of the same name in several modules, each with its reason (entry points).
SAME_NAME_ALLOWED = {
    "main": "each command's entry point (wow.cli.commands, wow.align.command, wow.cli.llama_server)",
}


def test_no_public_name_is_defined_in_two_modules():
    """Two public functions or classes with one name and two meanings (two ``safe_name`` rules, a ``read_json`` that
    raises beside one that returns ``{}``) make a reader guess which one a call means."""
    where: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(module)
    twice = {n: ms for n, ms in where.items() if len(ms) > 1 and n not in SAME_NAME_ALLOWED}
    assert not twice, "names defined in several modules:\n" + "\n".join(
        f"{n}: {ms}" for n, ms in sorted(twice.items())
    )


# -- notebooks and their steps ---------------------------------------------------------------------------------------
NOTEBOOKS = sorted((LIB.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_has_its_steps_module_and_calls_it(notebook):
    """``NN_name.ipynb`` <-> ``wow/steps/name.py``: a newcomer finds a stage's code from its notebook's name."""
    step = notebook.stem.split("_", 1)[1]
    assert f"wow.steps.{step}" in MODULES, f"{notebook.name} has no wow/steps/{step}.py"
    imports = [
        node
        for node in ast.walk(ast.parse(notebook_code(notebook)))
        if isinstance(node, ast.ImportFrom) and node.module == "wow.steps"
    ]
    assert any(step in [a.name for a in node.names] for node in imports), f"{notebook.name} does not call its steps"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_write_no_artefact_themselves(notebook):
    """Every artefact of a stage is written by its steps module (through wow.io), never inline in the notebook."""
    writers = []
    for node in ast.walk(ast.parse(notebook_code(notebook))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            base = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            if (base == "io" and name.startswith("write")) or name in ("to_csv", "write_text", "to_json", "savefig"):
                writers.append(ast.unparse(node)[:80])
    assert not writers, f"{notebook.name} writes: {writers}"


def test_every_wow_name_the_docs_and_docstrings_give_exists():
    """``wow.x.y`` in the README, docs/, the notebooks and the library's docstrings names a real module or attribute
    (a moved or renamed function leaves no stale address behind)."""
    import importlib
    import re

    root = LIB.parent
    files = [root / "README.md", *(root / "docs").glob("*.md"), *(root / "parameters").rglob("*.md")]
    files += [*(root / "notebooks").glob("*.ipynb"), *ROOT.rglob("*.py"), *(root / "bench").glob("*.py")]
    stale = set()
    for path in files:
        for name in set(re.findall(r"(?<![\w./-])wow\.[A-Za-z_][\w.]*\w", path.read_text(encoding="utf-8"))):
            if "__main__" in name:
                continue
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                try:
                    for attr in parts[i:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    stale.add(f"{path.relative_to(root)}: {name}")
                break
    assert not stale, "names that do not exist:\n" + "\n".join(sorted(stale))


# -- what importing wow sets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, ("PASSIVE", "10000")),  # wow's default: spin briefly, then sleep
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", None)),  # a policy set by the user wins, spin count included
        ({"OMP_WAIT_POLICY": "PASSIVE"}, ("PASSIVE", None)),
        ({"GOMP_SPINCOUNT": "0"}, ("PASSIVE", "0")),  # the suite's setting: no spin (its workers share the cores)
    ],
)
def test_import_wow_sets_the_openmp_wait_policy_before_torch_loads(given, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | given
    code = (
        "import os, sys, wow; "
        "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    policy, spin, torch_loaded = out.split()
    assert (policy, None if spin == "None" else spin) == expected
    assert torch_loaded == "False"  # libgomp reads them when torch loads: importing wow must not load it
