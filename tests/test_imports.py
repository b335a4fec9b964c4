"""The import graph of lbt_dspy/ has no cycle, counting imports inside functions too (a lazy import hides a
cycle from Python, not from the design). Read with ast; nothing is imported.

An import runs more than the module it names: importing ``a.b.c`` first runs the ``__init__`` of the
packages ``a`` and ``a.b``. So an import of ``a.b.c`` is also an edge to ``a.b`` and to ``a`` -- except to a
package the importer is itself inside (Python has already run, or is running, that ``__init__`` before the
importer's body; ``lbt_dspy.m1.run`` importing ``lbt_dspy.m1.select`` adds no edge to ``lbt_dspy.m1``).

The top package ``lbt_dspy`` (the public facade, which imports most of the library) follows from that rule:
every module is inside it, so no submodule gets an edge to it from the packages it passes through. A
submodule that names the facade itself (``import lbt_dspy``, ``from lbt_dspy import X``, ``from .. import X``
for a non-module ``X``) does get the edge, and that is a cycle: nothing inside the library may import the
facade.

A package may load some of its names on first use (a ``_LAZY = {name: submodule}`` map read by its
``__getattr__``, as in ``m1`` and ``m2``): ``from lbt_dspy.m1 import run_m1`` is then an edge to
``lbt_dspy.m1.run``, the module that runs when the name is asked for, not an edge of the package itself.
(An attribute read through the package, ``lbt_dspy.m1.run_m1`` after ``import lbt_dspy.m1``, is not seen.)"""

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lbt_dspy"


def _lazy_names(path: Path) -> dict[str, str]:
    """A package's ``_LAZY`` map (name -> submodule its ``__getattr__`` imports on first use), else {}."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The lbt_dspy modules `name` imports: `import a.b`, `from .x import y` (y a module: that module)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking_only(node)
            for n in ast.walk(node)}  # imports for type checkers only never run
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            lazy = _lazy_names(modules[mod]) if mod in modules and modules[mod].name == "__init__.py" else {}
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules
                       else f"{mod}.{lazy[a.name]}" if a.name in lazy else mod for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found | {p for t in found for p in _packages_run(t, name)}


def _packages_run(target: str, importer: str) -> list[str]:
    """The packages whose ``__init__`` an import of `target` runs, other than those `importer` is inside."""
    parts = target.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
            if importer != p and not importer.startswith(p + ".")]


@functools.cache  # read once per session; callers do not change it
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_lazy_imports():
    graph = _graph()
    assert "lbt_dspy.m2.train_config" in graph["lbt_dspy.m2.cli"]  # imported inside a function
    assert "lbt_dspy.errors" in graph["lbt_dspy.config"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_reader_counts_the_package_init_a_submodule_import_runs():
    graph = _graph()
    assert "lbt_dspy.m2" in graph["lbt_dspy.cli"]  # `from .m2.cli import ...` runs m2/__init__.py first
    assert "lbt_dspy.m1" not in graph["lbt_dspy.m1.run"]  # inside its own package: that __init__ already ran
    assert not any("lbt_dspy" in deps for name, deps in graph.items() if name != "lbt_dspy")  # nobody imports the facade
    assert _packages_run("a.b.c", "x.y") == ["a", "a.b"]
    assert _packages_run("a.b.c", "a.d") == ["a.b"]
    assert _packages_run("a.b.c", "a.b.e") == []
    assert {"lbt_dspy.m1.run", "lbt_dspy.m1"} <= graph["lbt_dspy"]  # `from .m1 import run_m1`: a lazy name


def _closure(graph: dict[str, set[str]], name: str) -> set[str]:
    """Every lbt_dspy module that importing `name` can run (its imports, theirs, ...)."""
    seen, todo = set(), [name]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


# What runs a run (building its parts, the DSPy modules, the commands): the low layers below never import it.
_UPPER = ("lbt_dspy.components", "lbt_dspy.adapter", "lbt_dspy.student", "lbt_dspy.teacher", "lbt_dspy.lbt_score",
          "lbt_dspy.m1.program", "lbt_dspy.m1.run", "lbt_dspy.m1.results", "lbt_dspy.m1.report",
          "lbt_dspy.m1.protocols", "lbt_dspy.m2", "lbt_dspy.m3", "lbt_dspy.exam.run", "lbt_dspy.cli",
          "lbt_dspy.run_kinds")


@pytest.mark.parametrize("low", ["lbt_dspy.config", "lbt_dspy.store", "lbt_dspy.runner", "lbt_dspy.m1.select",
                                 "lbt_dspy.m1.adaptive", "lbt_dspy.models", "lbt_dspy.tasks", "lbt_dspy.data",
                                 "lbt_dspy.scoring", "lbt_dspy.exam"])
def test_no_import_climbs_back_up_the_layers(low):
    graph = _graph()
    up = sorted(m for m in _closure(graph, low) if any(m == u or m.startswith(u + ".") for u in _UPPER))
    assert not up, f"importing {low} runs {up}"


@pytest.mark.parametrize("reader", ["lbt_dspy.m1.results", "lbt_dspy.m1.protocols", "lbt_dspy.m1.report",
                                    "lbt_dspy.m2.pairs"])
def test_reading_a_run_does_not_import_the_run(reader):
    assert "lbt_dspy.m1.run" not in _closure(_graph(), reader)  # tp_key lives in m1.results


def test_the_m1_package_init_runs_only_the_pure_selection_rules():
    # `M1Config` checks exam_budget_cfg with lbt_dspy.m1.adaptive; that import runs lbt_dspy/m1/__init__.py.
    # (and lbt_dspy.renamed, the earlier names: a leaf that imports nothing of lbt_dspy)
    assert _closure(_graph(), "lbt_dspy.m1") == {"lbt_dspy.m1.select", "lbt_dspy.renamed"}
    assert _closure(_graph(), "lbt_dspy.renamed") == set()


def _message(cycles) -> str:
    return "import cycles (modules that import one another): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycle_in_lbt_dspy():
    cycles = _cycles(_graph())
    assert not cycles, _message(cycles)
