"""The package's layers, read from the source with `ast` (lazy imports inside functions count: they are
cycles too, only deferred).

The rule, written once here (the README's Layout section draws it): every module belongs to a layer by its
folder, and imports only modules of its own layer or of the layers below it; no two modules import each
other, directly or through others. Bottom to top:

    config                        the dataclasses, the YAML loader, the shared flags
    data, rewards, models         foundations: what a run learns from, how it is scored, what it trains
    engines                       decode, KV cache, log-probs, the TRL trainers, vLLM
    runs                          the run folder, its callbacks, the watcher, validation, statistics
    export                        folders and files that load outside reasontune (portable, merged, GGUF)
    stages                        one module per thing a user runs
    cli                           the top: nothing imports it
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reasontune

ROOT = Path(reasontune.__file__).resolve().parent

# bottom to top; a module's layer is its first folder under reasontune/ (or its own name at the top level)
LAYERS = (("_moved", "reasontune"), ("config",), ("data", "rewards", "models"), ("engines",), ("runs",),
          ("export",), ("stages",), ("cli",))
MAX_TOP_LEVEL_MODULES = 20
MAX_LINES = 450


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = ("reasontune", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the package modules it imports anywhere in its body, module -> package names it imports that
    are no module: an old flat path, say, that the graph would otherwise miss)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph, unknown = {}, {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges, missing = set(), set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from reasontune.stages import demo` imports the module reasontune.stages.demo, not a name
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            ours = [t for t in targets if t == "reasontune" or t.startswith("reasontune.")]
            edges.update(t for t in ours if t in files and t != name)
            missing.update(t for t in ours if t not in files)
        graph[name] = edges
        if missing:
            unknown[name] = missing
    return graph, unknown


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"{module} is in no layer: put it in a layer folder, or add its folder to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
                  for m, edges in graph.items() for t in edges if layer_of(t) > layer_of(m))


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself, on a small package written here: a lazy import inside a function, a relative import
    and `from pkg import module` are edges, and an import of a name that is no module is reported."""
    pkg = tmp_path / "reasontune"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "stages" / "a.py").write_text("def f():\n    from . import b\n    from ..config import X\n")
    (pkg / "stages" / "b.py").write_text("import reasontune.generation\n")
    (pkg / "config.py").write_text("from reasontune.stages import a\n")
    g, unknown = import_graph(pkg)
    assert g["reasontune.stages.a"] == {"reasontune.stages.b", "reasontune.config"}
    assert g["reasontune.config"] == {"reasontune.stages.a"}
    assert unknown == {"reasontune.stages.b": {"reasontune.generation"}}
    assert cycles(g) == [["reasontune.config", "reasontune.stages.a"]]
    assert upward_imports(g) == ["reasontune.config (config) imports reasontune.stages.a (stages)"]


def test_every_import_of_the_package_names_a_module():
    """An import of an old flat path (reasontune.generation) works through reasontune._moved, but the graph
    below would not see it: inside the package every import names the module's real home."""
    _, unknown = import_graph()
    assert unknown == {}, f"imports of names that are no module (use the new path): {unknown}"


def test_no_import_cycles():
    found = cycles(import_graph()[0])
    assert found == [], "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_each_layer_imports_only_the_layers_below_it():
    bad = upward_imports(import_graph()[0])
    assert bad == [], "imports against the layers (tests/test_layout.py LAYERS):\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    g, _ = import_graph()
    assert "reasontune.cli" in g  # the module exists under that name
    importers = sorted(m for m, edges in g.items() if "reasontune.cli" in edges)
    assert importers == [], f"{importers} import reasontune.cli; shared flags belong in reasontune.config.args"


def test_top_level_modules_and_file_sizes():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top level: {top}"
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"files over {MAX_LINES} lines: {long} (split by responsibility)"


@pytest.mark.parametrize("old,new", [("reasontune.generation", "reasontune.engines.generation"),
                                     ("reasontune.runfolder", "reasontune.runs.folder"),
                                     ("reasontune.prompting", "reasontune.models.prompting"),
                                     ("reasontune.cliargs", "reasontune.config.args")])
def test_old_flat_paths_still_import_as_the_same_module(old, new):
    import importlib
    import sys
    import warnings

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
