"""The package's import graph: no cycles, and the layers of docs/architecture.md hold.

Every ``import``/``from ... import`` in ``wcx`` counts, at any depth (inside functions and
``TYPE_CHECKING`` blocks too), and so does a string that names a wcx module exactly (what
``importlib.import_module`` or the backend registry loads later).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "wcx"
MODULE_STRING = re.compile(r"^(wcx(?:\.\w+)+)(?::[\w.]+)?$")
#: packages drawn as one node in the layer check (the rest of wcx are single modules)
SUBPACKAGES = ("core", "data", "export", "calibration", "runtime", "zoo", "serve")
#: what each part may import (docs/architecture.md); everything may import wcx.errors and wcx.version
LAYERS = {
    "wcx.core": {"wcx.errors"},
    "wcx.atomic": {"wcx.json_values"},
    "wcx.cuda_runtime": set(),
    "wcx.json_values": set(),
    "wcx.file_hash": set(),
    "wcx.bundle": {"wcx.core", "wcx.atomic", "wcx.file_hash"},
    "wcx.data": {"wcx.atomic", "wcx.file_hash"},
    "wcx.export": {"wcx.core", "wcx.bundle", "wcx.data", "wcx.atomic", "wcx.json_values", "wcx.cuda_runtime"},
    "wcx.runtime": {"wcx.core", "wcx.bundle", "wcx.data", "wcx.atomic", "wcx.export", "wcx.cuda_runtime"},
    "wcx.calibration": {"wcx.core", "wcx.bundle", "wcx.data", "wcx.atomic", "wcx.json_values", "wcx.runtime"},
    "wcx.serve": {"wcx.core", "wcx.bundle", "wcx.data", "wcx.atomic", "wcx.json_values", "wcx.runtime"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The wcx modules ``path`` imports (resolved to modules, not names inside them)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)}
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name.startswith("wcx"):
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                add(full if full in modules else node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            match = MODULE_STRING.match(node.value)
            if match and match.group(1) in modules:  # e.g. "wcx.json" is a file name, not a module
                add(match.group(1))
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state[nxt] == 0:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state[node] == 0:
            found = visit(node)
            if found:
                return found
    return None


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in SUBPACKAGES:
        return ".".join(parts[:2])
    return module


def test_the_walk_sees_function_level_and_string_imports() -> None:
    g = graph()
    assert "wcx.runtime.cascade" in g["wcx"]  # imported inside __getattr__
    assert "wcx.runtime.onnxruntime_runner" in g["wcx.runtime.backends"]  # named by a string
    assert "wcx.core.scores" in g["wcx.core.manifest"]


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_import_cycle_between_packages() -> None:
    parts: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph().items():
        parts[part_of(module)] |= {part_of(t) for t in targets} - {part_of(module)}
    cycle = find_cycle(parts)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_layers(part: str) -> None:
    allowed = LAYERS[part] | {"wcx.errors", "wcx.version", part}
    used = set()
    for module, targets in graph().items():
        if part_of(module) == part:
            used |= {part_of(t) for t in targets}
    assert used <= allowed, f"{part} imports {sorted(used - allowed)}"
