"""The layers of README.md's architecture, enforced on the source: imports run one way.

Every import statement of every source module is read (including imports inside functions,
which are imports all the same), and checked against the layer order: a package imports only
itself and the packages below it, a process package never imports another process package, and
no two modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top to bottom. A package may import its own modules and those of any lower layer.
LAYERS: list[set[str]] = [
    {"bench"},  # benchmarks drive every process, the engine included
    {"api", "worker", "cli", "stack", "migrations"},  # the processes
    {"webhooks"},  # webhook delivery: dispatcher task, sender, signing, routes
    {"queueing"},  # Celery app, queue names, the publisher, reconciler, heartbeat
    {"storage", "netguard"},  # S3 and key layout; SSRF address checks and pinned connections
    {"core"},  # config, database, tables and their data access, schema, errors, logging
]
PROCESSES = LAYERS[1]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
# Benchmarks drive the service as the tests do: they may borrow the tests' helpers.
ALSO_ALLOWED = {"bench": {"tests"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (a `from package import module` names the module)."""
    package_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            # The deepest project module the dotted name starts with.
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in MODULES or candidate.split(".")[0] in ALSO_ALLOWED.get(
                    name.split(".")[0], ()
                ):
                    if candidate != name:
                        out.add(candidate)
                    break
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_package_is_placed_in_a_layer() -> None:
    top_level = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests"}
    assert top_level <= set(RANK), f"packages missing from LAYERS: {sorted(top_level - set(RANK))}"


def violations(name: str, targets: set[str]) -> list[str]:
    own = name.split(".")[0]
    wrong = []
    for target in sorted(targets):
        other = target.split(".")[0]
        if other == own or other in ALSO_ALLOWED.get(own, ()):
            continue
        if own in PROCESSES and other in PROCESSES:
            wrong.append(f"{target} (another process)")
        elif RANK[other] <= RANK[own]:
            wrong.append(f"{target} (layer {RANK[other]} is not below {own}'s layer {RANK[own]})")
    return wrong


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name: str) -> None:
    wrong = violations(name, GRAPH[name])
    assert not wrong, f"{name} imports upward or sideways: {wrong}"


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in MODULES:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checker_sees_upward_sideways_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "from api.app import create_app\n"
        "def later():\n    import worker.tasks\n"
        "from . import config\n"
        "from .clock import utcnow\n"
    )
    found = _imports("core.probe", module)
    assert {"api.app", "worker.tasks", "core.config", "core.clock"} <= found
    assert len(violations("core.probe", found)) == 2  # api and worker; core's own are fine
    assert violations("api.probe", {"worker.tasks"}) == ["worker.tasks (another process)"]
    assert violations("api.probe", {"core.config", "queueing.publish"}) == []
