"""The package's import layering, read from the source with `ast` (lazy imports inside functions count:
they are cycles too, only deferred).

`cli.py` is the top: nothing in the package imports it. The stage modules take their shared flags from
`cliargs.py`, `compare_demo.py` builds on `demo.py` (not the other way round), and the chat template
lives in `prompting.py`, which both model backends use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reasontune

ROOT = Path(reasontune.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ("reasontune", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its body."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from . import demo` imports the module reasontune.demo, not a name in reasontune
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def test_the_graph_sees_lazy_and_relative_imports():
    """The reader itself: a lazy `from .x import y` inside a function and `from . import mod` are edges."""
    g = import_graph()
    assert "reasontune.data" in g["reasontune.train"]  # `from .data import build_datasets`, lazy
    assert "reasontune.config" in g["reasontune.data.prepare"]  # absolute import
    assert "reasontune.demo" in g["reasontune.compare_demo"]  # `from . import demo`
    assert "reasontune.data.cli" not in g["reasontune.evaluate"]


def test_nothing_imports_the_cli():
    g = import_graph()
    assert "reasontune.cli" in g  # the module exists under that name
    importers = sorted(m for m, edges in g.items() if "reasontune.cli" in edges)
    assert importers == [], f"{importers} import reasontune.cli; shared flags belong in reasontune.cliargs"


@pytest.mark.parametrize("a,b", [("evaluate", "cli"), ("sft", "cli"), ("advise", "cli"), ("demo", "compare_demo"),
                                 ("models", "unsloth_backend"), ("prompting", "models")])
def test_no_import_cycle(a, b):
    g = import_graph()
    a, b = f"reasontune.{a}", f"reasontune.{b}"
    assert not (reaches(g, a, b) and reaches(g, b, a)), f"{a} and {b} import each other (directly or through others)"
