"""The layout holds: the producer library loads no web stack, no import circle in app/,
no module in app/ over 450 lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 450


def test_importing_the_producer_loads_no_web_framework_nor_sqlalchemy() -> None:
    probe = (
        "import json, sys; import app.producer; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"fastapi", "starlette", "sqlalchemy", "uvicorn"}, loaded


def import_cycles() -> list[list[str]]:
    """Strongly connected components of app/'s import graph (grimp reads the imports).
    Importing `a.b.c` first runs `a/b/__init__.py` (unless the importer is inside `a.b`,
    whose `__init__` has already run): that is an edge too."""
    graph = grimp.build_graph("app")

    def imported_by(module: str) -> set[str]:
        targets = set(graph.find_modules_directly_imported_by(module))
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for target in list(targets):
            parts = target.split(".")
            targets |= {".".join(parts[:i]) for i in range(2, len(parts))} - own
        targets.discard(module)
        return {t for t in targets if t in graph.modules}

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in imported_by(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_circle_in_app() -> None:
    assert import_cycles() == []


def test_no_module_in_app_is_over_450_lines() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / "app").rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
