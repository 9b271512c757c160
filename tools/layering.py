"""Layering facts of gateway/: who imports gateway.api, who writes request metrics, import cycles."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"
ENTRY_POINTS = frozenset({"gateway", "gateway.__main__", "gateway.app", "gateway.cli", "gateway.server"})
REQUEST_METRICS = (
    "requests", "request_duration", "overhead", "prompt_tokens", "completion_tokens", "cost", "savings",
    "semantic_savings", "routing_decisions", "classifier_score", "time_to_first_token", "fallbacks", "upstream_errors", "local_rejected",
)
_WRITES = re.compile(  # a write, or a `Children` (metric_children.py) that hands out the series to write
    r"\.(?:{0})\.(?:labels|inc|observe)\(|\bChildren\([\w.]*\b(?:{0})\)".format("|".join(REQUEST_METRICS))
)
_ACCOUNTS = re.compile(r"\b(?:account|account_error|count_invalid|_account_hit)\(")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, known: set[str], *, runtime_only: bool = False) -> set[str]:
    """The gateway modules `path` imports (anywhere in the file; `runtime_only`: not under TYPE_CHECKING, not lazily
    inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                if not runtime_only:
                    visit(child, top)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not runtime_only:
                    visit(child, False)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            for name in names:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name.startswith("gateway"):
                    found.add(name)
            visit(child, top)

    visit(tree, True)
    return found


def api_importers() -> list[str]:
    """Modules outside gateway/api (and the entry points) that import gateway.api."""
    mods = modules()
    known = set(mods)
    return sorted(
        name
        for name, path in mods.items()
        if not (name == "gateway.api" or name.startswith("gateway.api.")) and name not in ENTRY_POINTS
        and any(i == "gateway.api" or i.startswith("gateway.api.") for i in imports_of(path, known))
    )


def request_metric_writers() -> list[str]:
    """Files that write a request metric (counts, latencies, tokens, cost, savings, routing decisions)."""
    return sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if _WRITES.search(p.read_text("utf-8")))


def request_accountants() -> list[str]:
    """Files that account for a finished request: write a request metric, or call an accounting function."""
    return sorted(
        str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
        if _WRITES.search(p.read_text("utf-8")) or _ACCOUNTS.search(p.read_text("utf-8"))
    )


def import_cycles() -> list[list[str]]:
    """Cycles among the runtime (module-level) imports of gateway/ (a package counts as importing its parent)."""
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(path, known, runtime_only=True) - {name} for name, path in mods.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)
    return cycles


if __name__ == "__main__":
    importers = api_importers()
    print(f"modules outside gateway/api importing it: {len(importers)}", *importers, sep="\n  ")
    writers = request_metric_writers()
    print(f"files writing request metrics: {len(writers)}", *writers, sep="\n  ")
    accountants = request_accountants()
    print(f"files accounting for a request: {len(accountants)}", *accountants, sep="\n  ")
    cycles = import_cycles()
    print(f"import cycles in gateway/: {len(cycles)}", *(" -> ".join(c) for c in cycles), sep="\n  ")
    sys.exit(0)
